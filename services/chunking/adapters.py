"""Chunking's side effects: pypdf with the OCR fallback (off the event loop), and the textbook row."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.chunking.handlers import BookInfo, RangeProgress
from shared.db import pieces, sources
from shared.events.models import SourceRef, TextbookPagesQueued, TextSegment
from shared.events.parts import clean_text
from shared.media.pdf import PdfBook
from shared.storage import LocalStorage

SERVICE = "chunking"


KEEP_OPEN_MAX_BYTES = 16 * 1024**2
"""A book file up to this size stays open between its ranges (what pypdf parsed, fonts included, is reused);
a larger one is opened again for every range, so memory stays bounded by one range's objects.  What pypdf
keeps of a book read through is many times its file: +25.6 MB of resident memory for gnuplot's 1.28 MB manual
(its decoded content streams and objects), so 16 MiB of dense text could hold ~330 MB."""
KEEP_OPEN_TOTAL_BYTES = 32 * 1024**2
"""Book files kept open at once, in bytes: with KEEP_OPEN_MAX_BYTES, well inside the worker's 1 GiB limit."""
KEEP_OPEN_BOOKS = 4
"""Books kept open at once: ranges of books uploaded together arrive interleaved from their partitions."""


@dataclass
class _Held:
    """An open book and how many extractions are using it right now."""

    book: PdfBook
    users: int = 0


class PdfBooks:
    """Books from storage, read page by page; a book stays open from its plan to its last range."""

    def __init__(self, storage: LocalStorage, *, max_pages: int) -> None:
        self.storage = storage
        self.max_pages = max_pages
        self._open: OrderedDict[Path, _Held] = OrderedDict()
        self._lock = threading.Lock()

    def _book(self, path: Path) -> _Held:
        """The open book at `path` if it is the same file still, else that file opened; the least recently
        used book is let go if too many are open (closed once no extraction is using it)."""
        closing: list[PdfBook] = []
        try:
            with self._lock:
                held = self._open.pop(path, None)
                if held is not None:
                    try:
                        stat = path.stat()
                        same = (
                            stat.st_dev,
                            stat.st_ino,
                            stat.st_size,
                            stat.st_mtime_ns,
                        ) == held.book.identity
                    except OSError:
                        same = False
                    if same:
                        self._open[path] = held  # most recently used last
                        held.users += 1
                        return held
                    if held.users == 0:
                        closing.append(held.book)
                held = _Held(PdfBook(path), users=1)
                if held.book.identity[2] <= KEEP_OPEN_MAX_BYTES:
                    self._open[path] = held
                    while len(self._open) > KEEP_OPEN_BOOKS or self._kept_bytes() > KEEP_OPEN_TOTAL_BYTES:
                        oldest = self._open.popitem(last=False)[1]
                        if oldest.users == 0:
                            closing.append(oldest.book)
                return held
        finally:
            for book in closing:
                book.close()

    def _kept_bytes(self) -> int:
        return sum(held.book.identity[2] for held in self._open.values())

    def _release(self, held: _Held, *, done: bool) -> None:
        """One extraction less on the book; close it once nobody uses it and it is not kept (let go, too
        large, done with after its last range, or failed)."""
        with self._lock:
            held.users -= 1
            kept = self._open.get(held.book.path) is held
            if kept and done:
                del self._open[held.book.path]
                kept = False
            close = not kept and held.users == 0
        if close:
            held.book.close()

    def _inspect(self, path: Path) -> BookInfo:
        held = self._book(path)
        failed = True
        try:
            info = held.book.info(max_pages=self.max_pages)
            failed = False
        finally:
            self._release(held, done=failed)
        return BookInfo(page_count=info.page_count)

    async def inspect(self, url: str) -> BookInfo:
        """Open the book and count its pages; it stays open for its ranges."""
        return await asyncio.to_thread(self._inspect, self.storage.resolve(url).path)

    def _extract(self, url: str, first_page: int, last_page: int) -> list[TextSegment]:
        held = self._book(self.storage.resolve(url).path)
        done = True
        try:
            pages = held.book.extract(first_page, last_page)
            done = last_page >= held.book.page_count()
        finally:
            self._release(held, done=done)
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
