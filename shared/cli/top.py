"""`lmgpa top`: a live terminal view of the pipeline, read from PostgreSQL, each worker's /metrics and the
dead-letter topic. Plain rich output (no alternate screen), so it works over SSH and in a log (`--once`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import httpx
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from shared.db import overview
from shared.db.pool import create_pool
from shared.events.topics import DEAD_LETTER, SERVICES
from shared.settings import Settings

METRICS_TIMEOUT = 1.0
"""Seconds a worker's /metrics may take before it shows as unavailable (the view must keep refreshing)."""
KAFKA_TIMEOUT = 3.0


@dataclass(frozen=True)
class WorkerEndpoint:
    """A worker replica and where its metrics are, if it serves them."""

    name: str
    url: str | None


@dataclass
class WorkerMetrics:
    """What one worker's /metrics says (sums over label sets), or why it could not be read."""

    name: str
    received: float = 0.0
    processed: float = 0.0
    in_progress: float = 0.0
    exceptions: float = 0.0
    dead_letters: float | None = None
    unavailable: str | None = None


@dataclass
class Frame:
    """Everything one refresh of the view shows."""

    taken_at: datetime
    window_seconds: float
    failures_window_seconds: float
    stages: list[overview.StageLoad] = field(default_factory=list)
    units: list[overview.UnitsDone] = field(default_factory=list)
    in_flight_total: int = 0
    stalled_total: int = 0
    in_flight: list[overview.InFlight] = field(default_factory=list)
    failures: list[overview.FailureCount] = field(default_factory=list)
    dead_letters: int | None = None
    """Messages in the dead-letter topic; None when the broker did not answer."""
    workers: list[WorkerMetrics] = field(default_factory=list)
    database_error: str | None = None


def parse_metrics(name: str, text: str) -> WorkerMetrics:
    """Sum the message counters of a Prometheus text exposition (FastStream's, any prefix; ours for dead letters)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = WorkerMetrics(name=name)
    dead = 0.0
    seen_dead = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            n, value = sample.name, float(sample.value)
            if n.endswith("_received_processed_messages_exceptions_total"):
                out.exceptions += value
            elif n.endswith("_received_processed_messages_total"):
                out.processed += value
            elif n.endswith("_received_messages_total"):
                out.received += value
            elif n.endswith("_received_messages_in_process"):
                out.in_progress += value
            elif "dead_letter" in n and n.endswith("_total"):
                dead += value
                seen_dead = True
    out.dead_letters = dead if seen_dead else None
    return out


async def fetch_metrics(client: httpx.AsyncClient, worker: WorkerEndpoint) -> WorkerMetrics:
    """One worker's metrics; any failure (no port, refused, timeout, garbage) is shown, never raised."""
    if worker.url is None:
        return WorkerMetrics(name=worker.name, unavailable="no metrics port")
    try:
        response = await client.get(worker.url, timeout=METRICS_TIMEOUT)
        response.raise_for_status()
        return parse_metrics(worker.name, response.text)
    except (httpx.HTTPError, ValueError) as error:
        return WorkerMetrics(name=worker.name, unavailable=type(error).__name__)


async def dead_letter_count(bootstrap: str) -> int | None:
    """Messages held in the dead-letter topic (end minus start offsets), None if the broker does not answer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=int(KAFKA_TIMEOUT * 1000))
    try:
        await asyncio.wait_for(consumer.start(), KAFKA_TIMEOUT)
        partitions = consumer.partitions_for_topic(DEAD_LETTER) or set()
        tps = [TopicPartition(DEAD_LETTER, p) for p in partitions]
        if not tps:
            return 0
        ends = await asyncio.wait_for(consumer.end_offsets(tps), KAFKA_TIMEOUT)
        starts = await asyncio.wait_for(consumer.beginning_offsets(tps), KAFKA_TIMEOUT)
        return int(sum(ends[tp] - starts[tp] for tp in tps))
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def collect(
    pool: asyncpg.Pool,
    settings: Settings,
    workers: Sequence[WorkerEndpoint],
    *,
    window_seconds: float = 60.0,
    failures_window_seconds: float = 3600.0,
    limit: int = 15,
    kafka: bool = True,
) -> Frame:
    """Read one frame: the database, every worker's /metrics and the dead-letter topic, at once."""
    frame = Frame(
        taken_at=datetime.now(UTC),
        window_seconds=window_seconds,
        failures_window_seconds=failures_window_seconds,
    )

    async def database() -> None:
        try:
            async with pool.acquire() as conn:
                frame.stages = await overview.stage_loads(
                    conn, stall_seconds=settings.stall_seconds, window_seconds=window_seconds
                )
                frame.units = await overview.units_done(conn, window_seconds=window_seconds)
                frame.in_flight_total, frame.stalled_total = await overview.count_in_flight(
                    conn, stall_seconds=settings.stall_seconds
                )
                frame.in_flight = await overview.in_flight(
                    conn, stall_seconds=settings.stall_seconds, limit=limit
                )
                frame.failures = await overview.failures(conn, window_seconds=failures_window_seconds)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            frame.database_error = f"{type(error).__name__}: {error}"[:200]

    async def metrics() -> None:
        async with httpx.AsyncClient() as client:
            frame.workers = list(await asyncio.gather(*(fetch_metrics(client, w) for w in workers)))

    async def letters() -> None:
        frame.dead_letters = await dead_letter_count(settings.kafka_bootstrap_servers) if kafka else None

    await asyncio.gather(database(), metrics(), letters())
    return frame


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(frame: Frame, *, interval: float | None = None) -> RenderableType:
    """The frame as rich tables: stages, in flight, failures, workers."""
    window = _duration(frame.window_seconds)
    stalled = frame.stalled_total
    head = Text.assemble(
        ("lmgpa top", "bold"),
        f"  {frame.taken_at:%Y-%m-%d %H:%M:%S} UTC  rates over the last {window}",
        f", refresh {interval:g}s" if interval else "",
        "\n",
        (f"{frame.in_flight_total} in flight", "bold"),
        ", ",
        (f"{stalled} stalled", "bold red" if stalled else ""),
        ", dead letters: ",
        ("unavailable" if frame.dead_letters is None else str(frame.dead_letters), "bold"),
    )
    parts: list[RenderableType] = [head]
    if frame.database_error:
        parts.append(Text(f"database: unavailable ({frame.database_error})", style="bold red"))

    stages = Table(title="Stages", title_justify="left", expand=False)
    for column in (
        "STAGE",
        "WAITING",
        "WORKING",
        "STALLED",
        f"DONE {window}",
        f"FAILED {window}",
        "EVENTS/S",
    ):
        stages.add_column(column, justify="left" if column == "STAGE" else "right")
    stages.add_column("UNITS/S")
    loads = {s.stage: s for s in frame.stages}
    for name in (*SERVICES, *sorted(set(loads) - set(SERVICES))):
        load = loads.get(name) or overview.StageLoad(name, 0, 0, 0, 0, 0, 0)
        rates = [
            f"{u.units / frame.window_seconds:.2f} {u.unit}/s"
            for u in sorted(frame.units, key=lambda u: u.unit)
            if u.stage == name and u.units
        ]
        stages.add_row(
            name,
            str(load.waiting),
            str(load.working),
            Text(str(load.stalled), style="bold red" if load.stalled else ""),
            str(load.done),
            Text(str(load.failed), style="red" if load.failed else ""),
            f"{load.events / frame.window_seconds:.2f}",
            ", ".join(rates) or "-",
        )
    parts.append(stages)

    flight = Table(title=f"In flight ({frame.in_flight_total})", title_justify="left")
    for column in ("SOURCE", "KIND", "STAGE", "PROGRESS", "SILENT", "STATE", "TITLE"):
        flight.add_column(column)
    for s in frame.in_flight:
        total = "?" if s.units_total is None else str(s.units_total)
        progress = f"{s.units_done}/{total} {s.unit}" if s.unit else ""
        state = Text("STALLED", style="bold red") if s.stalled else Text("working")
        if s.redrives:
            state.append(f" (re-driven {s.redrives}x)")
        flight.add_row(
            str(s.source_id)[:8],
            s.kind,
            s.stage,
            progress,
            _duration(s.idle_seconds),
            state,
            (s.title or "")[:40],
        )
    parts.append(flight)

    failed = Table(title=f"Failures, last {_duration(frame.failures_window_seconds)}", title_justify="left")
    for column in ("WHAT", "STAGE", "ERROR CODE", "COUNT"):
        failed.add_column(column, justify="right" if column == "COUNT" else "left")
    for f in frame.failures:
        what = "failed sources" if f.origin == "source" else "refused messages"
        failed.add_row(what, f.stage, f.error_code, str(f.count))
    parts.append(failed)

    workers = Table(title="Workers (/metrics)", title_justify="left")
    for column in ("WORKER", "RECEIVED", "PROCESSED", "IN PROGRESS", "ERRORS", "DEAD LETTERS"):
        workers.add_column(column, justify="left" if column == "WORKER" else "right")
    for w in frame.workers:
        if w.unavailable is not None:
            workers.add_row(
                w.name, Text(f"metrics: unavailable ({w.unavailable})", style="dim"), "", "", "", ""
            )
        else:
            workers.add_row(
                w.name,
                _count(w.received),
                _count(w.processed),
                _count(w.in_progress),
                _count(w.exceptions),
                _count(w.dead_letters),
            )
    if not frame.workers:
        workers.add_row("(no embedded stack: no workers known)", "", "", "", "", "")
    parts.append(workers)
    return Group(*parts)


async def run(
    settings: Settings,
    workers: Sequence[WorkerEndpoint],
    *,
    console: Console,
    interval: float = 2.0,
    once: bool = False,
    window_seconds: float = 60.0,
    failures_window_seconds: float = 3600.0,
    limit: int = 15,
) -> None:
    """Print one frame (``once``) or refresh a live view every ``interval`` seconds until interrupted."""
    from rich.live import Live

    pool = await create_pool(settings.database_dsn(), max_size=2)
    try:

        async def frame() -> RenderableType:
            got = await collect(
                pool,
                settings,
                workers,
                window_seconds=window_seconds,
                failures_window_seconds=failures_window_seconds,
                limit=limit,
            )
            return render(got, interval=None if once else interval)

        if once:
            console.print(await frame())
            return
        with Live(await frame(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(await frame(), refresh=True)
    finally:
        await pool.close()
