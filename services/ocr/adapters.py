"""OCR's side effects: Pillow and Tesseract (off the event loop, single-threaded), and the photos row."""

from __future__ import annotations

import asyncio

import asyncpg

from services.ocr.handlers import PhotoText
from shared.db import sources
from shared.events.models import SourceRef, TextSegment
from shared.events.parts import clean_text
from shared.media.images import load_image
from shared.media.ocr import ocr_image
from shared.storage import LocalStorage


class TesseractPhotos:
    """Photos from storage, read by Tesseract after preprocessing."""

    def __init__(self, storage: LocalStorage, *, max_pixels: int) -> None:
        self.storage = storage
        self.max_pixels = max_pixels

    def _read(self, url: str) -> PhotoText:
        image = load_image(self.storage.resolve(url).path, max_pixels=self.max_pixels)
        result = ocr_image(image)
        lines = tuple(
            TextSegment(text=clean_text(line.text), confidence=round(line.confidence, 2))
            for line in result.lines
            if line.text.strip()
        )
        return PhotoText(
            lines=lines,
            text=clean_text(result.text),
            mean_confidence=result.mean_confidence,
            low_confidence_words=result.low_confidence_words,
        )

    async def read(self, url: str) -> PhotoText:
        """Load, preprocess and read the photo in a thread (heartbeats go on)."""
        return await asyncio.to_thread(self._read, url)


class PostgresPhotoRows:
    """The photos row, through shared.db."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def started(self, source: SourceRef) -> None:
        """extraction_status processing."""
        await sources.set_status(self.pool, kind="photo", source_id=source.source_id, status="processing")

    async def completed(self, source: SourceRef, *, text: str) -> None:
        """extracted_text stored, extraction_status completed."""
        async with self.pool.acquire() as conn, conn.transaction():
            await sources.save_text(conn, kind="photo", source_id=source.source_id, text=text)
            await sources.set_status(conn, kind="photo", source_id=source.source_id, status="completed")
