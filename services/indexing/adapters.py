"""Indexing's side effects: the batch ledger and source rows in PostgreSQL (the stores are in shared.vectors)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from shared.db import deletions, jobs, reuse, sources
from shared.events.models import ChunksEmbedded, ContentReuseQueued, SourceDeleted, SourceRef


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
                generation=event.source.generation,
            )
            return await jobs.indexed_chunk_count(
                conn, source_id=event.source.source_id, generation=event.source.generation
            )

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

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        """Which of these sources are deleted (themselves, their class or their user)."""
        return await deletions.deleted_sources(
            self.pool, sources=[(s.source_id, s.class_id, s.user_id) for s in sources]
        )

    async def begin_deletion(self, event: SourceDeleted) -> None:
        """Write the tombstone and stop the deleted sources' unfinished jobs, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await deletions.record_deletion(
                conn,
                event_id=event.event_id,
                scope=event.scope,
                user_id=event.user_id,
                class_id=event.class_id,
                source_id=event.source_id,
            )
            await deletions.fail_deleted_jobs(
                conn, user_id=event.user_id, class_id=event.class_id, source_id=event.source_id
            )

    async def end_deletion(self, event: SourceDeleted, *, removed: int) -> None:
        """Note that the delete reached every store."""
        await deletions.complete_deletion(self.pool, event_id=event.event_id, vectors_removed=removed)


class PostgresReuseLedger:
    """What a reuse reads (the donor's rows, in one snapshot) and writes (the same rows under the new source)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def job_status(self, source: SourceRef) -> str | None:
        """The source's job status (None: no job)."""
        return await jobs.job_status(self.pool, source_id=source.source_id)

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        """Which of these sources are deleted (themselves, their class or their user)."""
        return await deletions.deleted_sources(
            self.pool, sources=[(s.source_id, s.class_id, s.user_id) for s in sources]
        )

    async def find_donor(self, event: ContentReuseQueued) -> reuse.Donor | None:
        """A completed, undeleted source with the event's key, its rows read in one snapshot; or None."""
        return await reuse.find_donor(
            self.pool,
            kind=event.source.kind,
            sha256=event.content_sha256,
            pipeline_version=event.pipeline_version,
            exclude=event.source.source_id,
        )

    async def begin_reuse(self, source: SourceRef, *, chunk_count: int) -> None:
        """The content row's status processing (as its first stage would set it), the indexing stage working."""
        async with self.pool.acquire() as conn, conn.transaction():
            await sources.set_status(conn, kind=source.kind, source_id=source.source_id, status="processing")
            await jobs.start_stage(
                conn, source_id=source.source_id, stage="indexing", units_total=chunk_count, unit="chunks"
            )

    async def complete_reuse(self, source: SourceRef, donor: reuse.Donor) -> bool:
        """Write the donor's rows under the source, mark it indexed and complete its job, in one transaction;
        False if the job was not in progress (completed already, failed, deleted)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await reuse.write_result(
                    conn, source_id=source.source_id, generation=source.generation, donor=donor
                )
                if not await jobs.complete_job(
                    conn, source_id=source.source_id, chunk_count=donor.chunk_count
                ):
                    raise _NotInProgress
                if source.kind in ("audio", "photo"):
                    # Their status column completes with the extracted text (as their workers set it).
                    await sources.set_status(
                        conn, kind=source.kind, source_id=source.source_id, status="completed"
                    )
                await sources.mark_indexed(
                    conn,
                    kind=source.kind,
                    source_id=source.source_id,
                    vector_id=source.vector_id,
                    chunk_count=donor.chunk_count,
                )
        except _NotInProgress:
            return False
        return True

    async def fall_back(self, source: SourceRef, *, next_stage: str) -> None:
        """The source goes the normal way: its kind's first stage is waiting."""
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.enqueue_stage(conn, source_id=source.source_id, stage=next_stage)


class _NotInProgress(Exception):
    """Rolls back a reuse's rows when its job turned out not to be in progress."""
