"""Indexing worker: FastStream wiring only. It alone writes the vector stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.indexing.adapters import PostgresLedger, PostgresReuseLedger
from services.indexing.handlers import SERVICE, delete_vectors, index_chunks, reuse_content
from shared.broker import consumer_options
from shared.events import topics
from shared.events.models import ChunksEmbedded, ContentReuseQueued, SourceDeleted
from shared.service import Runtime
from shared.tracking import PostgresTracker
from shared.vectors.chroma import ChromaStore
from shared.vectors.qdrant import QdrantStore, make_qdrant_client

runtime = Runtime(SERVICE)
broker = runtime.broker


class Stores:
    """Opened once in the lifespan."""

    qdrant: QdrantStore
    chroma: ChromaStore


stores = Stores()


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Open both vector stores (creating the Qdrant collection and its indexes) once per process."""
    settings = runtime.settings
    qdrant_client = make_qdrant_client(settings)
    stores.qdrant = QdrantStore.from_settings(qdrant_client, settings)
    await stores.qdrant.ensure_collection()
    stores.chroma = await ChromaStore.connect(settings)
    try:
        async with runtime.started():
            yield
    finally:
        await qdrant_client.close()


@broker.subscriber(
    topics.CHUNKS_EMBEDDED,
    **consumer_options(runtime.settings, service=SERVICE, topic=topics.CHUNKS_EMBEDDED, batch=True),
)
async def on_chunks_embedded(message: KafkaMessage) -> None:
    """Index a batch of embedded chunks."""
    await runtime.worker.handle_batch(
        message.raw_message,
        ChunksEmbedded,
        lambda events: index_chunks(
            events,
            stores=(stores.qdrant, stores.chroma),
            ledger=PostgresLedger(runtime.pool),
            tracker=PostgresTracker(runtime.pool),
            qdrant_collection=runtime.settings.qdrant_collection,
        ),
    )


@broker.subscriber(
    topics.CONTENT_REUSE, **consumer_options(runtime.settings, service=SERVICE, topic=topics.CONTENT_REUSE)
)
async def on_content_reuse(message: KafkaMessage) -> None:
    """Copy an identical upload's vectors and rows, or send the upload the normal way."""
    await runtime.worker.handle(
        message.raw_message,
        ContentReuseQueued,
        lambda event: reuse_content(
            event,
            stores=(stores.qdrant, stores.chroma),
            ledger=PostgresReuseLedger(runtime.pool),
            tracker=PostgresTracker(runtime.pool),
            qdrant_collection=runtime.settings.qdrant_collection,
        ),
    )


@broker.subscriber(
    topics.SOURCE_DELETED, **consumer_options(runtime.settings, service=SERVICE, topic=topics.SOURCE_DELETED)
)
async def on_source_deleted(message: KafkaMessage) -> None:
    """Remove a deleted source's, class's or user's vectors from both stores."""
    await runtime.worker.handle(
        message.raw_message,
        SourceDeleted,
        lambda event: delete_vectors(
            event, stores=(stores.qdrant, stores.chroma), ledger=PostgresLedger(runtime.pool)
        ),
    )


app = runtime.app(lifespan)
