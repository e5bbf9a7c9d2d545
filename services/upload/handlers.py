"""Upload: validate an upload, check who owns what, create or reuse the row, route it to its kind's worker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import (
    AudioUploaded,
    ContentReuseQueued,
    Envelope,
    PhotoUploaded,
    SourceRef,
    SourceReprocessRequested,
    SourceUploaded,
    TextbookUploaded,
    TextExtracted,
    TextSegment,
)
from shared.events.parts import clean_text, split_into_parts
from shared.ports import SourceRow
from shared.storage import StoredFile
from shared.text import require_text

SERVICE = "upload"
NEXT_STAGE_OF_KIND = {"audio": "transcription", "photo": "ocr", "textbook": "chunking", "note": "embedding"}
MEDIA_EVENT_OF_KIND: dict[str, type[AudioUploaded | PhotoUploaded | TextbookUploaded]] = {
    "audio": AudioUploaded,
    "photo": PhotoUploaded,
    "textbook": TextbookUploaded,
}


class Storage(Protocol):
    """Where uploaded files are; refuses URLs outside its root."""

    def resolve(self, url: str) -> StoredFile:
        """The checked file a URL names (raises PermanentError if refused or missing)."""


@dataclass(frozen=True)
class ContentKey:
    """What an upload's results are keyed by, besides its kind: its bytes and the pipeline's settings."""

    sha256: str
    pipeline_version: str


class Fingerprints(Protocol):
    """The content key of a stored file."""

    async def content_key(self, stored: StoredFile, kind: str) -> ContentKey:
        """The file's SHA-256 and the current pipeline version of its kind."""


class Directory(Protocol):
    """The platform's rows: classes, content rows and jobs."""

    async def class_owner(self, class_id: uuid.UUID) -> uuid.UUID | None:
        """The user owning a class, or None."""

    async def find_source(self, kind: str, source_id: uuid.UUID) -> SourceRow | None:
        """A content row, or None."""

    async def is_deleted(self, *, user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID) -> bool:
        """Whether the source, its class or its user was deleted."""

    async def begin_reprocess(
        self, event: SourceReprocessRequested, *, next_stage: str, content_key: ContentKey | None = None
    ) -> int | None:
        """Start the next generation of a finished source (keyed anew); None if still processing or deleted."""

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

    async def has_donor(self, kind: str, key: ContentKey, *, exclude: uuid.UUID) -> bool:
        """Whether a completed, undeleted source of this kind has the same content key."""


@dataclass(frozen=True)
class Limits:
    """What an upload may be."""

    max_note_chars: int
    max_file_bytes: int = 2 * 1024**3
    reuse: bool = True
    """Copy the results of a completed upload of the same bytes and pipeline version instead of computing."""


async def accept_upload(
    event: SourceUploaded,
    *,
    directory: Directory,
    storage: Storage,
    limits: Limits,
    fingerprints: Fingerprints | None = None,
) -> list[Envelope]:
    """Accept one upload: its class must be the user's, an existing row must be theirs; then route it (to a copy
    of an identical upload's results if one is complete, else to its kind's first stage)."""
    owner = await directory.class_owner(event.class_id)
    if owner is None:
        raise PermanentError("unknown_class", f"class {event.class_id} does not exist")
    if owner != event.user_id:
        raise PermanentError(
            "class_not_owned", f"class {event.class_id} does not belong to user {event.user_id}"
        )

    if await directory.is_deleted(user_id=event.user_id, class_id=event.class_id, source_id=event.source_id):
        raise PermanentError("deleted", f"{event.kind} {event.source_id} (or its class or user) was deleted")
    existing = await directory.find_source(event.kind, event.source_id)
    if event.row_id is not None and existing is None:
        raise PermanentError("unknown_row", f"no {event.kind} row with id {event.row_id}")
    if existing is not None and (existing.user_id, existing.class_id) != (event.user_id, event.class_id):
        raise PermanentError(
            "row_not_owned", f"{event.kind} row {event.source_id} does not belong to this user and class"
        )

    text: str | None = None
    stored: StoredFile | None = None
    if event.kind == "note":
        text = event.text if event.text is not None else (existing.text if existing else None)
        if text is not None:
            require_text(text)  # before cleaning: the control characters are what tell a binary apart
        text = clean_text(text) if text is not None else None
        if text is None or not text.strip():
            raise PermanentError("empty_text", "the note has no text to index")
        if len(text) > limits.max_note_chars:
            raise PermanentError(
                "too_large", f"the note has {len(text)} characters; the limit is {limits.max_note_chars}"
            )
    else:
        assert event.storage_url is not None  # the model guarantees it for media kinds
        stored = storage.resolve(event.storage_url)
        if stored.size_bytes == 0:
            raise PermanentError("empty_file", "the uploaded file is empty")
        if stored.size_bytes > limits.max_file_bytes:
            raise PermanentError(
                "too_large", f"the file has {stored.size_bytes} bytes; the limit is {limits.max_file_bytes}"
            )

    key = await fingerprints.content_key(stored, event.kind) if fingerprints and stored else None
    reuse = (
        limits.reuse
        and key is not None
        and await directory.has_donor(event.kind, key, exclude=event.source_id)
    )
    # A reuse is done by the indexing worker (it alone writes the vector stores), so the job waits there.
    next_stage = "indexing" if reuse else NEXT_STAGE_OF_KIND[event.kind]
    row = await directory.accept(event, text=text, stored=stored, next_stage=next_stage, content_key=key)
    source = SourceRef(
        source_id=row.source_id,
        kind=event.kind,
        user_id=event.user_id,
        class_id=event.class_id,
        title=row.title,
        created_at=row.created_at,
    )
    if event.kind == "note":
        assert text is not None
        parts = split_into_parts([TextSegment(text=text)])
        return [
            TextExtracted(
                **event.follow(f"TextExtracted/{i}", producer=SERVICE),
                source=source,
                segments=segments,
                part_index=i,
                part_count=len(parts),
            )
            for i, segments in enumerate(parts)
        ]
    assert stored is not None
    if reuse:
        assert key is not None
        return [
            ContentReuseQueued(
                **event.follow(ContentReuseQueued.__name__, producer=SERVICE),
                source=source,
                storage_url=stored.url,
                media_type=event.media_type,
                size_bytes=stored.size_bytes,
                content_sha256=key.sha256,
                pipeline_version=key.pipeline_version,
            )
        ]
    media_event = MEDIA_EVENT_OF_KIND[event.kind]
    return [
        media_event(
            **event.follow(media_event.__name__, producer=SERVICE),
            source=source,
            storage_url=stored.url,
            media_type=event.media_type,
            size_bytes=stored.size_bytes,
        )
    ]


async def reprocess_source(
    event: SourceReprocessRequested,
    *,
    directory: Directory,
    storage: Storage | None = None,
    fingerprints: Fingerprints | None = None,
) -> list[Envelope]:
    """Run a finished source again from a stage, as its next generation; its old vectors stay searchable until
    the new ones are all in, and are then replaced in one step. A reprocess always computes (it is how an
    operator forces a recompute); its result is keyed by the current pipeline version."""
    row = await directory.find_source(event.kind, event.source_id)
    if row is None:
        raise PermanentError("unknown_row", f"no {event.kind} row with id {event.source_id}")
    if (row.user_id, row.class_id) != (event.user_id, event.class_id):
        raise PermanentError(
            "row_not_owned", f"{event.kind} row {event.source_id} does not belong to this user and class"
        )
    from_text = event.kind == "note" or event.from_stage == "embedding"
    if from_text and event.kind in ("audio", "textbook"):
        raise PermanentError(
            "unsupported_reprocess",
            f"a {event.kind} keeps no text with page or time spans: reprocess it from upload",
        )
    text = clean_text(row.text) if from_text and row.text else None
    if from_text and not (text and text.strip()):
        raise PermanentError("empty_text", f"the {event.kind} row has no stored text to embed")
    if not from_text and not row.storage_url:
        raise PermanentError("file_not_found", f"the {event.kind} row has no file URL")
    next_stage = "embedding" if from_text else NEXT_STAGE_OF_KIND[event.kind]
    key: ContentKey | None = None
    if fingerprints and storage and row.storage_url:
        try:
            key = await fingerprints.content_key(storage.resolve(row.storage_url), event.kind)
        except PermanentError:
            key = None  # the file is gone: the new result is keyed by nothing and never copied
    generation = await directory.begin_reprocess(event, next_stage=next_stage, content_key=key)
    if generation is None:
        raise PermanentError(
            "source_busy", f"{event.kind} {event.source_id} is still being processed, or was deleted"
        )
    source = SourceRef(
        source_id=row.source_id,
        kind=event.kind,
        user_id=event.user_id,
        class_id=event.class_id,
        title=row.title,
        created_at=row.created_at,
        generation=generation,
    )
    if text is not None:
        parts = split_into_parts([TextSegment(text=text)])
        return [
            TextExtracted(
                **event.follow(f"TextExtracted/{i}", producer=SERVICE),
                source=source,
                segments=segments,
                part_index=i,
                part_count=len(parts),
            )
            for i, segments in enumerate(parts)
        ]
    assert row.storage_url is not None
    media_event = MEDIA_EVENT_OF_KIND[event.kind]
    return [
        media_event(
            **event.follow(media_event.__name__, producer=SERVICE), source=source, storage_url=row.storage_url
        )
    ]
