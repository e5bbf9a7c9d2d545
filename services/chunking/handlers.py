"""Textbook chunking: plan a book into page ranges, then extract each range page by page (any replica)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import (
    Envelope,
    SourceRef,
    TextbookPagesQueued,
    TextbookUploaded,
    TextExtracted,
    TextSegment,
)
from shared.events.parts import split_into_parts
from shared.ports import Tracker

SERVICE = "chunking"


@dataclass(frozen=True)
class BookInfo:
    """What opening the PDF told."""

    page_count: int


class Books(Protocol):
    """The PDF behind its storage URL."""

    async def inspect(self, url: str) -> BookInfo:
        """Open the book (PermanentError if encrypted with a real password, corrupt, not a PDF, or empty)."""

    async def extract(self, url: str, *, first_page: int, last_page: int) -> list[TextSegment]:
        """One segment per page with text (page number set); scanned pages come back through OCR."""


@dataclass(frozen=True)
class RangeProgress:
    """Where the book stands after one range."""

    pages_done: int
    completed_now: bool


class BookRows(Protocol):
    """The textbook_downloads row and the finished ranges."""

    async def started(self, source: SourceRef, *, page_count: int) -> None:
        """page_count set, embedding_status processing."""

    async def range_done(self, event: TextbookPagesQueued, pages: Sequence[TextSegment]) -> RangeProgress:
        """Keep a finished range; reports pages done and whether this range completed the book."""


@dataclass(frozen=True)
class Limits:
    """What a book may be, and how it is shared out."""

    max_pages: int
    pages_per_range: int


async def plan_textbook(
    event: TextbookUploaded, *, books: Books, rows: BookRows, tracker: Tracker, limits: Limits
) -> list[Envelope]:
    """Open the book and queue its page ranges, so several replicas can share a large book."""
    info = await books.inspect(event.storage_url)
    if info.page_count > limits.max_pages:
        raise PermanentError(
            "too_many_pages", f"the book has {info.page_count} pages; the limit is {limits.max_pages}"
        )
    await rows.started(event.source, page_count=info.page_count)
    await tracker.started(event.source.source_id, SERVICE, units_total=info.page_count, unit="pages")
    size = limits.pages_per_range
    starts = list(range(1, info.page_count + 1, size))
    return [
        TextbookPagesQueued(
            **event.follow(f"TextbookPagesQueued/{i}", producer=SERVICE),
            source=event.source,
            storage_url=event.storage_url,
            page_count=info.page_count,
            range_index=i,
            range_count=len(starts),
            first_page=first,
            last_page=min(first + size - 1, info.page_count),
        )
        for i, first in enumerate(starts)
    ]


async def chunk_textbook(
    event: TextbookPagesQueued, *, books: Books, rows: BookRows, tracker: Tracker
) -> list[Envelope]:
    """Extract one page range and pass its pages on; the last range completes the book's extraction."""
    pages = await books.extract(event.storage_url, first_page=event.first_page, last_page=event.last_page)
    progress = await rows.range_done(event, pages)
    source_id = event.source.source_id
    if progress.completed_now:
        await tracker.finished(source_id, SERVICE, units_done=event.page_count, next_stage="embedding")
    else:
        await tracker.progressed(
            source_id, SERVICE, units_done=progress.pages_done, units_total=event.page_count
        )
    # One range is one part of the source's text; a huge range is split again to fit a message.
    parts = split_into_parts(pages)
    if len(parts) > 1:
        raise PermanentError(
            "too_large", f"pages {event.first_page}-{event.last_page} hold too much text for one part"
        )
    return [
        TextExtracted(
            **event.follow("TextExtracted", producer=SERVICE),
            source=event.source,
            segments=parts[0],
            part_index=event.range_index,
            part_count=event.range_count,
        )
    ]
