"""Search API: FastAPI wiring only. The model loads once per process; every query reads Qdrant (and PostgreSQL for
what classmates share)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException, Response

from services.search.adapters import BatchingQueryEmbedder, PostgresShares
from services.search.handlers import SearchRequest, SearchResponse, search_chunks
from shared.db.pool import create_pool, ping
from shared.embedder import SentenceEmbedder
from shared.errors import PermanentError, TransientError
from shared.logging import configure_logging, get_logger
from shared.settings import get_settings
from shared.vectors.qdrant import QdrantStore, make_qdrant_client

SERVICE = "search"
settings = get_settings()
configure_logging(service=SERVICE, fmt=settings.log_format, level=settings.log_level)
log = get_logger(SERVICE)


class State:
    """Opened once in the lifespan."""

    embed: BatchingQueryEmbedder
    store: QdrantStore
    pool: asyncpg.Pool
    shares: PostgresShares
    ready = False


state = State()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Load the model, open Qdrant and PostgreSQL and warm them up before the first request."""
    state.pool = await create_pool(settings.database_dsn(), min_size=1, max_size=4)
    state.shares = PostgresShares(state.pool)
    client = make_qdrant_client(settings)
    state.store = QdrantStore.from_settings(client, settings)
    try:
        await state.store.ensure_collection()  # a search before the first upload finds nothing, not an error
        state.embed = BatchingQueryEmbedder(SentenceEmbedder.from_settings(settings))
        state.embed.start()
        await state.embed("warm up")
        state.ready = True
        log.info(
            "worker_started",
            qdrant=settings.qdrant_url,
            collection=settings.qdrant_collection,
            mode=state.store.search_mode,
        )
        yield
    finally:
        state.ready = False
        if hasattr(state, "embed"):
            await state.embed.close()
        await client.close()
        await state.pool.close()
        log.info("worker_stopped")


app = FastAPI(
    title="lmgpa search",
    version="1",
    summary="Semantic search of one student's indexed content (Qdrant), for the platform's RAG.",
    lifespan=lifespan,
)


@app.post("/v1/search", response_model=SearchResponse)
async def search(request: SearchRequest) -> SearchResponse:
    """The student's best chunks for a query: only ever their own content, best first."""
    try:
        return await search_chunks(
            request,
            embed=state.embed,
            store=state.store,
            clock=time.perf_counter,
            default_mode=state.store.search_mode,
            shares=state.shares,
        )
    except TransientError as error:
        raise HTTPException(status_code=503, detail=f"{error.code}: {error.reason}") from error
    except PermanentError as error:  # Qdrant refused the request itself: a misconfigured store, not an outage
        raise HTTPException(status_code=502, detail=f"{error.code}: {error.reason}") from error
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as error:
        raise HTTPException(status_code=503, detail=f"postgres_unavailable: {error}"[:300]) from error
    except ValueError as error:  # a mode the store cannot serve (local mode has no BM25)
        raise HTTPException(status_code=422, detail=str(error)) from error


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@app.get("/ready")
async def ready(response: Response) -> dict[str, bool]:
    """Readiness: the model is loaded, Qdrant answered, and PostgreSQL (the sharing tables) answers now."""
    ready = state.ready
    if ready:
        try:
            await asyncio.wait_for(ping(state.pool), timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            ready = False
    if not ready:
        response.status_code = 503
    return {"ready": ready}
