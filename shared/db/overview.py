"""Read-only SQL of the operator's live view (`lmgpa top`): stages, rates, in-flight work, failures.

"Stalled" is the reconciler's notion (shared.db.outbox): a processing source whose last sign of life (the job's
update, any stage's enqueue, start, heartbeat or end) is older than ``stall_seconds``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.db.pool import Executor


@dataclass(frozen=True)
class StageLoad:
    """One stage across all processing sources, and what it did in the window."""

    stage: str
    waiting: int
    working: int
    stalled: int
    done: int
    """Sources whose stage completed within the window."""
    failed: int
    """Sources that failed in this stage within the window."""
    events: int
    """Events its worker applied within the window (processed_events)."""


@dataclass(frozen=True)
class UnitsDone:
    """Units (pages, seconds of audio, chunks, ...) a stage finished within the window."""

    stage: str
    unit: str
    units: int


@dataclass(frozen=True)
class InFlight:
    """A source being processed, where it is, and whether it shows life."""

    source_id: uuid.UUID
    kind: str
    title: str | None
    stage: str
    units_done: int
    units_total: int | None
    unit: str | None
    last_progress_at: datetime
    idle_seconds: float
    stalled: bool
    redrives: int


@dataclass(frozen=True)
class FailureCount:
    """Failed sources or refused messages by where and why, within the window."""

    origin: str
    """'source' (a failed job) or 'message' (a refused message, dead-lettered)."""
    stage: str
    error_code: str
    count: int


_STAGES = """
WITH live AS (
  SELECT j.source_id,
         extract(epoch FROM now() - GREATEST(j.updated_at, (
           SELECT max(GREATEST(s.enqueued_at, s.started_at, s.heartbeat_at, s.finished_at))
             FROM ingest_stages s WHERE s.source_id = j.source_id))) > $1 AS stalled
    FROM ingest_jobs j WHERE j.status = 'processing'
), current AS (
  SELECT s.stage, s.status, l.stalled FROM ingest_stages s JOIN live l USING (source_id)
   WHERE s.status IN ('pending', 'processing')
), loads AS (
  SELECT stage,
         count(*) FILTER (WHERE status = 'pending') AS waiting,
         count(*) FILTER (WHERE status = 'processing' AND NOT stalled) AS working,
         count(*) FILTER (WHERE stalled) AS stalled
    FROM current GROUP BY stage
), ended AS (
  SELECT stage, count(*) FILTER (WHERE status = 'completed') AS done, count(*) FILTER (WHERE status = 'failed') AS failed
    FROM ingest_stages WHERE finished_at > now() - make_interval(secs => $2) GROUP BY stage
), applied AS (
  SELECT consumer AS stage, count(*) AS events FROM processed_events
   WHERE processed_at > now() - make_interval(secs => $2) GROUP BY consumer
)
SELECT stage, COALESCE(l.waiting, 0) AS waiting, COALESCE(l.working, 0) AS working, COALESCE(l.stalled, 0) AS stalled,
       COALESCE(e.done, 0) AS done, COALESCE(e.failed, 0) AS failed, COALESCE(a.events, 0) AS events
  FROM loads l FULL JOIN ended e USING (stage) FULL JOIN applied a USING (stage)
"""


async def stage_loads(conn: Executor, *, stall_seconds: float, window_seconds: float) -> list[StageLoad]:
    """Per stage: sources waiting, working and stalled now; done, failed and events applied in the window."""
    rows = await conn.fetch(_STAGES, stall_seconds, window_seconds)
    return [
        StageLoad(
            stage=r["stage"],
            waiting=r["waiting"],
            working=r["working"],
            stalled=r["stalled"],
            done=r["done"],
            failed=r["failed"],
            events=r["events"],
        )
        for r in rows
    ]


_UNITS = """
-- Pieces (a book's page ranges, a recording's spans) and indexed batches are timestamped as they finish, so a
-- long source counts while it runs; a stage without such a ledger counts its units when it completes.
SELECT p.stage, COALESCE(s.unit, 'units') AS unit, sum(p.units)::bigint AS units
  FROM ingest_pieces p LEFT JOIN ingest_stages s ON s.source_id = p.source_id AND s.stage = p.stage
 WHERE p.finished_at > now() - make_interval(secs => $1)
 GROUP BY 1, 2
UNION ALL
SELECT 'indexing', 'chunks', sum(chunk_count)::bigint FROM ingest_batches
 WHERE indexed_at > now() - make_interval(secs => $1) HAVING count(*) > 0
UNION ALL
SELECT s.stage, COALESCE(s.unit, 'sources'), sum(CASE WHEN s.unit IS NULL THEN 1 ELSE s.units_done END)::bigint
  FROM ingest_stages s
 WHERE s.status = 'completed' AND s.finished_at > now() - make_interval(secs => $1)
   AND s.stage <> 'indexing'
   AND NOT EXISTS (SELECT 1 FROM ingest_pieces p WHERE p.source_id = s.source_id AND p.stage = s.stage)
 GROUP BY 1, 2
"""


async def units_done(conn: Executor, *, window_seconds: float) -> list[UnitsDone]:
    """Units each stage finished in the window, by unit (divide by the window for a rate)."""
    rows = await conn.fetch(_UNITS, window_seconds)
    return [UnitsDone(stage=r["stage"], unit=r["unit"], units=int(r["units"] or 0)) for r in rows]


_IN_FLIGHT = """
WITH live AS (
  SELECT j.source_id, j.kind, j.title, j.stage, j.redrives,
         GREATEST(j.updated_at, (SELECT max(GREATEST(s.enqueued_at, s.started_at, s.heartbeat_at, s.finished_at))
                                   FROM ingest_stages s WHERE s.source_id = j.source_id)) AS last_progress_at
    FROM ingest_jobs j WHERE j.status = 'processing'
)
SELECT l.*, s.units_done, s.units_total, s.unit,
       extract(epoch FROM now() - l.last_progress_at)::float8 AS idle_seconds
  FROM live l LEFT JOIN ingest_stages s ON s.source_id = l.source_id AND s.stage = l.stage
 ORDER BY idle_seconds DESC
 LIMIT $1
"""


async def in_flight(conn: Executor, *, stall_seconds: float, limit: int = 20) -> list[InFlight]:
    """Processing sources, the longest silent first (stalled ones lead)."""
    rows = await conn.fetch(_IN_FLIGHT, limit)
    return [
        InFlight(
            source_id=r["source_id"],
            kind=r["kind"],
            title=r["title"],
            stage=r["stage"],
            units_done=r["units_done"] or 0,
            units_total=r["units_total"],
            unit=r["unit"],
            last_progress_at=r["last_progress_at"],
            idle_seconds=float(r["idle_seconds"]),
            stalled=float(r["idle_seconds"]) > stall_seconds,
            redrives=r["redrives"],
        )
        for r in rows
    ]


_COUNTS = """
SELECT count(*) AS in_flight,
       count(*) FILTER (WHERE extract(epoch FROM now() - GREATEST(j.updated_at, (
         SELECT max(GREATEST(s.enqueued_at, s.started_at, s.heartbeat_at, s.finished_at))
           FROM ingest_stages s WHERE s.source_id = j.source_id))) > $1) AS stalled
  FROM ingest_jobs j WHERE j.status = 'processing'
"""


async def count_in_flight(conn: Executor, *, stall_seconds: float) -> tuple[int, int]:
    """Sources being processed now, and how many of them are stalled."""
    row = await conn.fetchrow(_COUNTS, stall_seconds)
    assert row is not None
    return int(row["in_flight"]), int(row["stalled"])


_FAILURES = """
SELECT 'source' AS origin, stage, COALESCE(error_code, 'unknown') AS error_code, count(*) AS n
  FROM ingest_jobs WHERE status = 'failed' AND finished_at > now() - make_interval(secs => $1)
 GROUP BY 1, 2, 3
UNION ALL
SELECT 'message', consumer, error_code, count(*)
  FROM rejected_messages WHERE received_at > now() - make_interval(secs => $1)
 GROUP BY 1, 2, 3
ORDER BY n DESC, error_code
"""


async def failures(conn: Executor, *, window_seconds: float) -> list[FailureCount]:
    """Failed sources (by the stage and code they failed with) and refused messages, within the window."""
    rows = await conn.fetch(_FAILURES, window_seconds)
    return [
        FailureCount(origin=r["origin"], stage=r["stage"], error_code=r["error_code"], count=r["n"])
        for r in rows
    ]
