"""SQL of the pipeline's job tables: ingest_jobs, ingest_stages and ingest_batches."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db.pool import Executor


@dataclass(frozen=True)
class StageRow:
    """One stage of one source, as an operator sees it."""

    stage: str
    status: str
    attempts: int
    units_done: int
    units_total: int | None
    unit: str | None
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    error_code: str | None
    error_message: str | None


def stage_state(stage: StageRow, *, now: datetime, stall_seconds: float) -> str:
    """What an operator needs to know of a stage: waiting, working, stalled (working with no sign of life for
    more than stall_seconds), done or failed; one rule for the CLI's status and the MCP diagnosis."""
    if stage.status == "completed":
        return "done"
    if stage.status == "failed":
        return "failed"
    if stage.status == "pending":
        return "waiting"
    beat = stage.heartbeat_at or stage.started_at or stage.enqueued_at
    return "stalled" if (now - beat).total_seconds() > stall_seconds else "working"


@dataclass(frozen=True)
class JobRow:
    """A source's job: where it is and why it stopped."""

    source_id: uuid.UUID
    kind: str
    user_id: uuid.UUID
    class_id: uuid.UUID
    title: str | None
    status: str
    stage: str
    attempts: int
    error_code: str | None
    error_message: str | None
    chunk_count: int | None
    correlation_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    redrives: int = 0
    """How often the reconciler published this source's pending input again."""
    last_redrive_at: datetime | None = None
    reused: bool = False
    """Whether the job completed from an identical upload's stored results instead of computing them."""
    stages: tuple[StageRow, ...] = ()


async def open_job(
    conn: Executor,
    *,
    source_id: uuid.UUID,
    kind: str,
    user_id: uuid.UUID,
    class_id: uuid.UUID,
    title: str,
    correlation_id: uuid.UUID,
    upload_event_id: uuid.UUID,
) -> None:
    """Create the job of an accepted upload (a replay of the same upload changes nothing)."""
    await conn.execute(
        """
        INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage, correlation_id,
                                 upload_event_id)
        VALUES ($1, $2, $3, $4, $5, 'processing', 'upload', $6, $7)
        ON CONFLICT (source_id) DO NOTHING
        """,
        source_id,
        kind,
        user_id,
        class_id,
        title,
        correlation_id,
        upload_event_id,
    )


async def enqueue_stage(conn: Executor, *, source_id: uuid.UUID, stage: str) -> None:
    """Note that a stage's input was published: the source is waiting for that stage."""
    await conn.execute(
        """
        INSERT INTO ingest_stages (source_id, stage) VALUES ($1, $2)
        ON CONFLICT (source_id, stage) DO NOTHING
        """,
        source_id,
        stage,
    )
    await conn.execute(
        "UPDATE ingest_jobs SET stage = $2, updated_at = NOW() WHERE source_id = $1 AND status = 'processing'",
        source_id,
        stage,
    )


async def start_stage(
    conn: Executor,
    *,
    source_id: uuid.UUID,
    stage: str,
    units_total: int | None = None,
    unit: str | None = None,
) -> None:
    """A worker began (or resumed) a stage: count the attempt and start the heartbeat.

    Every event of a stage already working (the next part of a book, the next batch) only beats the heart;
    an attempt is counted when the stage starts from waiting, or again after a crash left it unfinished
    (the worker's redelivery) or an operator re-opened it. The job's attempts are its most-tried stage's:
    1 for a source that went through every stage once."""
    previous: str | None = await conn.fetchval(
        "SELECT status FROM ingest_stages WHERE source_id = $1 AND stage = $2", source_id, stage
    )
    new_attempt = 0 if previous == "processing" else 1
    await conn.execute(
        """
        INSERT INTO ingest_stages (source_id, stage, status, attempts, started_at, heartbeat_at, units_total, unit)
        VALUES ($1, $2, 'processing', 1, NOW(), NOW(), $3, $4)
        ON CONFLICT (source_id, stage) DO UPDATE
           SET status = 'processing', attempts = ingest_stages.attempts + $5,
               started_at = COALESCE(ingest_stages.started_at, NOW()), heartbeat_at = NOW(),
               units_total = COALESCE($3, ingest_stages.units_total), unit = COALESCE($4, ingest_stages.unit)
         WHERE ingest_stages.status IN ('pending', 'processing')
        """,
        source_id,
        stage,
        units_total,
        unit,
        new_attempt,
    )
    await conn.execute(
        """
        UPDATE ingest_jobs
           SET stage = $2::text, updated_at = NOW(),
               attempts = GREATEST(attempts, (SELECT attempts FROM ingest_stages WHERE source_id = $1 AND stage = $2::text))
         WHERE source_id = $1 AND status = 'processing'
        """,
        source_id,
        stage,
    )


async def progress_stage(
    conn: Executor, *, source_id: uuid.UUID, stage: str, units_done: int, units_total: int | None = None
) -> None:
    """Heartbeat with units done so far (pages, seconds, chunks)."""
    await conn.execute(
        """
        UPDATE ingest_stages SET units_done = GREATEST(units_done, $3), units_total = COALESCE($4, units_total),
               heartbeat_at = NOW()
         WHERE source_id = $1 AND stage = $2 AND status = 'processing'
        """,
        source_id,
        stage,
        units_done,
        units_total,
    )


async def finish_stage(
    conn: Executor, *, source_id: uuid.UUID, stage: str, units_done: int | None = None
) -> None:
    """A stage completed for this source."""
    await conn.execute(
        """
        INSERT INTO ingest_stages (source_id, stage, status, attempts, started_at, finished_at, heartbeat_at,
                                   units_done, units_total)
        VALUES ($1, $2, 'completed', 1, NOW(), NOW(), NOW(), COALESCE($3, 0), $3)
        ON CONFLICT (source_id, stage) DO UPDATE
           SET status = 'completed', finished_at = COALESCE(ingest_stages.finished_at, NOW()), heartbeat_at = NOW(),
               units_done = COALESCE($3, ingest_stages.units_done),
               units_total = COALESCE($3, ingest_stages.units_total)
         WHERE ingest_stages.status IN ('pending', 'processing', 'completed')
        """,
        source_id,
        stage,
        units_done,
    )


async def fail_job(conn: Executor, *, source_id: uuid.UUID, stage: str, code: str, reason: str) -> bool:
    """Mark the job and the stage failed with the reason; False if the job was already finished.

    A stage that failed was tried: one that failed before it could report its start (a refused input, a
    broken event) counts that try, so no failed stage shows 0 attempts, and neither does its job."""
    await conn.execute(
        """
        INSERT INTO ingest_stages (source_id, stage, status, attempts, started_at, finished_at, error_code,
                                   error_message)
        SELECT $1, $2, 'failed', 1, NOW(), NOW(), $3, $4 WHERE EXISTS (SELECT 1 FROM ingest_jobs WHERE source_id = $1)
        ON CONFLICT (source_id, stage) DO UPDATE
           SET status = 'failed', finished_at = NOW(), error_code = $3, error_message = $4,
               attempts = GREATEST(ingest_stages.attempts, 1),
               started_at = COALESCE(ingest_stages.started_at, NOW())
         WHERE ingest_stages.status IN ('pending', 'processing')
        """,
        source_id,
        stage,
        code,
        reason,
    )
    result: str = await conn.execute(
        """
        UPDATE ingest_jobs SET status = 'failed', stage = $2, error_code = $3, error_message = $4,
               updated_at = NOW(), finished_at = NOW(), attempts = GREATEST(attempts, 1)
         WHERE source_id = $1 AND status IN ('pending', 'processing')
        """,
        source_id,
        stage,
        code,
        reason,
    )
    return result != "UPDATE 0"


async def record_batch(
    conn: Executor,
    *,
    source_id: uuid.UUID,
    part_index: int,
    part_count: int,
    batch_index: int,
    batch_count: int,
    chunk_count: int,
    generation: int = 0,
) -> None:
    """Record that one embedded batch is durably in both vector stores (once, however often delivered)."""
    await conn.execute(
        """
        INSERT INTO ingest_batches (source_id, generation, part_index, part_count, batch_index, batch_count,
                                    chunk_count)
        VALUES ($1, $7, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
        """,
        source_id,
        part_index,
        part_count,
        batch_index,
        batch_count,
        chunk_count,
        generation,
    )


async def indexed_chunk_count(
    conn: Executor, *, source_id: uuid.UUID, generation: int = 0
) -> tuple[int, int | None]:
    """Chunks of a generation indexed so far, and the total if every batch of every part is in (else None)."""
    record = await conn.fetchrow(
        """
        WITH parts AS (
          SELECT part_index, MAX(part_count) AS part_count, MAX(batch_count) AS batch_count,
                 COUNT(*) AS batches, SUM(chunk_count) AS chunks
            FROM ingest_batches WHERE source_id = $1 AND generation = $2 GROUP BY part_index
        )
        SELECT COALESCE(SUM(chunks), 0) AS chunks,
               COUNT(*) FILTER (WHERE batches = batch_count) AS complete_parts,
               MAX(part_count) AS part_count
          FROM parts
        """,
        source_id,
        generation,
    )
    assert record is not None
    chunks = int(record["chunks"])
    done = record["part_count"] is not None and record["complete_parts"] == record["part_count"]
    return chunks, (chunks if done else None)


async def complete_job(conn: Executor, *, source_id: uuid.UUID, chunk_count: int) -> bool:
    """Mark the job completed; False if it was not in progress (already completed, failed or unknown)."""
    result: str = await conn.execute(
        """
        UPDATE ingest_jobs SET status = 'completed', stage = 'indexing', chunk_count = $2, updated_at = NOW(),
               finished_at = NOW(), error_code = NULL, error_message = NULL
         WHERE source_id = $1 AND status = 'processing'
        """,
        source_id,
        chunk_count,
    )
    return result != "UPDATE 0"


async def reopen_job(conn: Executor, *, source_id: uuid.UUID) -> bool:
    """An operator's explicit retry (a dead letter replayed): a failed job and its failed stages work again.
    The only way status moves back; a deleted source stays deleted."""
    result: str = await conn.execute(
        """
        UPDATE ingest_jobs SET status = 'processing', error_code = NULL, error_message = NULL, finished_at = NULL,
               updated_at = NOW()
         WHERE source_id = $1 AND status = 'failed' AND error_code IS DISTINCT FROM 'deleted'
        """,
        source_id,
    )
    if result == "UPDATE 0":
        return False
    await conn.execute(
        "UPDATE ingest_stages SET status = 'processing', attempts = attempts + 1, error_code = NULL, "
        "error_message = NULL, finished_at = NULL WHERE source_id = $1 AND status = 'failed'",
        source_id,
    )
    return True


async def job_state(conn: Executor, *, source_id: uuid.UUID) -> tuple[str, int] | None:
    """A job's status and current generation, or None if there is no such job."""
    record = await conn.fetchrow("SELECT status, generation FROM ingest_jobs WHERE source_id = $1", source_id)
    return (record["status"], record["generation"]) if record else None


async def begin_reprocess(conn: Executor, *, source_id: uuid.UUID, from_stage: str) -> int | None:
    """Start the next generation of a finished source (completed, or failed for a reason other than deletion);
    returns it, or None if the source is still being processed, deleted or unknown."""
    generation: int | None = await conn.fetchval(
        """
        UPDATE ingest_jobs SET generation = generation + 1, status = 'processing', stage = $2, error_code = NULL,
               error_message = NULL, chunk_count = NULL, finished_at = NULL, updated_at = NOW()
         WHERE source_id = $1 AND (status = 'completed' OR (status = 'failed' AND error_code IS DISTINCT FROM 'deleted'))
        RETURNING generation
        """,
        source_id,
        from_stage,
    )
    if generation is None:
        return None
    # The stages from the restart point on run again; pieces of earlier runs are not reused.
    await conn.execute(
        """
        DELETE FROM ingest_stages WHERE source_id = $1
           AND array_position(ARRAY['upload', 'transcription', 'ocr', 'chunking', 'embedding', 'indexing'], stage::text)
               >= array_position(ARRAY['upload', 'transcription', 'ocr', 'chunking', 'embedding', 'indexing'], $2::text)
        """,
        source_id,
        from_stage,
    )
    await conn.execute("DELETE FROM ingest_pieces WHERE source_id = $1", source_id)
    return generation


async def job_status(conn: Executor, *, source_id: uuid.UUID) -> str | None:
    """A job's status, or None if there is no such job."""
    status: str | None = await conn.fetchval("SELECT status FROM ingest_jobs WHERE source_id = $1", source_id)
    return status


async def get_job(conn: Executor, *, source_id: uuid.UUID) -> JobRow | None:
    """One job with its stages."""
    jobs = await list_jobs(conn, source_id=source_id, limit=1)
    return jobs[0] if jobs else None


async def list_jobs(
    conn: Executor,
    *,
    source_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    status: str | None = None,
    source_ids: Sequence[uuid.UUID] | None = None,
    limit: int = 50,
) -> list[JobRow]:
    """The most recent jobs, newest first, with their stages (optionally only one source, or some)."""
    records = await conn.fetch(
        """
        SELECT * FROM ingest_jobs
         WHERE ($1::uuid IS NULL OR source_id = $1) AND ($2::uuid IS NULL OR user_id = $2)
           AND ($3::varchar IS NULL OR status = $3) AND ($5::uuid[] IS NULL OR source_id = ANY($5::uuid[]))
         ORDER BY created_at DESC LIMIT $4
        """,
        source_id,
        user_id,
        status,
        limit,
        list(source_ids) if source_ids is not None else None,
    )
    ids = [r["source_id"] for r in records]
    stage_records = await conn.fetch(
        "SELECT * FROM ingest_stages WHERE source_id = ANY($1::uuid[]) "
        "ORDER BY array_position(ARRAY['upload', 'transcription', 'ocr', 'chunking', 'embedding', 'indexing'], "
        "stage::text), enqueued_at",
        ids,
    )
    stages: dict[uuid.UUID, list[StageRow]] = {}
    for s in stage_records:
        stages.setdefault(s["source_id"], []).append(
            StageRow(**{k: s[k] for k in StageRow.__dataclass_fields__})
        )
    fields: dict[str, Any]
    jobs = []
    for r in records:
        fields = {k: r[k] for k in JobRow.__dataclass_fields__ if k != "stages"}
        jobs.append(JobRow(**fields, stages=tuple(stages.get(r["source_id"], ()))))
    return jobs


async def jobs_titled(conn: Executor, *, user_id: uuid.UUID, title: str, limit: int = 10) -> list[JobRow]:
    """One user's jobs whose title is this (any case) or, failing that, contains it; exact matches first, then
    the newest."""
    pattern = "%" + title.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    records = await conn.fetch(
        """
        SELECT source_id FROM ingest_jobs
         WHERE user_id = $1 AND title ILIKE $2
         ORDER BY lower(title) = lower($3) DESC, created_at DESC LIMIT $4
        """,
        user_id,
        pattern,
        title,
        limit,
    )
    order = [r["source_id"] for r in records]
    found = {j.source_id: j for j in await list_jobs(conn, source_ids=order, limit=limit)}
    return [found[s] for s in order if s in found]
