"""The MCP server: the tools of shared.mcp.tools for one user, over a real Chroma server and the pipeline's model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import httpx
from chromadb.errors import ChromaError
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
    CountResult,
    PeekResult,
    SearchResult,
    ToolRefused,
)
from shared.settings import Settings
from shared.vectors.chroma import ChromaStore, make_chroma_client

if TYPE_CHECKING:
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


async def serve_stdio(settings: Settings, *, user_id: uuid.UUID) -> None:
    """Serve the tools for one user on stdin/stdout, over the configured Chroma server and the pipeline's
    embedding model, until the client goes away (logs go to stderr: stdout is the protocol)."""
    configure_logging(service="mcp", fmt=settings.log_format, level=settings.log_level)
    store = ChromaStore(await make_chroma_client(settings))
    tools = ChromaTools(store, LazyQueryEmbedder(settings), user_id=user_id)
    await build_server(tools).run_stdio_async()
