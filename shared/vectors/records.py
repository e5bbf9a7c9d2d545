"""What a chunk becomes in the vector stores: deterministic ids, the design's metadata, the collection names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.events.models import EmbeddedChunk, SourceRef, decode_vector

LOW_CONFIDENCE = 60.0
"""Below this (0-100), a chunk's text is flagged: OCR or speech recognition was unsure of some of it."""
POINT_NAMESPACE = uuid.UUID("0b9f7a1e-3f58-4a6f-8d8e-2f4a9c1d7e55")

SearchMode = Literal["hybrid", "dense", "sparse"]
"""How Qdrant ranks: the embedding (dense), BM25 over the words (sparse), or both fused (hybrid)."""
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")
DEFAULT_SEARCH_MODE: SearchMode = "sparse"
"""Measured (make bench-retrieval, two books of 220 and 311 pages): BM25 alone put the right chunk first for 87%
of known-item spans and rare-word queries on average, hybrid (RRF) for 57%, the embedding alone for 18%."""
ScoreKind = Literal["cosine", "bm25", "rrf", "dbsf"]
"""What a hit's score is: a cosine similarity, a BM25 score, or a fusion score (rank-based RRF, or DBSF: the
sum of each side's score normalised over its candidates); only the cosine is comparable across queries."""


def point_id(source_id: uuid.UUID, chunk_index: int, generation: int = 0) -> str:
    """Qdrant point id of a chunk: the same (source, chunk, generation) always gives the same id, so replays
    overwrite; a reprocess (generation > 0) writes beside the old points until it replaces them."""
    key = f"{source_id}:{chunk_index}" if generation == 0 else f"{source_id}:{generation}:{chunk_index}"
    return str(uuid.uuid5(POINT_NAMESPACE, key))


def document_id(source: SourceRef, chunk_index: int) -> str:
    """The design's Chroma id: ``<prefix>_<source>_<chunk>`` (a reprocess adds ``g<generation>``)."""
    if source.generation == 0:
        return f"{source.vector_id}_{chunk_index}"
    return f"{source.vector_id}_g{source.generation}_{chunk_index}"


def chroma_collection_name(user_id: uuid.UUID | str, class_id: uuid.UUID | str, content_type: str) -> str:
    """The design's Chroma collection: one per user, class and content type."""
    return f"{user_id}_{class_id}_{content_type}"


@dataclass(frozen=True)
class VectorRecord:
    """One chunk as both stores keep it."""

    point_id: str
    document_id: str
    vector: list[float]
    document: str
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def chroma_collection(self) -> str:
        """The Chroma collection this record belongs in."""
        meta = self.metadata
        return chroma_collection_name(str(meta["user_id"]), str(meta["class_id"]), str(meta["content_type"]))


def to_record(source: SourceRef, chunk: EmbeddedChunk, *, model: str) -> VectorRecord:
    """The design's document (id ``<prefix>_<source>_<chunk>``, metadata user/class/type/source/title/date/index)."""
    metadata: dict[str, Any] = {
        "user_id": str(source.user_id),
        "class_id": str(source.class_id),
        "content_type": source.content_type,
        "source_id": str(source.source_id),
        "title": source.title,
        "date": source.created_at.date().isoformat(),
        "chunk_index": chunk.chunk_index,
        "token_count": chunk.token_count,
        "model": model,
        "generation": source.generation,
        # A first run is searchable at once; a reprocess stays hidden until all of it is in, then is shown and
        # the previous generation removed in one step (shared.vectors.*.promote).
        "visible": source.generation == 0,
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "start_seconds": chunk.start_seconds,
        "end_seconds": chunk.end_seconds,
        "confidence": chunk.confidence,
        "low_confidence": None if chunk.confidence is None else chunk.confidence < LOW_CONFIDENCE,
    }
    return VectorRecord(
        point_id=point_id(source.source_id, chunk.chunk_index, source.generation),
        document_id=document_id(source, chunk.chunk_index),
        vector=decode_vector(chunk.vector),
        document=chunk.text,
        # Chroma refuses None values; an absent key means "not applicable".
        metadata={k: v for k, v in metadata.items() if v is not None},
    )


CHUNK_FIELDS: tuple[str, ...] = (
    "chunk_index",
    "token_count",
    "model",
    "page_start",
    "page_end",
    "start_seconds",
    "end_seconds",
    "confidence",
    "low_confidence",
)
"""The metadata a chunk's content decides (the same for every upload of the same bytes); the rest names the
source, its owner and its class, and is never copied from another upload."""


@dataclass(frozen=True)
class DonorVectors:
    """Where a completed source's vectors are, to be copied under another source (reuse of identical uploads)."""

    source_id: uuid.UUID
    user_id: uuid.UUID
    class_id: uuid.UUID
    content_type: str
    generation: int


def rekeyed(
    target: SourceRef,
    donor_metadata: dict[str, Any],
    *,
    vector: list[float],
    document: str,
) -> VectorRecord:
    """A donor chunk's content as a chunk of ``target``: its ids, owner, class, title and date are the target's;
    only the fields in CHUNK_FIELDS come from the donor. Visible at once for a first generation, as a computed
    upload's chunks are (``to_record``), hidden for a later one."""
    chunk = {k: donor_metadata[k] for k in CHUNK_FIELDS if donor_metadata.get(k) is not None}
    chunk_index = int(chunk["chunk_index"])
    metadata: dict[str, Any] = {
        **chunk,
        "user_id": str(target.user_id),
        "class_id": str(target.class_id),
        "content_type": target.content_type,
        "source_id": str(target.source_id),
        "title": target.title,
        "date": target.created_at.date().isoformat(),
        "generation": target.generation,
        "visible": target.generation == 0,
    }
    return VectorRecord(
        point_id=point_id(target.source_id, chunk_index, target.generation),
        document_id=document_id(target, chunk_index),
        vector=vector,
        document=document,
        metadata=metadata,
    )


@dataclass(frozen=True)
class SearchHit:
    """One match of a search, from either store."""

    score: float
    document_id: str
    text: str
    metadata: dict[str, Any]
    score_kind: ScoreKind = "cosine"


@dataclass(frozen=True)
class SharedSource:
    """A source a classmate shares with the asker (shared_content, over an accepted connection)."""

    source_id: uuid.UUID
    shared_by: uuid.UUID


def newest_generation_only(hits: list[SearchHit]) -> list[SearchHit]:
    """Each source's hits of its newest generation only: while a reprocess is shown (new chunks made visible,
    then the old ones deleted), a reader sees the new version or the old one, never both."""
    newest: dict[str, int] = {}
    for hit in hits:
        source, generation = str(hit.metadata.get("source_id")), int(hit.metadata.get("generation", 0))
        newest[source] = max(newest.get(source, generation), generation)
    return [
        h for h in hits if int(h.metadata.get("generation", 0)) == newest[str(h.metadata.get("source_id"))]
    ]


@dataclass(frozen=True)
class StoredDocument:
    """One document as a store returns it for reading: never its embedding."""

    document_id: str
    text: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CollectionStats:
    """What a store knows of a collection itself."""

    dimension: int | None
    distance: str | None
    metadata: dict[str, Any]


def visible_to(user_id: uuid.UUID | str) -> dict[str, Any]:
    """Chroma's filter for one user's documents that readers see (not a reprocess's hidden generation)."""
    return {"$and": [{"user_id": str(user_id)}, {"visible": True}]}
