"""The reconciler's own faults, against the real PostgreSQL and broker: a pass killed with kill -9, two
reconcilers at once, and a stage that keeps stalling (it ends failed/stalled after the bound)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.reconciler.adapters import BrokerLink
from services.reconciler.app import one_pass
from shared.broker import make_broker
from shared.db import jobs, outbox
from shared.db.migrate import apply_migrations
from shared.db.pool import create_pool
from shared.devstack.servers import ServerProcess
from shared.events.models import PhotoUploaded, SourceRef
from shared.settings import Settings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def photo(n: int, *, source_id: uuid.UUID | None = None) -> PhotoUploaded:
    """A photo's stage input (consumed by the OCR worker, which these tests do not run)."""
    event_id = uuid.uuid4()
    return PhotoUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="upload",
        source=SourceRef(
            source_id=source_id or uuid.uuid4(),
            kind="photo",
            user_id=uuid.uuid4(),
            class_id=uuid.uuid4(),
            title=f"photo {n}",
            created_at=datetime.now(UTC),
        ),
        storage_url=f"file:///nowhere/{n}.jpg",
    )


async def pending_outbox(dsn: str, count: int) -> list[uuid.UUID]:
    """`count` stage inputs kept in the outbox, as the upload worker keeps them before publishing."""
    await apply_migrations(dsn)
    events = [photo(n) for n in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        entries = [outbox.entry_for(e) for e in events]
        await outbox.record(conn, [e for e in entries if e is not None])
    finally:
        await conn.close()
    return [e.event_id for e in events]


async def redrive_counts(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r["redrives"] for r in await conn.fetch("SELECT redrives FROM event_outbox ORDER BY event_id")
        ]
    finally:
        await conn.close()


def settings_for(dsn: str, broker: ServerProcess, **extra: object) -> Settings:
    return Settings(database_url=dsn, kafka_bootstrap_servers=broker.url, **extra)  # type: ignore[arg-type]


async def a_pass(cfg: Settings, **options: object) -> object:
    pool = await create_pool(cfg.database_dsn(), max_size=2)
    broker = make_broker(cfg, service="reconciler-test")
    try:
        async with broker:
            link = BrokerLink(broker, bootstrap=cfg.kafka_bootstrap_servers, partitions=cfg.topic_partitions)
            return await one_pass(cfg, pool, link, **options)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def test_two_reconcilers_at_once_never_double_drive(
    fresh_database: str, kafka_broker: ServerProcess
) -> None:
    ids = await pending_outbox(fresh_database, 300)
    cfg = settings_for(fresh_database, kafka_broker)
    first, second = await asyncio.gather(a_pass(cfg), a_pass(cfg))
    reports = sorted((first, second), key=lambda r: r.skipped)  # type: ignore[attr-defined]
    assert [r.skipped for r in reports] == [False, True]  # type: ignore[attr-defined]
    assert len(reports[0].redriven) == len(ids)  # type: ignore[attr-defined]
    assert await redrive_counts(fresh_database) == [1] * len(ids), "each input re-driven exactly once"


async def test_a_reconciler_killed_mid_pass_leaves_nothing_half_done(
    fresh_database: str, kafka_broker: ServerProcess
) -> None:
    ids = await pending_outbox(fresh_database, 8_000)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LMGPA_")},
        "LMGPA_DATABASE_URL": fresh_database,
        "LMGPA_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.url,
        "LMGPA_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "reconciler"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        conn = await asyncpg.connect(fresh_database)
        try:
            # The pass holds its lock while it publishes 8,000 inputs again: kill it in the middle.
            while not await conn.fetchval(LOCKS):
                assert time.monotonic() < deadline and process.poll() is None, "the pass never began"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert process.poll() is None, "the pass ended before it could be killed"
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            assert await redrive_counts(fresh_database) == [0] * len(ids), "a killed pass commits nothing"
            while await conn.fetchval(LOCKS):
                assert time.monotonic() < deadline, "the killed pass's lock was never released"
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    report = await a_pass(settings_for(fresh_database, kafka_broker))
    assert not report.skipped and len(report.redriven) == len(ids)  # type: ignore[attr-defined]
    assert await redrive_counts(fresh_database) == [1] * len(ids)


async def test_a_stage_that_keeps_stalling_ends_failed_stalled(
    fresh_database: str, kafka_broker: ServerProcess
) -> None:
    await apply_migrations(fresh_database)
    event = photo(0)
    ref = event.source
    conn = await asyncpg.connect(fresh_database)
    try:
        await jobs.open_job(
            conn,
            source_id=ref.source_id,
            kind="photo",
            user_id=ref.user_id,
            class_id=ref.class_id,
            title=ref.title,
            correlation_id=event.correlation_id,
            upload_event_id=event.event_id,
        )
        await jobs.enqueue_stage(conn, source_id=ref.source_id, stage="ocr")
        entry = outbox.entry_for(event)
        assert entry is not None
        await outbox.record(conn, [entry])
    finally:
        await conn.close()
    cfg = settings_for(fresh_database, kafka_broker, stall_seconds=0.3, max_redrives=2)
    seen = []
    for _ in range(6):
        report = await a_pass(cfg)
        seen.append((len(report.redriven), len(report.given_up)))  # type: ignore[attr-defined]
        await asyncio.sleep(0.4)
    conn = await asyncpg.connect(fresh_database)
    try:
        job = await jobs.get_job(conn, source_id=ref.source_id)
        left = await conn.fetchval("SELECT count(*) FROM event_outbox")
    finally:
        await conn.close()
    # First pass: no epoch marked yet for this database, so the broker counts as having lost its log.
    assert seen[:3] == [(1, 0), (1, 0), (0, 1)] and seen[3:] == [(0, 0)] * 3, seen
    assert job is not None and job.status == "failed" and job.error_code == "stalled"
    assert "ocr" in (job.error_message or "") and job.redrives == 2
    assert left == 0, "a failed source's inputs leave the outbox"
