"""Embedding worker: FastStream wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.embedding.adapters import MeteredEmbedder, TokenChunker
from services.embedding.handlers import SERVICE, embed_chunks
from shared.broker import consumer_options
from shared.chunking import HfTokenCounter
from shared.embedder import SentenceEmbedder
from shared.events import topics
from shared.events.models import TextExtracted
from shared.service import Runtime
from shared.tracking import PostgresTracker

runtime = Runtime(SERVICE)
broker = runtime.broker


class Models:
    """Loaded once in the lifespan, used by every message."""

    embedder: MeteredEmbedder
    chunker: TokenChunker


models = Models()


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Load the model and tokenizer once per process."""
    settings = runtime.settings
    embedder = SentenceEmbedder.from_settings(settings)
    models.embedder = MeteredEmbedder(embedder, runtime.metrics)
    models.chunker = TokenChunker(
        HfTokenCounter(embedder.path),
        target_tokens=settings.chunk_tokens,
        overlap_tokens=settings.chunk_overlap_tokens,
    )
    async with runtime.started():
        yield


@broker.subscriber(
    topics.TEXT_EXTRACTED,
    **consumer_options(
        runtime.settings,
        service=SERVICE,
        topic=topics.TEXT_EXTRACTED,
        batch=True,
        max_records=runtime.settings.embedding_batch_max_parts,
    ),
)
async def on_text_extracted(message: KafkaMessage) -> None:
    """Chunk and embed a batch of texts."""
    await runtime.worker.handle_batch(
        message.raw_message,
        TextExtracted,
        lambda events: embed_chunks(
            events,
            chunker=models.chunker,
            embedder=models.embedder,
            tracker=PostgresTracker(runtime.pool),
        ),
    )


app = runtime.app(lifespan)
