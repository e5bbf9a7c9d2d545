"""Embedding's side effects: the tokenizer-aware chunker, and the model's calls counted for /metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.embedding.handlers import Embedder
from shared.chunking import Chunk, HfTokenCounter, Segment, chunk_segments
from shared.events.models import TextSegment
from shared.metrics import PipelineMetrics


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


class MeteredEmbedder:
    """The model, counting each call's chunks, time and rate (the handler sees only the Embedder port)."""

    def __init__(self, inner: Embedder, metrics: PipelineMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        self.dimensions = inner.dimensions

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """One unit-length vector per text; the call is counted once it returned."""
        started = time.monotonic()
        vectors = await self.inner.embed(texts)
        self.metrics.embedded(len(texts), time.monotonic() - started)
        return vectors
