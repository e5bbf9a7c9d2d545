"""Indexing: write embedded chunks to Qdrant and Chroma, mark a source searchable once all are in, and make
deleted sources, classes and users disappear from both stores (chunks in flight included)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import ChunksEmbedded, Envelope, SourceDeleted, SourceIndexed, SourceRef
from shared.ports import Tracker
from shared.vectors.records import VectorRecord, chroma_collection_name, to_record

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
