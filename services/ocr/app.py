"""OCR worker: FastStream wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.ocr.adapters import PostgresPhotoRows, TesseractPhotos
from services.ocr.handlers import SERVICE, extract_text
from shared.broker import consumer_options
from shared.events import topics
from shared.events.models import PhotoUploaded
from shared.service import Runtime
from shared.storage import LocalStorage
from shared.tracking import PostgresTracker

runtime = Runtime(SERVICE)
broker = runtime.broker
photos = TesseractPhotos(
    LocalStorage(runtime.settings.storage_root), max_pixels=runtime.settings.max_image_pixels
)


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Database pool and runner for the life of the process."""
    async with runtime.started():
        yield


@broker.subscriber(
    topics.PHOTO_UPLOADED, **consumer_options(runtime.settings, service=SERVICE, topic=topics.PHOTO_UPLOADED)
)
async def on_photo_uploaded(message: KafkaMessage) -> None:
    """Read the text of one photo."""
    await runtime.worker.handle(
        message.raw_message,
        PhotoUploaded,
        lambda event: extract_text(
            event, photos=photos, rows=PostgresPhotoRows(runtime.pool), tracker=PostgresTracker(runtime.pool)
        ),
    )


app = runtime.app(lifespan)
