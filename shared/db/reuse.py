"""SQL of reuse: the content key on ingest_jobs, the completed source whose results a new upload may copy, and
the copy of its rows (stages, pieces, batches, the content row's derived columns) under the new source."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from shared.db import jobs, sources
from shared.db.pool import Executor

DERIVED_COLUMNS_OF_KIND: Final[dict[str, tuple[str, ...]]] = {
    "textbook": ("page_count",),
    "audio": ("duration_seconds", "transcript_text"),
    "photo": ("extracted_text",),
    "note": (),
}
"""The content row's columns the pipeline derives from the file (never who uploaded it, or its title)."""


@dataclass(frozen=True)
class StageResult:
    """A finished stage of the donor, as units only."""

    stage: str
    units_done: int
    units_total: int | None
    unit: str | None


@dataclass(frozen=True)
class Donor:
    """A completed source with the same key, read in one snapshot: where its vectors are and what its rows say."""

    source_id: uuid.UUID
    user_id: uuid.UUID
    class_id: uuid.UUID
    kind: str
    generation: int
    chunk_count: int
    stages: tuple[StageResult, ...] = ()
    pieces: tuple[tuple[str, int, int, int, Any], ...] = ()
    """(stage, piece_index, piece_count, units, result) of the donor's finished pieces."""
    batches: tuple[tuple[int, int, int, int, int], ...] = ()
    """(part_index, part_count, batch_index, batch_count, chunk_count) of the donor's current generation."""
    derived: dict[str, Any] = field(default_factory=dict)


async def set_content_key(
    conn: Executor,
    *,
    source_id: uuid.UUID,
    sha256: str | None,
    pipeline_version: str | None,
    recompute: bool = False,
) -> None:
    """Record what the source's results will be keyed by (None: the file is not there, never a donor);
    ``recompute`` (a reprocess) also forgets that its previous results were copied."""
    await conn.execute(
        "UPDATE ingest_jobs SET content_sha256 = $2, pipeline_version = $3, reused = reused AND NOT $4 "
        "WHERE source_id = $1",
        source_id,
        sha256,
        pipeline_version,
        recompute,
    )


_DONOR = """
SELECT j.source_id, j.user_id, j.class_id, j.kind, j.generation, j.chunk_count
  FROM ingest_jobs j
 WHERE j.content_sha256 = $1 AND j.pipeline_version = $2 AND j.kind = $3 AND j.status = 'completed'
   AND j.source_id <> $4 AND j.chunk_count > 0
   AND NOT EXISTS (
     SELECT 1 FROM deletions d
      WHERE (d.scope = 'source' AND d.source_id = j.source_id)
         OR (d.scope = 'class' AND d.class_id = j.class_id AND d.user_id = j.user_id)
         OR (d.scope = 'user' AND d.user_id = j.user_id))
 ORDER BY j.finished_at DESC
 LIMIT 1
"""


async def has_donor(
    conn: Executor, *, kind: str, sha256: str, pipeline_version: str, exclude: uuid.UUID
) -> bool:
    """Whether a completed, undeleted source of this kind has the same bytes and pipeline version."""
    return await conn.fetchrow(_DONOR, sha256, pipeline_version, kind, exclude) is not None


async def find_donor(
    pool: asyncpg.Pool, *, kind: str, sha256: str, pipeline_version: str, exclude: uuid.UUID
) -> Donor | None:
    """The most recently finished donor, with its rows read in one snapshot (a reprocess or delete that starts
    meanwhile is not half seen), or None."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        job = await conn.fetchrow(_DONOR, sha256, pipeline_version, kind, exclude)
        if job is None:
            return None
        source_id = job["source_id"]
        stages = await conn.fetch(
            "SELECT stage, units_done, units_total, unit FROM ingest_stages "
            "WHERE source_id = $1 AND status = 'completed' AND stage NOT IN ('upload', 'indexing')",
            source_id,
        )
        pieces = await conn.fetch(
            "SELECT stage, piece_index, piece_count, units, result FROM ingest_pieces WHERE source_id = $1",
            source_id,
        )
        batches = await conn.fetch(
            "SELECT part_index, part_count, batch_index, batch_count, chunk_count FROM ingest_batches "
            "WHERE source_id = $1 AND generation = $2",
            source_id,
            job["generation"],
        )
        columns = DERIVED_COLUMNS_OF_KIND[kind]
        derived: dict[str, Any] = {}
        if columns:
            row = await conn.fetchrow(
                f"SELECT {', '.join(columns)} FROM {sources.TABLE_OF_KIND[kind]} WHERE id = $1",  # noqa: S608
                source_id,
            )
            if row is None:
                return None
            derived = dict(row)
        return Donor(
            source_id=source_id,
            user_id=job["user_id"],
            class_id=job["class_id"],
            kind=kind,
            generation=job["generation"],
            chunk_count=job["chunk_count"],
            stages=tuple(StageResult(**dict(s)) for s in stages),
            pieces=tuple(tuple(p.values()) for p in pieces),
            batches=tuple(tuple(b.values()) for b in batches),
            derived=derived,
        )


async def write_result(conn: Executor, *, source_id: uuid.UUID, generation: int, donor: Donor) -> None:
    """Give the new source the rows the normal path would have written: the content row's derived columns, the
    extraction and embedding stages (completed, with the donor's units), the pieces and the indexed batches."""
    if donor.derived:
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(donor.derived, start=2))
        await conn.execute(
            f"UPDATE {sources.TABLE_OF_KIND[donor.kind]} SET {assignments}, updated_at = NOW() WHERE id = $1",  # noqa: S608
            source_id,
            *donor.derived.values(),
        )
    for stage in donor.stages:
        await conn.execute(
            """
            INSERT INTO ingest_stages (source_id, stage, status, attempts, units_done, units_total, unit,
                                       started_at, finished_at, heartbeat_at)
            VALUES ($1, $2, 'completed', 1, $3, $4, $5, NOW(), NOW(), NOW())
            ON CONFLICT (source_id, stage) DO UPDATE
               SET status = 'completed', units_done = $3, units_total = $4, unit = $5,
                   attempts = GREATEST(ingest_stages.attempts, 1),
                   started_at = COALESCE(ingest_stages.started_at, NOW()), finished_at = NOW(), heartbeat_at = NOW()
             WHERE ingest_stages.status IN ('pending', 'processing', 'completed')
            """,
            source_id,
            stage.stage,
            stage.units_done,
            stage.units_total,
            stage.unit,
        )
    await conn.executemany(
        """
        INSERT INTO ingest_pieces (source_id, stage, piece_index, piece_count, units, result)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_id, stage, piece_index) DO NOTHING
        """,
        [(source_id, *piece) for piece in donor.pieces],
    )
    for part_index, part_count, batch_index, batch_count, chunk_count in donor.batches:
        await jobs.record_batch(
            conn,
            source_id=source_id,
            part_index=part_index,
            part_count=part_count,
            batch_index=batch_index,
            batch_count=batch_count,
            chunk_count=chunk_count,
            generation=generation,
        )
    await conn.execute("UPDATE ingest_jobs SET reused = true WHERE source_id = $1", source_id)
