"""Search: pure functions from a query to ranked, tenant-filtered hits (no FastAPI, no Qdrant, no model here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from shared.vectors.records import SearchHit

ContentType = Literal["transcripts", "photos", "textbooks", "notes"]
CONTENT_TYPES: tuple[ContentType, ...] = ("transcripts", "photos", "textbooks", "notes")
MAX_LIMIT = 50


class SearchRequest(BaseModel):
    """What the backend asks: one student's query, in one class or all of theirs."""

    user_id: uuid.UUID = Field(description="The student (users.id); hits are only ever theirs.")
    class_id: uuid.UUID | None = Field(default=None, description="One class (classes.id), or all of them.")
    query: str = Field(
        min_length=1, max_length=2000, description="What to look for.", examples=["chain rule"]
    )
    content_types: list[ContentType] | None = Field(
        default=None,
        description="Only these kinds of content (default: all).",
        examples=[["notes", "textbooks"]],
    )
    limit: int = Field(default=5, ge=1, le=MAX_LIMIT, description="How many hits at most.")


class Hit(BaseModel):
    """One chunk that matched, with where it came from."""

    score: float = Field(description="Cosine similarity to the query (1 is identical).")
    text: str
    source_id: uuid.UUID
    content_type: ContentType
    title: str | None = None
    class_id: uuid.UUID
    chunk_index: int
    page_start: int | None = Field(default=None, description="Textbooks: the page the chunk starts on.")
    page_end: int | None = None
    start_seconds: float | None = Field(default=None, description="Recordings: where the chunk starts.")
    end_seconds: float | None = None
    document_id: str = Field(description="The design's Chroma id of the same chunk.")
    metadata: dict[str, Any] = Field(description="Every payload field the chunk was indexed with.")


class SearchResponse(BaseModel):
    """The hits, best first, and what answered."""

    query: str
    store: Literal["qdrant"] = "qdrant"
    hits: list[Hit]
    took_ms: float = Field(description="Time spent embedding the query and searching, in milliseconds.")


class QueryEmbedder(Protocol):
    """Turns a query into the vector its chunks were embedded with."""

    async def __call__(self, text: str) -> list[float]: ...


class ChunkSearcher(Protocol):
    """The vector store's search, always filtered to one user (QdrantStore.search)."""

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        content_type: str | Sequence[str] | None = None,
        limit: int = 5,
    ) -> list[SearchHit]: ...


def to_hit(hit: SearchHit) -> Hit:
    """A store's hit as the API returns it."""
    meta = hit.metadata
    return Hit(
        score=hit.score,
        text=hit.text,
        source_id=meta["source_id"],
        content_type=meta["content_type"],
        title=meta.get("title"),
        class_id=meta["class_id"],
        chunk_index=int(meta.get("chunk_index", 0)),
        page_start=meta.get("page_start"),
        page_end=meta.get("page_end"),
        start_seconds=meta.get("start_seconds"),
        end_seconds=meta.get("end_seconds"),
        document_id=hit.document_id,
        metadata=meta,
    )


async def search_chunks(
    request: SearchRequest, *, embed: QueryEmbedder, store: ChunkSearcher, clock: Any
) -> SearchResponse:
    """Embed the query and return the user's best chunks; a hit of anyone else is never returned."""
    started = clock()
    vector = await embed(request.query)
    found = await store.search(
        vector,
        user_id=request.user_id,
        class_id=request.class_id,
        content_type=request.content_types,
        limit=request.limit,
    )
    hits = [to_hit(h) for h in found if h.metadata.get("user_id") == str(request.user_id)]
    return SearchResponse(query=request.query, hits=hits, took_ms=round((clock() - started) * 1000, 2))
