"""Upload's side effects: the platform's rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from services.upload.handlers import ContentKey
from shared.checksums import sha256_file
from shared.db import deletions, jobs, owners, reuse, sources
from shared.events.models import SourceReprocessRequested, SourceUploaded
from shared.pipeline_version import current_pipeline_version
from shared.ports import SourceRow
from shared.settings import Settings
from shared.storage import StoredFile


class FileFingerprints:
    """The SHA-256 of a stored file (read off the event loop) and this deployment's pipeline version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def content_key(self, stored: StoredFile, kind: str) -> ContentKey:
        """The file's SHA-256 and the current pipeline version of its kind."""
        digest = await asyncio.to_thread(sha256_file, stored.path)
        version = await asyncio.to_thread(current_pipeline_version, self.settings, kind=kind)
        return ContentKey(sha256=digest, pipeline_version=version)


class PostgresDirectory:
    """Classes, content rows and jobs, through shared.db."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def class_owner(self, class_id: uuid.UUID) -> uuid.UUID | None:
        """The user owning a class, or None."""
        return await owners.class_owner(self.pool, class_id=class_id)

    async def find_source(self, kind: str, source_id: uuid.UUID) -> SourceRow | None:
        """A content row, or None."""
        return await sources.get_source(self.pool, kind=kind, source_id=source_id)

    async def is_deleted(self, *, user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID) -> bool:
        """Whether the source, its class or its user was deleted."""
        return bool(await deletions.deleted_sources(self.pool, sources=[(source_id, class_id, user_id)]))

    async def has_donor(self, kind: str, key: ContentKey, *, exclude: uuid.UUID) -> bool:
        """Whether a completed, undeleted source of this kind has the same content key."""
        return await reuse.has_donor(
            self.pool, kind=kind, sha256=key.sha256, pipeline_version=key.pipeline_version, exclude=exclude
        )

    async def begin_reprocess(
        self, event: SourceReprocessRequested, *, next_stage: str, content_key: ContentKey | None = None
    ) -> int | None:
        """Start the next generation of a finished source (keyed anew); None if still processing or deleted."""
        from_stage = "embedding" if next_stage == "embedding" else "upload"
        async with self.pool.acquire() as conn, conn.transaction():
            generation = await jobs.begin_reprocess(conn, source_id=event.source_id, from_stage=from_stage)
            if generation is None:
                return None
            # The new generation is a donor only once it completes, and only under the version it is made with.
            await reuse.set_content_key(
                conn,
                source_id=event.source_id,
                sha256=content_key.sha256 if content_key else None,
                pipeline_version=content_key.pipeline_version if content_key else None,
                recompute=True,
            )
            if from_stage == "upload":
                await sources.reset_status(conn, kind=event.kind, source_id=event.source_id)
                await jobs.finish_stage(conn, source_id=event.source_id, stage="upload")
            await jobs.enqueue_stage(conn, source_id=event.source_id, stage=next_stage)
            return generation

    async def accept(
        self,
        event: SourceUploaded,
        *,
        text: str | None,
        stored: StoredFile | None,
        next_stage: str,
        content_key: ContentKey | None = None,
    ) -> SourceRow:
        """Insert (or reuse) the row, open the job and mark the next stage waiting, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await sources.insert_source(
                conn,
                kind=event.kind,
                source_id=event.source_id,
                user_id=event.user_id,
                class_id=event.class_id,
                title=event.title,
                storage_url=stored.url if stored else None,
                text=text,
                note_type=event.note_type,
                file_type=event.media_type,
                size_bytes=stored.size_bytes if stored else None,
                author=event.author,
                isbn=event.isbn,
            )
            await jobs.open_job(
                conn,
                source_id=row.source_id,
                kind=event.kind,
                user_id=event.user_id,
                class_id=event.class_id,
                title=event.title,
                correlation_id=event.correlation_id,
                upload_event_id=event.event_id,
            )
            if content_key is not None:
                await reuse.set_content_key(
                    conn,
                    source_id=row.source_id,
                    sha256=content_key.sha256,
                    pipeline_version=content_key.pipeline_version,
                )
            await jobs.finish_stage(conn, source_id=row.source_id, stage="upload")
            await jobs.enqueue_stage(conn, source_id=row.source_id, stage=next_stage)
        return row
