"""Embedding: cut each source's text into token-bounded chunks and embed them, batching across messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from shared.chunking import Chunk
from shared.errors import PermanentError
from shared.events.models import (
    ChunksEmbedded,
    EmbeddedChunk,
    Envelope,
    TextExtracted,
    TextSegment,
    encode_vector,
)
from shared.ports import Tracker

SERVICE = "embedding"
CHUNK_INDEX_STRIDE = 100_000
"""chunk_index = part_index * stride + position in the part: unique per source, stable across replays."""
CHUNKS_PER_MESSAGE = 48
"""Chunks per ChunksEmbedded: text plus a 384-d vector is a few KB each, far below the 1 MB message limit."""


class Chunker(Protocol):
    """Cuts text into chunks the model can take whole."""

    def chunk(self, segments: Sequence[TextSegment]) -> list[Chunk]:
        """Chunks of the segments, in order."""


class Embedder(Protocol):
    """The embedding model."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """One unit-length vector per text."""


Result = list[tuple[TextExtracted, Sequence[Envelope] | PermanentError]]


async def embed_chunks(
    events: Sequence[TextExtracted], *, chunker: Chunker, embedder: Embedder, tracker: Tracker
) -> Result:
    """Chunk every event's text, embed all chunks in one pass, and emit them in message-sized batches."""
    planned: list[tuple[TextExtracted, list[Chunk]]] = []
    results: Result = []
    for event in events:
        # A source in several parts reports progress in parts; a single part, in chunks.
        multi = event.part_count > 1
        await tracker.started(
            event.source.source_id,
            SERVICE,
            unit="parts" if multi else "chunks",
            units_total=event.part_count if multi else None,
        )
        chunks = chunker.chunk(event.segments)
        if len(chunks) >= CHUNK_INDEX_STRIDE:
            results.append(
                (event, PermanentError("too_large", f"part {event.part_index} has {len(chunks)} chunks"))
            )
            continue
        planned.append((event, chunks))

    vectors = await embedder.embed([c.text for _, chunks in planned for c in chunks])
    position = 0
    for event, chunks in planned:
        embedded = [
            EmbeddedChunk(
                chunk_index=event.part_index * CHUNK_INDEX_STRIDE + chunk.index,
                text=chunk.text,
                token_count=chunk.token_count,
                vector=encode_vector(vectors[position + i]),
                page_start=chunk.page_start,
                page_end=chunk.page_end,
                start_seconds=chunk.start_seconds,
                end_seconds=chunk.end_seconds,
                confidence=chunk.confidence,
            )
            for i, chunk in enumerate(chunks)
        ]
        position += len(chunks)
        # An empty part still yields one (empty) batch, so indexing can tell when every part is in.
        batches = [
            embedded[i : i + CHUNKS_PER_MESSAGE] for i in range(0, len(embedded), CHUNKS_PER_MESSAGE)
        ] or [[]]
        outgoing: list[Envelope] = [
            ChunksEmbedded(
                **event.follow(f"ChunksEmbedded/{event.part_index}/{n}", producer=SERVICE),
                source=event.source,
                model=embedder.name,
                dimensions=embedder.dimensions,
                part_index=event.part_index,
                part_count=event.part_count,
                batch_index=n,
                batch_count=len(batches),
                chunks=batch,
            )
            for n, batch in enumerate(batches)
        ]
        source_id = event.source.source_id
        if event.part_index + 1 < event.part_count:
            await tracker.progressed(
                source_id, SERVICE, units_done=event.part_index + 1, units_total=event.part_count
            )
        else:
            done = event.part_count if event.part_count > 1 else len(chunks)
            await tracker.finished(source_id, SERVICE, units_done=done, next_stage="indexing")
        results.append((event, outgoing))
    return results
