"""OCR: read the text of a photo of notes or a whiteboard, keeping how sure Tesseract was of each line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import Envelope, PhotoUploaded, SourceRef, TextExtracted, TextSegment
from shared.events.parts import split_into_parts
from shared.ports import Tracker

SERVICE = "ocr"


@dataclass(frozen=True)
class PhotoText:
    """What OCR read: lines with confidence (0-100), and how many words it doubted."""

    lines: tuple[TextSegment, ...]
    text: str
    mean_confidence: float
    low_confidence_words: int


class Photos(Protocol):
    """The photo behind its storage URL, and the OCR engine."""

    async def read(self, url: str) -> PhotoText:
        """Load, straighten, clean up and read the photo (PermanentError if it is not a usable image)."""


class PhotoRows(Protocol):
    """The photos row."""

    async def started(self, source: SourceRef) -> None:
        """extraction_status processing."""

    async def completed(self, source: SourceRef, *, text: str) -> None:
        """extracted_text stored, extraction_status completed."""


async def extract_text(
    event: PhotoUploaded, *, photos: Photos, rows: PhotoRows, tracker: Tracker
) -> list[Envelope]:
    """OCR one photo; its lines go on with their confidence so doubtful text stays flagged."""
    await rows.started(event.source)
    await tracker.started(event.source.source_id, SERVICE, units_total=1, unit="photos")
    result = await photos.read(event.storage_url)
    if not result.text.strip():
        raise PermanentError("no_text", "no text could be read in the photo")
    await rows.completed(event.source, text=result.text)
    await tracker.finished(event.source.source_id, SERVICE, units_done=1, next_stage="embedding")
    parts = split_into_parts(result.lines)
    return [
        TextExtracted(
            **event.follow(f"TextExtracted/{i}", producer=SERVICE),
            source=event.source,
            segments=segments,
            part_index=i,
            part_count=len(parts),
        )
        for i, segments in enumerate(parts)
    ]
