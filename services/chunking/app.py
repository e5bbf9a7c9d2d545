"""Textbook-chunking worker: FastStream wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.chunking.adapters import PdfBooks, PostgresBookRows
from services.chunking.handlers import SERVICE, Limits, chunk_textbook, plan_textbook
from shared.broker import consumer_options
from shared.events import topics
from shared.events.models import TextbookPagesQueued, TextbookUploaded
from shared.service import Runtime
from shared.storage import LocalStorage
from shared.tracking import PostgresTracker

runtime = Runtime(SERVICE)
broker = runtime.broker
books = PdfBooks(LocalStorage(runtime.settings.storage_root), max_pages=runtime.settings.max_pdf_pages)
limits = Limits(
    max_pages=runtime.settings.max_pdf_pages, pages_per_range=runtime.settings.textbook_pages_per_range
)


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Database pool and runner for the life of the process."""
    async with runtime.started():
        yield


@broker.subscriber(
    topics.TEXTBOOK_UPLOADED,
    **consumer_options(runtime.settings, service=SERVICE, topic=topics.TEXTBOOK_UPLOADED),
)
async def on_textbook_uploaded(message: KafkaMessage) -> None:
    """Plan a book into page ranges."""
    await runtime.worker.handle(
        message.raw_message,
        TextbookUploaded,
        lambda event: plan_textbook(
            event,
            books=books,
            rows=PostgresBookRows(runtime.pool),
            tracker=PostgresTracker(runtime.pool),
            limits=limits,
        ),
    )


@broker.subscriber(
    topics.TEXTBOOK_PAGES, **consumer_options(runtime.settings, service=SERVICE, topic=topics.TEXTBOOK_PAGES)
)
async def on_textbook_pages(message: KafkaMessage) -> None:
    """Extract one page range of a book."""
    await runtime.worker.handle(
        message.raw_message,
        TextbookPagesQueued,
        lambda event: chunk_textbook(
            event, books=books, rows=PostgresBookRows(runtime.pool), tracker=PostgresTracker(runtime.pool)
        ),
    )


app = runtime.app(lifespan)
