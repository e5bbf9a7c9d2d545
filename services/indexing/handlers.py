"""Indexing: write embedded chunks to Qdrant and Chroma, and mark a source searchable once all are in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import ChunksEmbedded, Envelope, SourceIndexed, SourceRef
from shared.ports import Tracker
from shared.vectors.records import VectorRecord, chroma_collection_name, to_record

SERVICE = "indexing"


class VectorStore(Protocol):
    """A vector store that keeps records under their deterministic ids."""

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Write (or overwrite) records durably."""


class Ledger(Protocol):
    """Which batches of each source are in the stores, and the source rows to mark."""

    async def record_batch(self, event: ChunksEmbedded) -> tuple[int, int | None]:
        """Record one stored batch; returns chunks indexed so far and the total once every batch is in."""

    async def complete(self, source: SourceRef, *, chunk_count: int) -> bool:
        """Mark the source indexed (row and job); False if it already was."""


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
    records = [
        to_record(event.source, chunk, model=event.model) for event in events for chunk in event.chunks
    ]
    for store in stores:
        await store.upsert(records)

    results: Result = []
    for event in events:
        source = event.source
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
