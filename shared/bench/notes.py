"""Upload-to-indexed latency of a typed note, through the real pipeline: `python -m shared.bench.notes`
(make bench-notes).

It starts an embedded stack of its own (every worker, in a temporary folder) and publishes note uploads one at a
time, as the backend would: each is published only after the previous one is searchable (status `completed`:
its chunks in Qdrant and Chroma). A note's latency runs from just before its SourceUploaded is published to the
moment its ingest_jobs row reads `completed`, polled every millisecond on a connection of its own. The notes are
paragraphs of the project's generated textbook (tests.media), 40 to 200 words, so each is one or two chunks.

Printed: the p50, p90, p99 and max latency over the measured notes (after a few warm-up notes that are not
counted), and per stage (from ingest_stages) the p50 of its own time and of the gap before it started, which
shows where a note's time goes. Writes JSON (default var/bench/notes.json). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg

from shared.bench import own_stack, write_json
from shared.db import jobs
from shared.devstack import stack

DEFAULT_JSON = Path("var/bench/notes.json")


def note_texts(count: int) -> list[str]:
    """`count` distinct notes of 40 to 200 words, cut from the generated textbook's paragraphs."""
    from tests.media.pdfs import page_blocks, reference_text

    words = " ".join(reference_text(page_blocks(page)) for page in range(1, 60)).split()
    notes: list[str] = []
    start = 0
    while len(notes) < count:
        length = 40 + (len(notes) * 37) % 161
        if start + length > len(words):
            start = 0
        notes.append(f"Note {len(notes)}: " + " ".join(words[start : start + length]))
        start += length
    return notes


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 to 100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def run_notes(state: stack.StackState, count: int, warmup: int) -> tuple[list[float], list[uuid.UUID]]:
    """Publish `warmup + count` notes one at a time; each latency in seconds (warm-up ones left out)."""
    from shared.broker import make_broker, publish
    from shared.db import owners
    from shared.events.models import SourceUploaded

    cfg = state.settings()
    pool = await asyncpg.create_pool(cfg.database_dsn(), min_size=1, max_size=1)
    user, klass = uuid.uuid4(), uuid.uuid4()
    await owners.ensure_user(pool, user_id=user)
    await owners.ensure_class(pool, class_id=klass, user_id=user)
    conn = await pool.acquire()
    latencies: list[float] = []
    measured: list[uuid.UUID] = []
    broker = make_broker(cfg, service="bench")
    async with broker:
        for n, text in enumerate(note_texts(warmup + count)):
            event_id = uuid.uuid4()
            event = SourceUploaded(
                event_id=event_id,
                correlation_id=event_id,
                producer="bench",
                kind="note",
                user_id=user,
                class_id=klass,
                title=f"note {n}",
                text=text,
            )
            started = time.perf_counter()
            await publish(broker, event)
            deadline = started + 60
            while (row := await jobs.job_status(conn, source_id=event.source_id)) not in (
                "completed",
                "failed",
            ):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"note {n} not indexed after 60 s (status {row})")
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - started
            if row != "completed":
                raise SystemExit(f"note {n} failed")
            if n >= warmup:
                latencies.append(elapsed)
                measured.append(event.source_id)
    await pool.release(conn)
    await pool.close()
    return latencies, measured


async def stage_figures(state: stack.StackState, ids: list[uuid.UUID]) -> dict[str, dict[str, float]]:
    """Per stage: p50 of its own duration and of the gap between the previous stage's end and its start."""
    conn = await asyncpg.connect(state.settings().database_dsn())
    found = await jobs.list_jobs(conn, source_ids=ids, limit=len(ids))
    await conn.close()
    own: dict[str, list[float]] = defaultdict(list)
    gap: dict[str, list[float]] = defaultdict(list)
    for job in found:
        timed = sorted(
            ((s.started_at, s.finished_at, s.stage) for s in job.stages if s.started_at and s.finished_at),
        )
        before = None
        for started_at, finished_at, stage in timed:
            own[stage].append((finished_at - started_at).total_seconds())
            if before is not None:
                gap[stage].append((started_at - before).total_seconds())
            before = finished_at
    return {
        stage: {
            "own_p50_ms": round(statistics.median(own[stage]) * 1000, 1),
            "gap_before_p50_ms": round(statistics.median(gap[stage]) * 1000, 1) if gap[stage] else 0.0,
        }
        for stage in own
    }


def main() -> None:
    """Run the notes through a stack of its own; print and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=200, help="notes measured")
    parser.add_argument("--warmup", type=int, default=10, help="notes sent first and not counted")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-notes-") as tmp:
        home = Path(tmp) / "stack"
        with own_stack(home, search_api=False) as state:
            latencies, ids = asyncio.run(run_notes(state, args.notes, args.warmup))
            stages = asyncio.run(stage_figures(state, ids))
    result: dict[str, Any] = {
        "notes": len(latencies),
        "p50_seconds": round(percentile(latencies, 50), 4),
        "p90_seconds": round(percentile(latencies, 90), 4),
        "p99_seconds": round(percentile(latencies, 99), 4),
        "max_seconds": round(max(latencies), 4),
        "mean_seconds": round(statistics.fmean(latencies), 4),
        "stages": stages,
    }
    print(f"{len(latencies)} notes published one at a time, upload to indexed (status completed):")
    print(
        f"  p50 {result['p50_seconds'] * 1000:.0f} ms   p90 {result['p90_seconds'] * 1000:.0f} ms   "
        f"p99 {result['p99_seconds'] * 1000:.0f} ms   max {result['max_seconds'] * 1000:.0f} ms"
    )
    print(f"{'stage':<14} {'own p50 ms':>10} {'gap before p50 ms':>18}")
    for stage, figures in stages.items():
        print(f"{stage:<14} {figures['own_p50_ms']:>10.1f} {figures['gap_before_p50_ms']:>18.1f}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
