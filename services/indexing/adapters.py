"""Indexing's side effects: the batch ledger and source rows in PostgreSQL (the stores are in shared.vectors)."""

from __future__ import annotations

import asyncpg

from shared.db import jobs, sources
from shared.events.models import ChunksEmbedded, SourceRef


class PostgresLedger:
    """ingest_batches, ingest_jobs and the content row, through shared.db."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record_batch(self, event: ChunksEmbedded) -> tuple[int, int | None]:
        """Record one stored batch; returns chunks indexed so far and the total once every batch is in."""
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.record_batch(
                conn,
                source_id=event.source.source_id,
                part_index=event.part_index,
                part_count=event.part_count,
                batch_index=event.batch_index,
                batch_count=event.batch_count,
                chunk_count=len(event.chunks),
            )
            return await jobs.indexed_chunk_count(conn, source_id=event.source.source_id)

    async def complete(self, source: SourceRef, *, chunk_count: int) -> bool:
        """Set the row's vector_id (textbooks: total_chunks, embedding_status) and complete the job, atomically."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await jobs.complete_job(conn, source_id=source.source_id, chunk_count=chunk_count):
                return False
            await sources.mark_indexed(
                conn,
                kind=source.kind,
                source_id=source.source_id,
                vector_id=source.vector_id,
                chunk_count=chunk_count,
            )
            return True
