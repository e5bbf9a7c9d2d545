"""Versioned Kafka topic names: the contract's addresses. The message key is always the source id."""

from __future__ import annotations

from typing import Final

SOURCE_UPLOADED: Final = "lmgpa.source.uploaded.v1"
"""The backend's entry point: one upload of any kind."""
AUDIO_UPLOADED: Final = "lmgpa.audio.uploaded.v1"
PHOTO_UPLOADED: Final = "lmgpa.photo.uploaded.v1"
TEXTBOOK_UPLOADED: Final = "lmgpa.textbook.uploaded.v1"
TEXT_EXTRACTED: Final = "lmgpa.text.extracted.v1"
"""Text of a source (notes straight from upload; transcripts, OCR and PDF text from the media workers)."""
CHUNKS_EMBEDDED: Final = "lmgpa.chunks.embedded.v1"
SOURCE_INDEXED: Final = "lmgpa.source.indexed.v1"
SOURCE_FAILED: Final = "lmgpa.source.failed.v1"
DEAD_LETTER: Final = "lmgpa.deadletter.v1"
"""Messages no handler could decode or finish, with the original bytes and the reason."""

ALL_TOPICS: Final[tuple[str, ...]] = (
    SOURCE_UPLOADED,
    AUDIO_UPLOADED,
    PHOTO_UPLOADED,
    TEXTBOOK_UPLOADED,
    TEXT_EXTRACTED,
    CHUNKS_EMBEDDED,
    SOURCE_INDEXED,
    SOURCE_FAILED,
    DEAD_LETTER,
)

SERVICE_INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "upload": (SOURCE_UPLOADED,),
    "transcription": (AUDIO_UPLOADED,),
    "ocr": (PHOTO_UPLOADED,),
    "chunking": (TEXTBOOK_UPLOADED,),
    "embedding": (TEXT_EXTRACTED,),
    "indexing": (CHUNKS_EMBEDDED,),
}
"""Which topics each worker consumes; every worker may also publish to SOURCE_FAILED and DEAD_LETTER."""

SERVICES: Final[tuple[str, ...]] = tuple(SERVICE_INPUTS)

PRODUCERS: Final[dict[str, tuple[str, ...]]] = {
    SOURCE_UPLOADED: ("backend",),
    AUDIO_UPLOADED: ("upload",),
    PHOTO_UPLOADED: ("upload",),
    TEXTBOOK_UPLOADED: ("upload",),
    TEXT_EXTRACTED: ("upload", "transcription", "ocr", "chunking"),
    CHUNKS_EMBEDDED: ("embedding",),
    SOURCE_INDEXED: ("indexing",),
    SOURCE_FAILED: SERVICES,
    DEAD_LETTER: SERVICES,
}
"""Who publishes to each topic (notes go from upload straight to TEXT_EXTRACTED: nothing to extract)."""
