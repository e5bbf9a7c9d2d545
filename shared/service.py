"""The runtime every worker's app.py builds: settings, logging, broker, pool and runner, created once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from faststream import FastStream
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker

from shared.broker import expire_instead_of_leaving, make_broker
from shared.db.pool import create_pool
from shared.logging import configure_logging, get_logger
from shared.settings import Settings, get_settings
from shared.tracing import configure_tracing
from shared.tracing import shutdown as shutdown_tracing
from shared.worker import Worker

Lifespan = Callable[[], AbstractAsyncContextManager[None]]


@dataclass
class Runtime:
    """One worker process's long-lived resources; the pool and runner exist between start and stop."""

    service: str
    settings: Settings = field(default_factory=get_settings)
    broker: KafkaBroker = field(init=False)
    pool: asyncpg.Pool = field(init=False)
    worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        configure_logging(service=self.service, fmt=self.settings.log_format, level=self.settings.log_level)
        if not self.settings.kafka_leave_group_on_shutdown:
            expire_instead_of_leaving()
        self.broker = make_broker(self.settings, service=self.service)
        configure_tracing(self.settings, service=self.service)

    @asynccontextmanager
    async def started(self) -> AsyncIterator[None]:
        """Open the database pool and the runner for the life of the process."""
        log = get_logger("runtime")
        self.pool = await create_pool(self.settings.database_dsn())
        self.worker = Worker(
            service=self.service,
            broker=self.broker,
            pool=self.pool,
            max_deliveries=self.settings.max_deliveries,
            retry_delays=tuple(
                self.settings.retry_base_delay * 2**n for n in range(self.settings.retry_attempts)
            ),
        )
        log.info("worker_started", kafka=self.settings.kafka_bootstrap_servers)
        try:
            yield
        finally:
            await self.pool.close()
            shutdown_tracing()  # the last spans are exported before the process ends
            log.info("worker_stopped")

    def app(self, lifespan: Lifespan) -> FastStream | AsgiFastStream:
        """The FastStream application; with an HTTP port, an ASGI app that also serves /health."""
        if self.settings.http_port is None:
            return FastStream(self.broker, lifespan=lifespan)
        return AsgiFastStream(
            self.broker,
            lifespan=lifespan,
            asgi_routes=[("/health", make_ping_asgi(self.broker, timeout=5.0))],
        )
