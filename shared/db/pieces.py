"""SQL of ingest_pieces: finished pieces of long work, and the one moment a stage's last piece lands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class PieceProgress:
    """Where a stage stands after one piece was recorded."""

    pieces_done: int
    piece_count: int
    units_done: int
    completed_now: bool
    """Every piece is in and the stage is not marked completed yet: the caller completes it (idempotently;
    after a crash the redelivered last piece sees this again, so completion is never lost)."""
    results: tuple[Any, ...] = ()
    """Every piece's result in order, only when completed_now."""


async def record_piece(
    pool: asyncpg.Pool,
    *,
    source_id: uuid.UUID,
    stage: str,
    piece_index: int,
    piece_count: int,
    units: int,
    result: Any,
) -> PieceProgress:
    """Keep a finished piece (once); the job row's lock makes completion happen for one replica only."""
    async with pool.acquire() as conn, conn.transaction():
        # Serialises replicas finishing pieces of the same source at the same moment.
        await conn.execute("SELECT 1 FROM ingest_jobs WHERE source_id = $1 FOR UPDATE", source_id)
        await conn.execute(
            """
            INSERT INTO ingest_pieces (source_id, stage, piece_index, piece_count, units, result)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (source_id, stage, piece_index) DO NOTHING
            """,
            source_id,
            stage,
            piece_index,
            piece_count,
            units,
            result,  # the pool's JSONB codec encodes it
        )
        row = await conn.fetchrow(
            "SELECT count(*) AS n, COALESCE(sum(units), 0) AS units FROM ingest_pieces "
            "WHERE source_id = $1 AND stage = $2",
            source_id,
            stage,
        )
        assert row is not None
        done, units_done = int(row["n"]), int(row["units"])
        stage_status = await conn.fetchval(
            "SELECT status FROM ingest_stages WHERE source_id = $1 AND stage = $2", source_id, stage
        )
        completed_now = done >= piece_count and stage_status != "completed"
        results: tuple[Any, ...] = ()
        if completed_now:
            records = await conn.fetch(
                "SELECT result FROM ingest_pieces WHERE source_id = $1 AND stage = $2 ORDER BY piece_index",
                source_id,
                stage,
            )
            results = tuple(r["result"] for r in records)
        return PieceProgress(done, piece_count, units_done, completed_now, results)
