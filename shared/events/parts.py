"""Splitting a source's text into parts that each fit comfortably in one Kafka message."""

from __future__ import annotations

from collections.abc import Sequence

from shared.events.models import TextSegment

MAX_PART_CHARS = 200_000
"""Characters of text per TextExtracted part: far below the broker's 1 MB even for multi-byte scripts."""


_CONTROL = {c: None for c in range(32) if chr(c) not in "\t\n\r"} | {0x7F: None}


def clean_text(text: str) -> str:
    """Drop control characters: they carry no meaning, PostgreSQL refuses NUL, and JSON inflates them sixfold."""
    return text.translate(_CONTROL)


def _split_text(text: str, limit: int) -> list[str]:
    """Cut one long text at paragraph, line or word boundaries into pieces of at most ``limit`` chars."""
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        cut = cut + 1 if cut > limit // 2 else limit
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def split_into_parts(
    segments: Sequence[TextSegment], *, max_chars: int = MAX_PART_CHARS
) -> list[list[TextSegment]]:
    """Group segments, in order, into parts of at most ``max_chars`` characters (segments are never merged)."""
    parts: list[list[TextSegment]] = [[]]
    size = 0
    for segment in segments:
        for piece in _split_text(segment.text, max_chars):
            if size + len(piece) > max_chars and parts[-1]:
                parts.append([])
                size = 0
            parts[-1].append(segment.model_copy(update={"text": piece}))
            size += len(piece)
    return parts
