"""Search: pure functions from a query to ranked, tenant-filtered hits (no FastAPI, no Qdrant, no model here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from shared.vectors.records import DEFAULT_SEARCH_MODE, ScoreKind, SearchHit, SearchMode, SharedSource

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
    mode: SearchMode | None = Field(
        default=None,
        description=(
            "hybrid: the embedding and BM25 over the words, fused; dense: the embedding only (meaning); sparse: "
            "BM25 only (exact words). Default: the service's LMGPA_SEARCH_MODE."
        ),
    )
    include_shared: bool = Field(
        default=False,
        description=(
            "Also search the sources classmates share with this student (shared_content rows over accepted "
            "classmate_connections, read at this search: a revoked share is gone at once), in any class."
        ),
    )


class Hit(BaseModel):
    """One chunk that matched, with where it came from."""

    score: float = Field(
        description=(
            "How well it matched, by score_kind: cosine (dense: similarity, 1 is identical), bm25 (sparse: "
            "unbounded, higher is better), rrf (hybrid: reciprocal-rank fusion of both rankings, from ranks only) "
            "or dbsf; only cosines compare across queries."
        )
    )
    score_kind: ScoreKind = Field(description="What score is: cosine, bm25, rrf or dbsf.")
    shared_by: uuid.UUID | None = Field(
        default=None,
        description="The classmate (users.id) who shares this source; none for the student's own.",
    )
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
    mode: SearchMode = Field(description="How the hits were ranked.")
    hits: list[Hit]
    took_ms: float = Field(description="Time spent embedding the query and searching, in milliseconds.")


class QueryEmbedder(Protocol):
    """Turns a query into the vector its chunks were embedded with."""

    async def __call__(self, text: str) -> list[float]: ...


class ChunkSearcher(Protocol):
    """The vector store's search, always filtered to one user and what is shared with them (QdrantStore.search)."""

    async def search(
        self,
        vector: Sequence[float] | None = None,
        *,
        query_text: str | None = None,
        mode: SearchMode | None = None,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        content_type: str | Sequence[str] | None = None,
        shared: Sequence[SharedSource] = (),
        limit: int = 5,
    ) -> list[SearchHit]: ...


class SharedSources(Protocol):
    """The sources shared with a student now (shared.db.sharing.sources_shared_with)."""

    async def __call__(self, user_id: uuid.UUID) -> Sequence[SharedSource]: ...


def to_hit(hit: SearchHit, *, shared_by: uuid.UUID | None = None) -> Hit:
    """A store's hit as the API returns it."""
    meta = hit.metadata
    return Hit(
        score=hit.score,
        score_kind=hit.score_kind,
        shared_by=shared_by,
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


def allowed_hits(
    found: Sequence[SearchHit], *, user_id: uuid.UUID, shared: Sequence[SharedSource]
) -> list[Hit]:
    """The hits the student may see, with who shares each one that is not theirs; anything else the store
    returned is dropped (it filters on the same, a second look costs nothing)."""
    sharer = {(str(s.source_id), str(s.shared_by)): s.shared_by for s in shared}
    hits = []
    for hit in found:
        owner, source = str(hit.metadata.get("user_id")), str(hit.metadata.get("source_id"))
        if owner == str(user_id):
            hits.append(to_hit(hit))
        elif (source, owner) in sharer:
            hits.append(to_hit(hit, shared_by=sharer[(source, owner)]))
    return hits


async def search_chunks(
    request: SearchRequest,
    *,
    embed: QueryEmbedder,
    store: ChunkSearcher,
    clock: Any,
    default_mode: SearchMode = DEFAULT_SEARCH_MODE,
    shares: SharedSources | None = None,
) -> SearchResponse:
    """Embed the query (unless BM25 alone ranks) and return the user's best chunks, with those of the sources
    shared with them if asked; a hit of anyone else is never returned."""
    started = clock()
    mode = request.mode or default_mode
    shared: Sequence[SharedSource] = ()
    if request.include_shared:
        if shares is None:
            raise ValueError("include_shared needs the sharing tables (a database)")
        shared = await shares(request.user_id)
    vector = None if mode == "sparse" else await embed(request.query)
    found = await store.search(
        vector,
        query_text=request.query,
        mode=mode,
        user_id=request.user_id,
        class_id=request.class_id,
        content_type=request.content_types,
        shared=shared,
        limit=request.limit,
    )
    hits = allowed_hits(found, user_id=request.user_id, shared=shared)
    return SearchResponse(
        query=request.query, mode=mode, hits=hits, took_ms=round((clock() - started) * 1000, 2)
    )
