"""The MCP server: the tools of shared.mcp.tools and shared.mcp.diagnosis for one user, over the real Chroma and
Qdrant servers, PostgreSQL and the pipeline's model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import asyncpg
import httpx
from chromadb.errors import ChromaError
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from shared.db.pool import create_pool
from shared.errors import TransientError
from shared.events.models import ContentType
from shared.logging import configure_logging
from shared.mcp.adapters import ChromaIndex, PostgresRecords, QdrantIndex
from shared.mcp.diagnosis import DiagnosisTools, QdrantSearchResult, SourceDiagnosis, WhyNotFound
from shared.mcp.tools import (
    MAX_LIMIT,
    ChromaTools,
    CollectionInfo,
    CollectionList,
    CountResult,
    PeekResult,
    SearchResult,
    ToolRefused,
)
from shared.settings import Settings
from shared.vectors.chroma import ChromaStore
from shared.vectors.qdrant import QdrantStore, make_qdrant_client
from shared.vectors.records import SearchMode

if TYPE_CHECKING:
    from shared.embedder import SentenceEmbedder

TOOL_NAMES = (
    "chroma_list_collections",
    "chroma_search",
    "chroma_get_collection_info",
    "chroma_peek_documents",
    "chroma_count_documents",
    "qdrant_search",
    "diagnose_source",
    "why_not_found",
)
READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

CollectionArg = Annotated[
    str,
    Field(description="A collection of this user's: <user_id>_<class_id>_<content_type>, as listed."),
]
ClassArg = Annotated[str, Field(description="The class's UUID.")]
QueryArg = Annotated[str, Field(description="What to look for, in plain words.")]
ContentTypeArg = Annotated[
    ContentType | None, Field(description="Search one content type only (default: all four).")
]
LimitArg = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"How many, 1 to {MAX_LIMIT}.")]


class LazyQueryEmbedder:
    """The pipeline's embedding model, loaded once, on the first search (starting and listing stay instant)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedder: SentenceEmbedder | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, text: str) -> list[float]:
        """The query's vector, as the pipeline makes them (SentenceEmbedder.embed_query)."""
        async with self._lock:
            if self._embedder is None:
                from shared.embedder import SentenceEmbedder

                self._embedder = await asyncio.to_thread(SentenceEmbedder.from_settings, self.settings)
        return await self._embedder.embed_query(text)


@contextmanager
def _answers(servers: str = "Chroma", variables: str = "LMGPA_CHROMA_URL") -> Iterator[None]:
    """Refusals and store outages become tool errors the caller can read (never a crash's details)."""
    try:
        yield
    except ToolRefused as error:
        raise ToolError(str(error)) from error
    except (
        TransientError,
        ChromaError,
        httpx.TransportError,
        ConnectionError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as error:
        raise ToolError(
            f"{servers} did not answer ({type(error).__name__}): are the servers at {variables} running?"
        ) from error


_ALL_SERVERS = ("PostgreSQL, Qdrant or Chroma", "LMGPA_DATABASE_URL, LMGPA_QDRANT_URL and LMGPA_CHROMA_URL")


def instructions(user_id: uuid.UUID) -> str:
    """What the server tells its client about itself."""
    return (
        f"Read-only debugging tools over the pipeline and vector stores of one student, user {user_id}. "
        "diagnose_source says where a source is (stages, attempts, errors, chunks per store, a verdict); "
        "why_not_found says where a source ranks for a query in Qdrant and Chroma and why it may not be found; "
        "qdrant_search and chroma_search search one class. "
        f"Chroma collections are named {user_id}_<class_id>_<transcripts|photos|textbooks|notes>; "
        "start with chroma_list_collections. Only this user's sources and visible documents are shown, never "
        "embeddings; any other name or source is answered as one that does not exist."
    )


def build_server(tools: ChromaTools, diagnosis: DiagnosisTools) -> MCPServer:
    """The MCP server exposing the eight tools, all bound to ``tools.user_id`` (the same as diagnosis's)."""
    if tools.user_id != diagnosis.user_id:
        raise ValueError("both sets of tools must be bound to the same user")
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
        class_id: ClassArg,
        query: QueryArg,
        content_type: ContentTypeArg = None,
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

    @server.tool(name="qdrant_search", annotations=READ_ONLY)
    async def qdrant_search(
        class_id: ClassArg,
        query: QueryArg,
        content_type: ContentTypeArg = None,
        limit: LimitArg = 5,
        mode: Annotated[
            SearchMode | None,
            Field(description="hybrid, dense or sparse (default: the search API's, LMGPA_SEARCH_MODE)."),
        ] = None,
    ) -> QdrantSearchResult:
        """Search one of this user's classes in Qdrant, as the search API does: best first, with score, its kind,
        text and metadata."""
        with _answers("Qdrant", "LMGPA_QDRANT_URL"):
            return await diagnosis.qdrant_search(class_id, query, content_type, limit, mode)

    @server.tool(name="diagnose_source", annotations=READ_ONLY)
    async def diagnose_source(
        source_id: Annotated[
            str | None, Field(description="The source's id (the content row's UUID).")
        ] = None,
        title: Annotated[
            str | None, Field(description="Or its title (any case; part of it finds it too; newest first).")
        ] = None,
    ) -> SourceDiagnosis:
        """Where one of this user's sources is in the pipeline: status, each stage with attempts and last error,
        chunk counts in PostgreSQL, Qdrant and Chroma, vector_id, and a one-line verdict."""
        with _answers(*_ALL_SERVERS):
            return await diagnosis.diagnose_source(source_id, title)

    @server.tool(name="why_not_found", annotations=READ_ONLY)
    async def why_not_found(
        class_id: Annotated[str, Field(description="The class searched (UUID).")],
        query: Annotated[str, Field(description="The query that does not find it.")],
        source_id: Annotated[
            str | None, Field(description="The source expected (default: show which sources rank best).")
        ] = None,
        title: Annotated[
            str | None, Field(description="Or the source's title (any case; part of it finds it too).")
        ] = None,
    ) -> WhyNotFound:
        """Where a source's best chunk ranks for a query in Qdrant (the search API's mode) and Chroma, with its
        score and an excerpt, and every reason it may not be found; without a source, the class's best sources."""
        with _answers(*_ALL_SERVERS):
            return await diagnosis.why_not_found(class_id, query, source_id, title)

    return server


async def serve_stdio(settings: Settings, *, user_id: uuid.UUID) -> None:
    """Serve the tools for one user on stdin/stdout, over the configured Chroma server and the pipeline's
    embedding model, until the client goes away (logs go to stderr: stdout is the protocol)."""
    configure_logging(service="mcp", fmt=settings.log_format, level=settings.log_level)
    store = await ChromaStore.connect(settings)
    embedder = LazyQueryEmbedder(settings)
    tools = ChromaTools(store, embedder, user_id=user_id)
    # min_size 0: no connection until a diagnosis asks, so the server starts (and the Chroma tools work) at once.
    pool = await create_pool(settings.database_dsn(), min_size=0, max_size=2)
    qdrant = QdrantStore.from_settings(make_qdrant_client(settings), settings)
    diagnosis = DiagnosisTools(
        PostgresRecords(pool),
        QdrantIndex(qdrant),
        ChromaIndex(store),
        embedder,
        user_id=user_id,
        stall_seconds=settings.stall_seconds,
        search_mode=settings.search_mode,
        qdrant_collection=settings.qdrant_collection,
        clock=lambda: datetime.now(UTC),
    )
    try:
        await build_server(tools, diagnosis).run_stdio_async()
    finally:
        await pool.close()
        await qdrant.client.close()
