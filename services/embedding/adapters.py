"""Embedding's side effects: the tokenizer-aware chunker and the sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence

from shared.chunking import Chunk, HfTokenCounter, Segment, chunk_segments
from shared.events.models import TextSegment


class TokenChunker:
    """The shared chunker with the embedding model's own tokenizer, so no chunk is ever truncated."""

    def __init__(self, counter: HfTokenCounter, *, target_tokens: int, overlap_tokens: int) -> None:
        self.counter = counter
        self.target_tokens = target_tokens
        self.overlap_tokens = overlap_tokens

    def chunk(self, segments: Sequence[TextSegment]) -> list[Chunk]:
        """Chunks of the segments, in order, page- and time-aware."""
        return chunk_segments(
            [
                Segment(
                    text=s.text,
                    page=s.page,
                    start_seconds=s.start_seconds,
                    end_seconds=s.end_seconds,
                    confidence=s.confidence,
                )
                for s in segments
            ],
            self.counter,
            target_tokens=self.target_tokens,
            overlap_tokens=self.overlap_tokens,
        )
