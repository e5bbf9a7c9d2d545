"""Indexing: write embedded chunks to Qdrant and Chroma, mark a source searchable once all are in, copy an
identical upload's vectors instead (reuse), and make deleted sources, classes and users disappear from both
stores (chunks in flight included)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Protocol

from shared.db.reuse import Donor
from shared.errors import PermanentError
from shared.events.models import (
    AudioUploaded,
    ChunksEmbedded,
    ContentReuseQueued,
    Envelope,
    PhotoUploaded,
    SourceDeleted,
    SourceIndexed,
    SourceRef,
    TextbookUploaded,
)
from shared.ports import Tracker
from shared.vectors.records import DonorVectors, VectorRecord, chroma_collection_name, to_record

SERVICE = "indexing"


class VectorStore(Protocol):
    """A vector store that keeps records under their deterministic ids."""

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Write (or overwrite) records durably."""

    async def promote(self, source: SourceRef) -> None:
        """Show a reprocessed source's current generation and remove every other one, in one step."""

    async def delete_records(self, records: Sequence[VectorRecord]) -> None:
        """Delete exactly these records."""

    async def delete(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID | None = None, source_id: uuid.UUID | None = None
    ) -> int:
        """Delete everything of a source, class or user; returns how many records went."""


class Ledger(Protocol):
    """Which batches of each source are in the stores, the source rows to mark, and the tombstones."""

    async def record_batch(self, event: ChunksEmbedded) -> tuple[int, int | None]:
        """Record one stored batch; returns chunks indexed so far and the total once every batch is in."""

    async def complete(self, source: SourceRef, *, chunk_count: int) -> bool:
        """Mark the source indexed (row and job); False if it already was."""

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        """Which of these sources are deleted (themselves, their class or their user)."""

    async def begin_deletion(self, event: SourceDeleted) -> None:
        """Write the tombstone and stop the deleted sources' unfinished jobs."""

    async def end_deletion(self, event: SourceDeleted, *, removed: int) -> None:
        """Note that the delete reached every store."""


Result = list[tuple[ChunksEmbedded, Sequence[Envelope] | PermanentError]]


async def index_chunks(
    events: Sequence[ChunksEmbedded],
    *,
    stores: Sequence[VectorStore],
    ledger: Ledger,
    tracker: Tracker,
    qdrant_collection: str,
) -> Result:
    """Store every chunk of the batch in every store first; only then count the batches as indexed."""
    gone = await ledger.deleted([e.source for e in events])
    live = [e for e in events if e.source.source_id not in gone]
    records = [to_record(event.source, chunk, model=event.model) for event in live for chunk in event.chunks]
    for store in stores:
        await store.upsert(records)
    # A delete may have landed while we wrote: its tombstone is already there, so take back what we wrote.
    gone_now = await ledger.deleted([e.source for e in live])
    if gone_now:
        late = [r for r in records if uuid.UUID(str(r.metadata["source_id"])) in gone_now]
        for store in stores:
            await store.delete_records(late)
        gone |= gone_now

    deleted = PermanentError("deleted", "the source was deleted")
    results: Result = [(event, deleted) for event in events if event.source.source_id in gone]
    for event in live:
        source = event.source
        if source.source_id in gone:
            continue
        if event.part_index == 0 and event.batch_index == 0:
            await tracker.started(source.source_id, SERVICE, unit="chunks")
        indexed, total = await ledger.record_batch(event)
        if total is None:
            await tracker.progressed(source.source_id, SERVICE, units_done=indexed)
            results.append((event, []))
            continue
        if total == 0:
            results.append((event, PermanentError("no_text", "no text could be found in the source")))
            continue
        outgoing: list[Envelope] = []
        if source.generation > 0:
            # A reprocess: the new chunks were written hidden; show them and drop the old ones now.
            for store in stores:
                await store.promote(source)
        if await ledger.complete(source, chunk_count=total):
            await tracker.finished(source.source_id, SERVICE, units_done=total)
            outgoing.append(
                SourceIndexed(
                    **event.follow("SourceIndexed", producer=SERVICE),
                    source=source,
                    chunk_count=total,
                    vector_id=source.vector_id,
                    qdrant_collection=qdrant_collection,
                    chroma_collection=chroma_collection_name(
                        source.user_id, source.class_id, source.content_type
                    ),
                )
            )
        results.append((event, outgoing))
    return results


async def delete_vectors(
    event: SourceDeleted, *, stores: Sequence[VectorStore], ledger: Ledger
) -> list[Envelope]:
    """Tombstone first, then delete from every store: whatever is still in flight is dropped or taken back."""
    await ledger.begin_deletion(event)
    removed = 0
    for store in stores:
        removed += await store.delete(
            user_id=event.user_id, class_id=event.class_id, source_id=event.source_id
        )
    await ledger.end_deletion(event, removed=removed)
    return []


class VectorCopier(Protocol):
    """A vector store that can copy one source's vectors under another (reuse of identical uploads)."""

    async def copy_source(self, donor: DonorVectors, target: SourceRef) -> int:
        """Copy the donor's generation under the target's ids and payload, visible as a first generation is; returns how many."""

    async def promote(self, source: SourceRef) -> None:
        """Show the source's current generation (and drop any other), in one step."""

    async def delete(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID | None = None, source_id: uuid.UUID | None = None
    ) -> int:
        """Delete everything of a source, class or user; returns how many records went."""


class ReuseLedger(Protocol):
    """The rows a reuse reads and writes."""

    async def job_status(self, source: SourceRef) -> str | None:
        """The source's job status (None: no job)."""

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        """Which of these sources are deleted (themselves, their class or their user)."""

    async def find_donor(self, event: ContentReuseQueued) -> Donor | None:
        """A completed, undeleted source with the event's key, its rows read in one snapshot; or None."""

    async def begin_reuse(self, source: SourceRef, *, chunk_count: int) -> None:
        """The content row's status processing, the indexing stage working."""

    async def complete_reuse(self, source: SourceRef, donor: Donor) -> bool:
        """Write the donor's rows under the source, mark it indexed and complete its job, in one transaction;
        False if the job was not in progress."""

    async def fall_back(self, source: SourceRef, *, next_stage: str) -> None:
        """The source goes the normal way: its kind's first stage is waiting."""


MEDIA_EVENT_OF_KIND: dict[str, type[AudioUploaded | PhotoUploaded | TextbookUploaded]] = {
    "audio": AudioUploaded,
    "photo": PhotoUploaded,
    "textbook": TextbookUploaded,
}
FIRST_STAGE_OF_KIND = {"audio": "transcription", "photo": "ocr", "textbook": "chunking"}


async def reuse_content(
    event: ContentReuseQueued,
    *,
    stores: Sequence[VectorCopier],
    ledger: ReuseLedger,
    tracker: Tracker,
    qdrant_collection: str,
) -> list[Envelope]:
    """Copy a completed identical upload's vectors (both stores) and rows under this source, or fall back to the
    normal path if there is none any more or its copy came out short (its donor deleted or reprocessed meanwhile).

    The copy is written visible, as a computed upload's chunks are as they arrive (a copy written hidden, then
    shown by a payload update of all its points, made Qdrant searches miss other sources' chunks written
    meanwhile: tests/e2e/test_read_your_writes.py); it is reported completed only once every store holds
    exactly the donor's chunk count, and a short copy is removed whole. Nothing of the donor (ids, owner,
    class, title) is ever in it."""
    source = event.source
    if await ledger.job_status(source) == "completed":
        return []  # a redelivery after the copy was complete and shown: nothing left to do
    if await ledger.deleted([source]):
        raise PermanentError("deleted", "the source was deleted")
    donor = await ledger.find_donor(event)
    copied: list[int] = []
    if donor is not None:
        await ledger.begin_reuse(source, chunk_count=donor.chunk_count)
        vectors = DonorVectors(
            source_id=donor.source_id,
            user_id=donor.user_id,
            class_id=donor.class_id,
            content_type=source.content_type,
            generation=donor.generation,
        )
        # The stores are separate servers: copy into both at once.
        copied = list(await asyncio.gather(*(store.copy_source(vectors, source) for store in stores)))
    if donor is None or any(n != donor.chunk_count for n in copied):
        for store in stores:  # a short copy is removed whole; the normal path writes the same ids anyway
            await store.delete(user_id=source.user_id, class_id=source.class_id, source_id=source.source_id)
        return await _fall_back(event, ledger=ledger)
    if await ledger.deleted([source]):
        # Deleted while we copied: the delete may have run before our writes landed, so take them back.
        for store in stores:
            await store.delete(user_id=source.user_id, class_id=source.class_id, source_id=source.source_id)
        raise PermanentError("deleted", "the source was deleted")
    if source.generation > 0:
        await asyncio.gather(*(store.promote(source) for store in stores))
    if not await ledger.complete_reuse(source, donor):
        return []
    await tracker.finished(source.source_id, SERVICE, units_done=donor.chunk_count)
    return [
        SourceIndexed(
            **event.follow("SourceIndexed", producer=SERVICE),
            source=source,
            chunk_count=donor.chunk_count,
            vector_id=source.vector_id,
            qdrant_collection=qdrant_collection,
            chroma_collection=chroma_collection_name(source.user_id, source.class_id, source.content_type),
        )
    ]


async def _fall_back(event: ContentReuseQueued, *, ledger: ReuseLedger) -> list[Envelope]:
    """Send the upload its kind's normal way, as the upload worker would have."""
    source = event.source
    media_event = MEDIA_EVENT_OF_KIND[source.kind]
    await ledger.fall_back(source, next_stage=FIRST_STAGE_OF_KIND[source.kind])
    return [
        media_event(
            **event.follow(media_event.__name__, producer=SERVICE),
            source=source,
            storage_url=event.storage_url,
            media_type=event.media_type,
            size_bytes=event.size_bytes,
        )
    ]
