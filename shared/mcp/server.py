"""The MCP server: the tools of shared.mcp.tools for one user, over a real Chroma server and the pipeline's model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from chromadb.errors import ChromaError, NotFoundError
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from shared.errors import TransientError
from shared.events.models import ContentType
from shared.logging import configure_logging
from shared.mcp.tools import (
    MAX_LIMIT,
    ChromaTools,
    CollectionInfo,
    CollectionList,
    CollectionStats,
    CountResult,
    PeekResult,
    SearchResult,
    StoredDocument,
    ToolRefused,
    Where,
)
from shared.settings import Settings
from shared.vectors.chroma import ChromaStore, make_chroma_client
from shared.vectors.records import SearchHit

if TYPE_CHECKING:
    from chromadb.api import AsyncClientAPI

    from shared.embedder import SentenceEmbedder

TOOL_NAMES = (
    "chroma_list_collections",
    "chroma_search",
    "chroma_get_collection_info",
    "chroma_peek_documents",
    "chroma_count_documents",
)
READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

CollectionArg = Annotated[
    str,
    Field(description="A collection of this user's: <user_id>_<class_id>_<content_type>, as listed."),
]
LimitArg = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"How many, 1 to {MAX_LIMIT}.")]


class ChromaDocuments:
    """The tools' DocumentStore over a Chroma server; the client is made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: AsyncClientAPI | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> AsyncClientAPI:
        """The async HTTP client, connected once."""
        async with self._lock:
            if self._client is None:
                self._client = await make_chroma_client(self.settings)
            return self._client

    async def _collection(self, name: str) -> Any:
        try:
            return await (await self.client()).get_collection(name, embedding_function=None)
        except NotFoundError:
            return None

    async def collection_names(self) -> list[str]:
        """The name of every collection on the server."""
        return [c.name for c in await (await self.client()).list_collections()]

    async def collection_stats(self, name: str) -> CollectionStats | None:
        """A collection's dimension, distance and metadata; None if it does not exist."""
        collection = await self._collection(name)
        if collection is None:
            return None
        configuration: dict[str, Any] = dict(collection.configuration_json or {})
        index = configuration.get("hnsw") or configuration.get("spann") or {}
        return CollectionStats(
            dimension=collection.get_model().dimension,
            distance=index.get("space") if isinstance(index, dict) else None,
            metadata=dict(collection.metadata or {}),
        )

    async def documents(
        self, name: str, *, where: Where, limit: int | None, with_text: bool
    ) -> list[StoredDocument] | None:
        """Documents matching ``where`` (at most ``limit``), embeddings left out; None if no such collection."""
        collection = await self._collection(name)
        if collection is None:
            return None
        found = await collection.get(
            where=where, limit=limit, include=["documents", "metadatas"] if with_text else ["metadatas"]
        )
        texts: list[str | None] = list(found["documents"] or []) if with_text else [None] * len(found["ids"])
        metadatas = found["metadatas"] or []
        return [
            StoredDocument(document_id=doc_id, text=text, metadata=dict(meta))
            for doc_id, text, meta in zip(found["ids"], texts, metadatas, strict=True)
        ]

    async def count(self, name: str, *, where: Where) -> int | None:
        """How many documents match ``where``; None if no such collection."""
        collection = await self._collection(name)
        if collection is None:
            return None
        return len((await collection.get(where=where, include=[]))["ids"])

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
    ) -> list[SearchHit]:
        """ChromaStore.search: the user's visible documents only."""
        store = ChromaStore(await self.client())
        return await store.search(
            vector, user_id=user_id, class_id=class_id, content_types=content_types, limit=limit
        )


class LazyQueryEmbedder:
    """The pipeline's embedding model, loaded on the first search (starting and listing stay instant)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedder: SentenceEmbedder | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, text: str) -> list[float]:
        """The query's unit-length vector, as the pipeline embeds chunks (shared.cli.backend.search_chunks)."""
        async with self._lock:
            if self._embedder is None:
                from shared.embedder import SentenceEmbedder

                self._embedder = await asyncio.to_thread(
                    SentenceEmbedder,
                    self.settings.embedding_model_path,
                    name=self.settings.embedding_model_name,
                )
        vector: list[float] = (await self._embedder.embed([text]))[0].tolist()
        return vector


@contextmanager
def _answers() -> Iterator[None]:
    """Refusals and Chroma outages become tool errors the caller can read (never a crash's details)."""
    try:
        yield
    except ToolRefused as error:
        raise ToolError(str(error)) from error
    except (TransientError, ChromaError, httpx.TransportError, ConnectionError) as error:
        raise ToolError(
            f"Chroma did not answer ({type(error).__name__}): is the server at LMGPA_CHROMA_URL running?"
        ) from error


def instructions(user_id: uuid.UUID) -> str:
    """What the server tells its client about itself."""
    return (
        f"Read-only debugging tools over the Chroma collections of one student, user {user_id}. "
        f"Collections are named {user_id}_<class_id>_<transcripts|photos|textbooks|notes>; "
        "start with chroma_list_collections. Only this user's visible documents are shown, never embeddings; "
        "any other name is answered as a collection that does not exist."
    )


def build_server(tools: ChromaTools) -> MCPServer:
    """The MCP server exposing the five tools, all bound to ``tools.user_id``."""
    server: MCPServer = MCPServer(
        name="lmgpa-chroma", instructions=instructions(tools.user_id), warn_on_duplicate_tools=True
    )

    @server.tool(name="chroma_list_collections", annotations=READ_ONLY)
    async def chroma_list_collections() -> CollectionList:
        """List this user's Chroma collections (name, class_id, content_type)."""
        with _answers():
            return await tools.list_collections()

    @server.tool(name="chroma_search", annotations=READ_ONLY)
    async def chroma_search(
        class_id: Annotated[str, Field(description="The class's UUID.")],
        query: Annotated[str, Field(description="What to look for, in plain words.")],
        content_type: Annotated[
            ContentType | None, Field(description="Search one content type only (default: all four).")
        ] = None,
        limit: LimitArg = 5,
    ) -> SearchResult:
        """Semantic search in one of this user's classes: best matches first, with score, text and metadata."""
        with _answers():
            return await tools.search(class_id, query, content_type, limit)

    @server.tool(name="chroma_get_collection_info", annotations=READ_ONLY)
    async def chroma_get_collection_info(collection_name: CollectionArg) -> CollectionInfo:
        """Describe one of this user's collections: document count, sources, models, dimension, distance."""
        with _answers():
            return await tools.collection_info(collection_name)

    @server.tool(name="chroma_peek_documents", annotations=READ_ONLY)
    async def chroma_peek_documents(collection_name: CollectionArg, limit: LimitArg = 10) -> PeekResult:
        """Show the first documents of one of this user's collections (text and metadata, no embeddings)."""
        with _answers():
            return await tools.peek(collection_name, limit)

    @server.tool(name="chroma_count_documents", annotations=READ_ONLY)
    async def chroma_count_documents(collection_name: CollectionArg) -> CountResult:
        """Count the visible documents in one of this user's collections."""
        with _answers():
            return await tools.count(collection_name)

    return server


def make_server(settings: Settings, *, user_id: uuid.UUID) -> MCPServer:
    """The server for one user over the configured Chroma server and the pipeline's embedding model."""
    return build_server(ChromaTools(ChromaDocuments(settings), LazyQueryEmbedder(settings), user_id=user_id))


async def serve_stdio(settings: Settings, *, user_id: uuid.UUID) -> None:
    """Serve the tools on stdin/stdout until the client goes away (logs go to stderr: stdout is the protocol)."""
    configure_logging(service="mcp", fmt=settings.log_format, level=settings.log_level)
    await make_server(settings, user_id=user_id).run_stdio_async()
