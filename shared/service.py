"""The runtime every worker's app.py builds: settings, logging, broker, pool and runner, created once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from faststream import FastStream
from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY

from shared.broker import expire_instead_of_leaving, make_broker
from shared.db.pool import create_pool
from shared.logging import configure_logging, get_logger
from shared.metrics import CONTENT_TYPE, PipelineMetrics, exposition, process_metrics
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
    metrics: PipelineMetrics = field(init=False)
    loaded: bool = field(default=False, init=False)
    """True between the end of the lifespan's loading (model, pool, runner) and shutdown."""

    def __post_init__(self) -> None:
        configure_logging(service=self.service, fmt=self.settings.log_format, level=self.settings.log_level)
        if not self.settings.kafka_leave_group_on_shutdown:
            expire_instead_of_leaving()
        self.broker = make_broker(self.settings, service=self.service)
        configure_tracing(self.settings, service=self.service)
        self.metrics = process_metrics()
        # Message-level metrics (received, processed by status, failed, in progress, duration), added here
        # rather than in make_broker: only worker processes export them (the CLI publishes, never scrapes).
        self.broker.add_middleware(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=self.service))

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
            metrics=self.metrics,
        )
        self.loaded = True
        log.info("worker_started", kafka=self.settings.kafka_bootstrap_servers)
        try:
            yield
        finally:
            self.loaded = False
            self.metrics.ready.labels(service=self.service).set(0)
            await self.pool.close()
            shutdown_tracing()  # the last spans are exported before the process ends
            log.info("worker_stopped")

    def ready(self) -> bool:
        """Loaded, and every subscription's consumer has joined its group (it has a generation)."""
        joined = bool(self.broker.subscribers) and all(
            _joined(subscriber) for subscriber in self.broker.subscribers
        )
        is_ready = self.loaded and joined
        self.metrics.ready.labels(service=self.service).set(1 if is_ready else 0)
        return is_ready

    def app(self, lifespan: Lifespan) -> FastStream | AsgiFastStream:
        """The FastStream application; with an HTTP port, an ASGI app that also serves /health (the broker
        answers), /ready (loaded and joined: 204, else 503) and /metrics (Prometheus text format)."""
        if self.settings.http_port is None:
            return FastStream(self.broker, lifespan=lifespan)

        @get(include_in_schema=False)
        async def ready(scope: Any) -> AsgiResponse:
            return AsgiResponse(b"", 204) if self.ready() else AsgiResponse(b"not ready\n", 503)

        @get(include_in_schema=False)
        async def metrics(scope: Any) -> AsgiResponse:
            self.ready()  # refresh lmgpa_worker_ready for this scrape
            return AsgiResponse(exposition(), 200, {"Content-Type": CONTENT_TYPE})

        return AsgiFastStream(
            self.broker,
            lifespan=lifespan,
            asgi_routes=[
                ("/health", make_ping_asgi(self.broker, timeout=5.0)),
                ("/ready", ready),
                ("/metrics", metrics),
            ],
        )


def _joined(subscriber: Any) -> bool:
    """Whether a subscriber's Kafka consumer is a member of its group now (aiokafka's coordinator has a
    generation; it has none before the first join completes and after a failed heartbeat resets it)."""
    consumer = getattr(subscriber, "consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", -1)
    return isinstance(generation, int) and generation >= 0
