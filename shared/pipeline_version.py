"""The pipeline version: what an upload's extraction and embedding results depend on besides its bytes.

Reuse of identical uploads keys results by (kind, the file's SHA-256, this version). Every setting that can
change a chunk's text, its boundaries, its ids or its vector is in it, so a result made under other settings is
never served: the extractor's (page ranges of a book, Whisper's engine, model and piece length), the chunker's
(target and overlap tokens), and the embedding model (name, size, the SHA-256 of its weights, config and
tokenizer) and kernel (the backend that runs it and the recipe its fast kernels are built by). Settings that only
change speed or limits (batch sizes, retries, the largest file accepted) are left out on purpose.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.settings import Settings

PIPELINE_CODE_VERSION = 4
"""Bump when extraction, chunking or embedding code changes what it produces for the same settings."""


def pipeline_components(settings: Settings, *, kind: str, backend: str, model_digest: str) -> dict[str, Any]:
    """The named inputs of the pipeline version of one upload kind (for the version, and for an operator)."""
    from shared.embedding_models import RECIPE_VERSION

    extractor: dict[str, Any] = {"kind": kind}
    if kind == "textbook":
        # Each page range is one part of the text, and the chunker does not cross parts.
        extractor["pages_per_range"] = settings.textbook_pages_per_range
    elif kind == "audio":
        extractor |= {
            "whisper_engine": settings.whisper_engine,
            "whisper_model": settings.whisper_model,
            "piece_seconds": settings.audio_piece_seconds,
        }
    return {
        "code": PIPELINE_CODE_VERSION,
        "extractor": extractor,
        "chunker": {"tokens": settings.chunk_tokens, "overlap": settings.chunk_overlap_tokens},
        "model": {
            "name": settings.embedding_model_name,
            "dimensions": settings.embedding_dimensions,
            "digest": model_digest,
        },
        "kernel": {"backend": backend, "recipe": RECIPE_VERSION},
    }


def pipeline_version(settings: Settings, *, kind: str, backend: str, model_digest: str) -> str:
    """A stable hex digest of every setting an upload's results depend on (see the module's docstring)."""
    text = json.dumps(
        pipeline_components(settings, kind=kind, backend=backend, model_digest=model_digest),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=8)
def _model_digest(path: Path) -> str:
    from shared.embedding_models import read_source

    return read_source(path).digest


def current_pipeline_version(settings: Settings, *, kind: str) -> str:
    """The pipeline version of this machine's settings: the kernel ``auto`` picks here, the model files here."""
    from shared.embedder import choose_backend, cpu_flags, default_model_path, installed_runtimes

    backend, _ = choose_backend(settings.embedding_backend, flags=cpu_flags(), runtimes=installed_runtimes())
    path = settings.embedding_model_path or default_model_path()
    return pipeline_version(settings, kind=kind, backend=backend, model_digest=_model_digest(path))
