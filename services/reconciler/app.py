"""Reconciler: wiring only. One pass every LMGPA_RECONCILE_INTERVAL_SECONDS (the first at start-up), under a
PostgreSQL advisory lock, so any number of replicas never double-drive."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from datetime import UTC, datetime

import asyncpg

from services.reconciler.adapters import BrokerLink, pass_lock
from services.reconciler.handlers import SERVICE, PassReport, reconcile
from shared.broker import make_broker
from shared.db.pool import create_pool
from shared.logging import configure_logging, get_logger
from shared.metrics import process_metrics
from shared.settings import Settings, get_settings

log = get_logger(SERVICE)


async def one_pass(
    settings: Settings,
    pool: asyncpg.Pool,
    link: BrokerLink,
    *,
    source_id: uuid.UUID | None = None,
    force: bool = False,
) -> PassReport:
    """Run one pass (skipped when another reconciler holds the lock) and log every re-drive and give-up."""
    async with pass_lock(pool) as db:
        if db is None:
            return PassReport(skipped=True)
        report = await reconcile(
            db=db,
            broker=link,
            now=datetime.now(UTC),
            stall_seconds=settings.stall_seconds,
            max_redrives=settings.max_redrives,
            source_id=source_id,
            force=force,
        )
    why = "operator" if force else "broker_lost" if report.broker_lost else "stalled"
    metrics = process_metrics()
    if report.redriven:
        metrics.redrives.labels(reason=why).inc(len(report.redriven))
    if report.given_up:
        metrics.stalled.inc(len(report.given_up))
    if report.broker_lost:
        log.info("broker_log_lost", pending_inputs=len(report.redriven))
    for item in report.redriven:
        log.info(
            "source_redriven",
            source_id=str(item.event.source_id),
            stage=item.stage or item.event.consumer,
            topic=item.event.topic,
            event_id=str(item.event.event_id),
            redrives=item.redrives + 1,
            reason=why,
        )
    for item in report.given_up:
        log.warning(
            "source_stalled", source_id=str(item.event.source_id), stage=item.stage, redrives=item.redrives
        )
    return report


async def run(settings: Settings) -> None:
    """Pass after pass until SIGTERM or SIGINT."""
    configure_logging(service=SERVICE, fmt=settings.log_format, level=settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.http_port is not None:
        # No broker subscription to be ready for: a plain exporter thread, every path answering the metrics.
        from prometheus_client import start_http_server

        start_http_server(settings.http_port, addr=settings.http_host)
    pool = await create_pool(settings.database_dsn(), max_size=2)
    broker = make_broker(settings, service=SERVICE)
    async with broker:
        link = BrokerLink(
            broker, bootstrap=settings.kafka_bootstrap_servers, partitions=settings.topic_partitions
        )
        log.info("worker_started", interval=settings.reconcile_interval_seconds, stall=settings.stall_seconds)
        while not stop.is_set():
            try:
                await one_pass(settings, pool, link)
            except Exception as error:  # a server down: log it, try again next pass
                log.warning("reconcile_pass_failed", error_type=type(error).__name__, error=str(error)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.reconcile_interval_seconds)
    await pool.close()
    log.info("worker_stopped")


def main() -> None:
    """Entry point of `lmgpa reconciler`."""
    asyncio.run(run(get_settings()))
