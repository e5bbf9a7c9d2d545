"""The reconciler's pass at scale: `python -m shared.bench.reconciler` (make bench-reconciler).

A PostgreSQL and a broker of its own (the embedded ones, in a temporary folder), migrated; 100,000 finished
sources (jobs with their stages) and 1,000 unfinished ones, each with a stage input kept in the outbox. Then:
- a pass when nothing has stalled (the unfinished ones showed progress a moment ago): what every pass costs;
- a pass when all 1,000 have stalled: each input published again and counted;
- the plan PostgreSQL uses for the pending query (EXPLAIN ANALYZE), to show it reads indexes, not the 100,000.
Prints the times, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from shared.db import outbox
from shared.db.migrate import apply_migrations
from shared.devstack import servers
from shared.events.models import PhotoUploaded, SourceRef
from shared.settings import Settings


async def seed(dsn: str, finished: int, unfinished: int) -> None:
    """Finished jobs with stages, and unfinished ones each with an outbox row."""
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        user, klass = uuid.uuid4(), uuid.uuid4()
        done = [(uuid.uuid4(),) for _ in range(finished)]
        await conn.executemany(
            "INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, status, stage, finished_at) "
            "VALUES ($1, 'note', $2, $3, 'completed', 'indexing', now())",
            [(source_id, user, klass) for (source_id,) in done],
        )
        await conn.executemany(
            "INSERT INTO ingest_stages (source_id, stage, status) VALUES ($1, 'indexing', 'completed')", done
        )
        entries = []
        for n in range(unfinished):
            ref = SourceRef(
                source_id=uuid.uuid4(),
                kind="photo",
                user_id=user,
                class_id=klass,
                title=f"p{n}",
                created_at=datetime.now(UTC),
            )
            event_id = uuid.uuid4()
            event = PhotoUploaded(
                event_id=event_id,
                correlation_id=event_id,
                producer="upload",
                source=ref,
                storage_url=f"file:///x/{n}.jpg",
            )
            await conn.execute(
                "INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, status, stage) "
                "VALUES ($1, 'photo', $2, $3, 'processing', 'ocr')",
                ref.source_id,
                user,
                klass,
            )
            entry = outbox.entry_for(event)
            assert entry is not None
            entries.append(entry)
        await outbox.record(conn, entries)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def timed_pass(cfg: Settings) -> tuple[float, int]:
    from services.reconciler.adapters import BrokerLink
    from services.reconciler.app import one_pass
    from shared.broker import make_broker
    from shared.db.pool import create_pool

    pool = await create_pool(cfg.database_dsn(), max_size=2)
    broker = make_broker(cfg, service="bench")
    async with broker:
        link = BrokerLink(broker, bootstrap=cfg.kafka_bootstrap_servers, partitions=cfg.topic_partitions)
        started = time.perf_counter()
        report = await one_pass(cfg, pool, link)
        elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed, len(report.redriven)


async def age(dsn: str, seconds: float) -> None:
    """Make every unfinished job look idle for `seconds`."""
    conn = await asyncpg.connect(dsn)
    try:
        past = datetime.now(UTC) - timedelta(seconds=seconds)
        await conn.execute("UPDATE ingest_jobs SET updated_at = $1 WHERE status = 'processing'", past)
        await conn.execute("UPDATE event_outbox SET created_at = $1, last_redrive_at = NULL", past)
    finally:
        await conn.close()


async def explain(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + outbox._PENDING, None, 10_000)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


def main() -> None:
    """Seed, run the passes, print."""
    from shared.logging import configure_logging

    configure_logging(service="bench", fmt="console", level="WARNING")  # not a line per re-driven input
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--unfinished", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-reconciler-") as tmp:
        home = Path(tmp)
        postgres = servers.start_postgres(home)
        broker = servers.start_broker(home)
        try:
            dsn = servers.create_database(postgres, "bench")
            started = time.perf_counter()
            asyncio.run(seed(dsn, args.finished, args.unfinished))
            print(
                f"seeded {args.finished} finished and {args.unfinished} unfinished sources in {time.perf_counter() - started:.1f} s"
            )
            cfg = Settings(
                database_url=dsn, kafka_bootstrap_servers=broker.url, stall_seconds=300, log_level="WARNING"
            )
            first, redriven = asyncio.run(timed_pass(cfg))
            print(
                f"first pass (no broker epoch yet: everything pending re-driven): {first * 1000:.0f} ms, {redriven} re-driven"
            )
            quiet, redriven = asyncio.run(timed_pass(cfg))
            print(f"pass with nothing stalled: {quiet * 1000:.0f} ms, {redriven} re-driven")
            asyncio.run(age(dsn, 600))
            stalled, redriven = asyncio.run(timed_pass(cfg))
            print(f"pass with all {args.unfinished} stalled: {stalled * 1000:.0f} ms, {redriven} re-driven")
            print("plan of the pending query:")
            print(asyncio.run(explain(dsn)))
        finally:
            servers.stop_process(broker)
            servers.remove_postgres(postgres)


if __name__ == "__main__":
    main()
