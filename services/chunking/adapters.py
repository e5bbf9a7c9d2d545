"""Chunking's side effects: pypdf with the OCR fallback (off the event loop), and the textbook row."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import asyncpg

from services.chunking.handlers import BookInfo, RangeProgress
from shared.db import pieces, sources
from shared.events.models import SourceRef, TextbookPagesQueued, TextSegment
from shared.events.parts import clean_text
from shared.media.pdf import PdfBook, inspect_pdf
from shared.storage import LocalStorage

SERVICE = "chunking"


KEEP_OPEN_MAX_BYTES = 256 * 1024**2
"""A book up to this size stays open between its ranges (what pypdf parsed, fonts included, is reused); a
larger one, a scanned book whose images OCR decoded say, is opened again for every range, so memory stays
bounded by one range's objects."""


class PdfBooks:
    """Books from storage, read page by page; the last book stays open for its next range."""

    def __init__(self, storage: LocalStorage, *, max_pages: int) -> None:
        self.storage = storage
        self.max_pages = max_pages
        self._open: PdfBook | None = None
        self._lock = threading.Lock()

    def _book(self, path: Path) -> PdfBook:
        """The open book at `path` if it is the same file still, else that file opened (the other closed)."""
        with self._lock:
            kept = self._open
            if kept is not None:
                try:
                    stat = path.stat()
                    same = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns) == kept.identity
                except OSError:
                    same = False
                if kept.path == path and same:
                    return kept
                self._open = None
                kept.close()
            book = PdfBook(path)
            if book.identity[2] <= KEEP_OPEN_MAX_BYTES:
                self._open = book
            return book

    def _release(self, book: PdfBook, *, done: bool) -> None:
        """Close a book that is not kept, or whose last range this was."""
        with self._lock:
            if self._open is book and not done:
                return
            if self._open is book:
                self._open = None
        book.close()

    async def inspect(self, url: str) -> BookInfo:
        """Open the book and count its pages."""
        path = self.storage.resolve(url).path
        info = await asyncio.to_thread(partial(inspect_pdf, path, max_pages=self.max_pages))
        return BookInfo(page_count=info.page_count)

    def _extract(self, url: str, first_page: int, last_page: int) -> list[TextSegment]:
        book = self._book(self.storage.resolve(url).path)
        done = True
        try:
            pages = book.extract(first_page, last_page)
            done = last_page >= book.page_count()
        finally:
            self._release(book, done=done)
        return [
            TextSegment(
                text=clean_text(p.text),
                page=p.page,
                confidence=None if p.confidence is None else round(p.confidence, 2),
            )
            for p in pages
            if p.text.strip()
        ]

    async def extract(self, url: str, *, first_page: int, last_page: int) -> list[TextSegment]:
        """Pages with text, scanned ones through OCR, in a thread (heartbeats go on)."""
        return await asyncio.to_thread(self._extract, url, first_page, last_page)


class PostgresBookRows:
    """textbook_downloads and ingest_pieces, through shared.db."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def started(self, source: SourceRef, *, page_count: int) -> None:
        """page_count set, embedding_status processing."""
        async with self.pool.acquire() as conn, conn.transaction():
            await sources.set_page_count(conn, source_id=source.source_id, pages=page_count)
            await sources.set_status(conn, kind="textbook", source_id=source.source_id, status="processing")

    async def range_done(self, event: TextbookPagesQueued, pages: Sequence[TextSegment]) -> RangeProgress:
        """Keep a finished range (which pages had text, how sure OCR was)."""
        progress = await pieces.record_piece(
            self.pool,
            source_id=event.source.source_id,
            stage=SERVICE,
            piece_index=event.range_index,
            piece_count=event.range_count,
            units=event.last_page - event.first_page + 1,
            result={
                "pages_with_text": [p.page for p in pages],
                "ocr_pages": [p.page for p in pages if p.confidence is not None],
            },
        )
        return RangeProgress(pages_done=progress.units_done, completed_now=progress.completed_now)
