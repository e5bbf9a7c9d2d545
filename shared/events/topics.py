"""Versioned Kafka topic names: the contract's addresses. The message key is always the source id."""

from __future__ import annotations

from typing import Final

SOURCE_UPLOADED: Final = "lmgpa.source.uploaded.v1"
"""The backend's entry point: one upload of any kind."""
AUDIO_UPLOADED: Final = "lmgpa.audio.uploaded.v1"
PHOTO_UPLOADED: Final = "lmgpa.photo.uploaded.v1"
TEXTBOOK_UPLOADED: Final = "lmgpa.textbook.uploaded.v1"
AUDIO_PIECES: Final = "lmgpa.audio.pieces.v1"
"""One span of a recording to transcribe: long lectures are shared out in pieces."""
TEXTBOOK_PAGES: Final = "lmgpa.textbook.pages.v1"
"""One range of a book's pages to extract: large books are shared out in page ranges."""
TEXT_EXTRACTED: Final = "lmgpa.text.extracted.v1"
"""Text of a source (notes straight from upload; transcripts, OCR and PDF text from the media workers)."""
CHUNKS_EMBEDDED: Final = "lmgpa.chunks.embedded.v1"
SOURCE_INDEXED: Final = "lmgpa.source.indexed.v1"
SOURCE_FAILED: Final = "lmgpa.source.failed.v1"
SOURCE_REPROCESS: Final = "lmgpa.source.reprocess.v1"
"""Re-run a finished source from a stage; its vectors are replaced atomically from a reader's point of view."""
CONTENT_REUSE: Final = "lmgpa.content.reuse.v1"
"""An upload whose bytes a completed source of the same pipeline version has: copy its results, do not compute."""
SOURCE_DELETED: Final = "lmgpa.source.deleted.v1"
"""The backend deleted a source, a class or a user: every vector of it must go."""
DEAD_LETTER: Final = "lmgpa.deadletter.v1"
"""Messages no handler could decode or finish, with the original bytes and the reason."""

ALL_TOPICS: Final[tuple[str, ...]] = (
    SOURCE_UPLOADED,
    AUDIO_UPLOADED,
    PHOTO_UPLOADED,
    TEXTBOOK_UPLOADED,
    AUDIO_PIECES,
    TEXTBOOK_PAGES,
    TEXT_EXTRACTED,
    CHUNKS_EMBEDDED,
    SOURCE_INDEXED,
    SOURCE_FAILED,
    SOURCE_REPROCESS,
    CONTENT_REUSE,
    SOURCE_DELETED,
    DEAD_LETTER,
)

SERVICE_INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "upload": (SOURCE_UPLOADED, SOURCE_REPROCESS),
    "transcription": (AUDIO_UPLOADED, AUDIO_PIECES),
    "ocr": (PHOTO_UPLOADED,),
    "chunking": (TEXTBOOK_UPLOADED, TEXTBOOK_PAGES),
    "embedding": (TEXT_EXTRACTED,),
    "indexing": (CHUNKS_EMBEDDED, CONTENT_REUSE, SOURCE_DELETED),
}
"""Which topics each worker consumes; every worker may also publish to SOURCE_FAILED and DEAD_LETTER."""

SERVICES: Final[tuple[str, ...]] = tuple(SERVICE_INPUTS)

REDRIVABLE: Final[dict[str, str]] = {
    topic: service
    for service, inputs in SERVICE_INPUTS.items()
    for topic in inputs
    if topic != SOURCE_DELETED
}
"""A source's stage inputs, by topic, and the worker that consumes each: kept in PostgreSQL (event_outbox) until
applied, so the reconciler can publish again what a broker lost. Deletes have their own ledger (deletions)."""

PRODUCERS: Final[dict[str, tuple[str, ...]]] = {
    SOURCE_UPLOADED: ("backend",),
    # The indexing worker sends them too: a reuse that cannot copy (its donor went) falls back to computing.
    AUDIO_UPLOADED: ("upload", "indexing"),
    PHOTO_UPLOADED: ("upload", "indexing"),
    TEXTBOOK_UPLOADED: ("upload", "indexing"),
    AUDIO_PIECES: ("transcription",),
    TEXTBOOK_PAGES: ("chunking",),
    TEXT_EXTRACTED: ("upload", "transcription", "ocr", "chunking"),
    CHUNKS_EMBEDDED: ("embedding",),
    SOURCE_INDEXED: ("indexing",),
    SOURCE_FAILED: SERVICES,
    SOURCE_REPROCESS: ("backend",),
    CONTENT_REUSE: ("upload",),
    SOURCE_DELETED: ("backend",),
    DEAD_LETTER: SERVICES,
}
"""Who publishes to each topic (notes go from upload straight to TEXT_EXTRACTED: nothing to extract)."""
