"""The stage tracker port's PostgreSQL side: how workers report waiting, working and done (and, for /metrics, the
stages finished and their units)."""

from __future__ import annotations

import uuid

import asyncpg

from shared.db import jobs
from shared.metrics import PipelineMetrics, process_metrics


class PostgresTracker:
    """Writes ingest_stages / ingest_jobs through shared.db.jobs; counts each finished stage in the metrics."""

    def __init__(self, pool: asyncpg.Pool, metrics: PipelineMetrics | None = None) -> None:
        self.pool = pool
        self.metrics = metrics or process_metrics()

    async def started(
        self, source_id: uuid.UUID, stage: str, *, units_total: int | None = None, unit: str | None = None
    ) -> None:
        """A stage began (or resumed after a redelivery)."""
        await jobs.start_stage(
            self.pool, source_id=source_id, stage=stage, units_total=units_total, unit=unit
        )

    async def progressed(
        self, source_id: uuid.UUID, stage: str, *, units_done: int, units_total: int | None = None
    ) -> None:
        """Heartbeat with progress."""
        await jobs.progress_stage(
            self.pool, source_id=source_id, stage=stage, units_done=units_done, units_total=units_total
        )

    async def finished(
        self,
        source_id: uuid.UUID,
        stage: str,
        *,
        units_done: int | None = None,
        next_stage: str | None = None,
    ) -> None:
        """A stage completed; the next one is now waiting. Counted once the transaction committed."""
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.finish_stage(conn, source_id=source_id, stage=stage, units_done=units_done)
            if next_stage:
                await jobs.enqueue_stage(conn, source_id=source_id, stage=next_stage)
        self.metrics.finished(stage, units_done)
