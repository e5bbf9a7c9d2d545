"""The MCP debugging tools over Chroma as plain typed functions, bound to one user: the tenancy rule lives here.

A tool names a collection as ``{user_id}_{class_id}_{content_type}``. Only the bound user's well-formed names are
ever passed to the store; any other name (another user's, a malformed one, a case or path variant) is refused
with the same error as an absent collection of the user's own, before the store is asked anything, so neither the
answer nor its timing says whether another user's collection exists. Inside a collection, documents are read
with ``user_id == bound user and visible == True`` (a reprocess writes its new generation hidden until it is
complete), and embeddings are never read.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.events.models import CONTENT_TYPE_OF_KIND, ContentType
from shared.vectors.records import (
    CollectionStats,
    SearchHit,
    StoredDocument,
    chroma_collection_name,
    visible_to,
)

CONTENT_TYPES: tuple[ContentType, ...] = tuple(CONTENT_TYPE_OF_KIND.values())
"""The design's content types, the last part of every collection name."""
_CONTENT_TYPE_OF_NAME: dict[str, ContentType] = {c: c for c in CONTENT_TYPES}
MAX_LIMIT = 100
"""The most documents or hits one call returns."""
MAX_SOURCES_LISTED = 100
"""The most sources a collection's info lists (it counts all of them)."""

Where = dict[str, Any]
"""A Chroma metadata filter."""
QueryEmbedder = Callable[[str], Awaitable[list[float]]]
"""Embeds a search query with the pipeline's model."""


class ToolRefused(ValueError):
    """A request the tools do not answer; the message is meant for the caller and reveals nothing of others."""


class CollectionNotFound(ToolRefused):
    """The name is not one of the bound user's existing collections (whoever else's it may be)."""


class DocumentStore(Protocol):
    """The port to Chroma the tools need; every name it is given has already been authorised."""

    async def collection_names(self) -> list[str]:
        """The name of every collection on the server."""

    async def collection_stats(self, name: str) -> CollectionStats | None:
        """A collection's dimension, distance and metadata; None if it does not exist."""

    async def documents(
        self, name: str, *, where: Where, limit: int | None, with_text: bool
    ) -> list[StoredDocument] | None:
        """Documents matching ``where`` (at most ``limit``); None if the collection does not exist."""

    async def count(self, name: str, *, where: Where) -> int | None:
        """How many documents match ``where``; None if the collection does not exist."""

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
    ) -> list[SearchHit]:
        """The nearest visible documents of the user's class collections (ChromaStore.search)."""


@dataclass(frozen=True)
class CollectionName:
    """A parsed, authorised collection name."""

    user_id: uuid.UUID
    class_id: uuid.UUID
    content_type: ContentType

    @property
    def name(self) -> str:
        """The collection's name as the pipeline writes it."""
        return chroma_collection_name(self.user_id, self.class_id, self.content_type)


def not_found_message(user_id: uuid.UUID) -> str:
    """The one refusal for every name that is not an existing collection of the user (no name is echoed)."""
    return (
        f"no such collection for user {user_id}: collection names are "
        f"{user_id}_<class_id>_<{'|'.join(CONTENT_TYPES)}> with lower-case UUIDs; "
        "chroma_list_collections lists the existing ones"
    )


def parse_owned_collection(name: str, user_id: uuid.UUID) -> CollectionName | None:
    """The parsed name if it is exactly a well-formed collection name of this user, else None."""
    parts = name.split("_")
    if len(parts) != 3:
        return None
    user_part, class_part, content_part = parts
    content_type = _CONTENT_TYPE_OF_NAME.get(content_part)
    if content_type is None:
        return None
    try:
        owner, class_id = uuid.UUID(user_part), uuid.UUID(class_part)
    except ValueError:
        return None
    parsed = CollectionName(user_id=owner, class_id=class_id, content_type=content_type)
    # The canonical spelling only: uuid.UUID also reads upper case, braces, "urn:uuid:" and missing hyphens.
    if owner != user_id or parsed.name != name:
        return None
    return parsed


def authorise_collection(name: str, user_id: uuid.UUID) -> CollectionName:
    """The parsed name of one of this user's collections; CollectionNotFound for any other string."""
    parsed = parse_owned_collection(name, user_id)
    if parsed is None:
        raise CollectionNotFound(not_found_message(user_id))
    return parsed


def check_limit(limit: int) -> int:
    """The limit if it is within 1..MAX_LIMIT; ToolRefused otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ToolRefused(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


# -------------------------------------------------------------------------------------------- the results


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class CollectionEntry(_Result):
    """One of the user's collections."""

    name: str
    class_id: str
    content_type: str


class CollectionList(_Result):
    """The bound user's collections."""

    user_id: str
    collections: list[CollectionEntry]


class Document(_Result):
    """A stored chunk: its id, text and metadata (never its embedding)."""

    document_id: str
    text: str
    metadata: dict[str, Any]


class Hit(Document):
    """A search match: cosine similarity (1 is identical) and the collection it came from."""

    score: float
    collection: str


class SearchResult(_Result):
    """The best matches for a query in one class of the user's, best first."""

    query: str
    class_id: str
    content_types: list[str]
    hits: list[Hit]


class SourceSummary(_Result):
    """One source's visible chunks in a collection."""

    source_id: str
    title: str | None
    date: str | None
    chunks: int
    generation: int | None


class CollectionInfo(_Result):
    """A collection of the user's: what it holds and how Chroma keeps it."""

    name: str
    class_id: str
    content_type: str
    documents: int = Field(description="Visible documents of the user (what searches see).")
    dimension: int | None = Field(description="Embedding size, once a vector is in.")
    distance: str | None = Field(description="The HNSW distance (the pipeline uses cosine).")
    models: list[str] = Field(description="Embedding models recorded with the documents.")
    low_confidence_documents: int = Field(description="Chunks whose OCR or speech recognition was unsure.")
    source_count: int
    sources: list[SourceSummary] = Field(description=f"At most {MAX_SOURCES_LISTED}, by title.")
    metadata: dict[str, Any] = Field(description="The collection's own metadata, if any.")


class PeekResult(_Result):
    """The first documents of a collection of the user's."""

    collection: str
    documents: list[Document]


class CountResult(_Result):
    """How many visible documents of the user a collection holds."""

    collection: str
    count: int


# ---------------------------------------------------------------------------------------------- the tools


class ChromaTools:
    """The five tools for one user: every answer is about that user's collections and visible documents only."""

    def __init__(self, store: DocumentStore, embed_query: QueryEmbedder, *, user_id: uuid.UUID) -> None:
        self.store = store
        self.embed_query = embed_query
        self.user_id = user_id

    async def list_collections(self) -> CollectionList:
        """Every collection of the user's, by name."""
        owned = [
            parsed
            for name in await self.store.collection_names()
            if (parsed := parse_owned_collection(name, self.user_id)) is not None
        ]
        return CollectionList(
            user_id=str(self.user_id),
            collections=[
                CollectionEntry(name=c.name, class_id=str(c.class_id), content_type=c.content_type)
                for c in sorted(owned, key=lambda c: c.name)
            ],
        )

    async def search(
        self, class_id: str, query: str, content_type: str | None = None, limit: int = 5
    ) -> SearchResult:
        """The user's best matches for a query in one class (one content type, or all of them)."""
        try:
            klass = uuid.UUID(class_id.strip())
        except ValueError:
            raise ToolRefused("class_id must be a UUID") from None
        if content_type is not None and content_type not in CONTENT_TYPES:
            raise ToolRefused(f"content_type must be one of {', '.join(CONTENT_TYPES)} (or omitted for all)")
        if not query.strip():
            raise ToolRefused("query is empty")
        limit = check_limit(limit)
        content_types = [content_type] if content_type else list(CONTENT_TYPES)
        vector = await self.embed_query(query)
        hits = await self.store.search(
            vector, user_id=self.user_id, class_id=klass, content_types=content_types, limit=limit
        )
        results: list[Hit] = []
        for hit in hits:
            meta = hit.metadata
            if meta.get("user_id") != str(self.user_id) or meta.get("visible") is not True:
                continue  # the store filters on both already; a second look costs nothing
            collection = chroma_collection_name(self.user_id, klass, str(meta.get("content_type")))
            results.append(
                Hit(
                    document_id=hit.document_id,
                    text=hit.text,
                    metadata=dict(meta),
                    score=hit.score,
                    collection=collection,
                )
            )
        return SearchResult(
            query=query, class_id=str(klass), content_types=content_types, hits=results[:limit]
        )

    async def collection_info(self, collection_name: str) -> CollectionInfo:
        """A collection's visible document count, sources, models, dimension and distance."""
        parsed = authorise_collection(collection_name, self.user_id)
        stats = await self.store.collection_stats(parsed.name)
        documents = await self.store.documents(
            parsed.name, where=visible_to(self.user_id), limit=None, with_text=False
        )
        if stats is None or documents is None:
            raise CollectionNotFound(not_found_message(self.user_id))
        by_source: dict[str, list[dict[str, Any]]] = {}
        for doc in documents:
            by_source.setdefault(str(doc.metadata.get("source_id")), []).append(doc.metadata)
        sources = [
            SourceSummary(
                source_id=source_id,
                title=_str_or_none(metas[0].get("title")),
                date=_str_or_none(metas[0].get("date")),
                chunks=len(metas),
                generation=_int_or_none(metas[0].get("generation")),
            )
            for source_id, metas in by_source.items()
        ]
        sources.sort(key=lambda s: (s.title or "", s.source_id))
        return CollectionInfo(
            name=parsed.name,
            class_id=str(parsed.class_id),
            content_type=parsed.content_type,
            documents=len(documents),
            dimension=stats.dimension,
            distance=stats.distance,
            models=sorted({str(d.metadata["model"]) for d in documents if "model" in d.metadata}),
            low_confidence_documents=sum(1 for d in documents if d.metadata.get("low_confidence") is True),
            source_count=len(sources),
            sources=sources[:MAX_SOURCES_LISTED],
            metadata=dict(stats.metadata),
        )

    async def peek(self, collection_name: str, limit: int = 10) -> PeekResult:
        """The first ``limit`` visible documents of a collection (text and metadata, no embeddings)."""
        parsed = authorise_collection(collection_name, self.user_id)
        limit = check_limit(limit)
        documents = await self.store.documents(
            parsed.name, where=visible_to(self.user_id), limit=limit, with_text=True
        )
        if documents is None:
            raise CollectionNotFound(not_found_message(self.user_id))
        return PeekResult(
            collection=parsed.name,
            documents=[
                Document(document_id=d.document_id, text=d.text or "", metadata=dict(d.metadata))
                for d in documents[:limit]
            ],
        )

    async def count(self, collection_name: str) -> CountResult:
        """How many visible documents of the user a collection holds."""
        parsed = authorise_collection(collection_name, self.user_id)
        count = await self.store.count(parsed.name, where=visible_to(self.user_id))
        if count is None:
            raise CollectionNotFound(not_found_message(self.user_id))
        return CountResult(collection=parsed.name, count=count)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
