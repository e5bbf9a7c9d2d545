"""The pipeline version: every setting an upload's results depend on changes it; nothing else does."""

from __future__ import annotations

from typing import Any

import pytest

from shared.pipeline_version import current_pipeline_version, pipeline_version
from shared.settings import Settings


def version(
    kind: str = "textbook", *, backend: str = "openvino-int8", digest: str = "d" * 64, **env: Any
) -> str:
    return pipeline_version(Settings(**env), kind=kind, backend=backend, model_digest=digest)


def test_the_same_settings_give_the_same_version_as_a_hex_digest() -> None:
    first, second = version(), version()
    assert first == second
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("textbook", {"chunk_tokens": 150}),
        ("textbook", {"chunk_overlap_tokens": 16}),
        ("textbook", {"embedding_model_name": "all-mpnet-base-v2"}),
        ("textbook", {"embedding_dimensions": 768}),
        ("textbook", {"textbook_pages_per_range": 10}),
        ("audio", {"whisper_model": "base"}),
        ("audio", {"whisper_engine": "openai-whisper"}),
        ("audio", {"audio_piece_seconds": 300.0}),
        ("photo", {"chunk_tokens": 120}),
    ],
)
def test_changing_a_relevant_setting_changes_the_version(kind: str, change: dict[str, Any]) -> None:
    assert version(kind, **change) != version(kind)


def test_changing_the_kernel_or_the_model_files_changes_the_version() -> None:
    assert version(backend="onnx-fp32") != version()
    assert version(digest="e" * 64) != version()


def test_each_kind_has_its_own_version() -> None:
    assert len({version("textbook"), version("audio"), version("photo")}) == 3


@pytest.mark.parametrize(
    "change",
    [
        {"embedding_batch_size": 8},
        {"batch_max_records": 4},
        {"max_file_bytes": 1024},
        {"qdrant_collection": "other"},
        {"audio_piece_seconds": 300.0},  # not a textbook's setting
    ],
)
def test_settings_that_do_not_change_results_leave_it(change: dict[str, Any]) -> None:
    assert version("textbook", **change) == version("textbook")


def test_current_version_reads_this_machines_model_and_kernel() -> None:
    settings = Settings()
    assert current_pipeline_version(settings, kind="textbook") == current_pipeline_version(
        settings, kind="textbook"
    )
    assert current_pipeline_version(settings, kind="textbook") != current_pipeline_version(
        Settings(chunk_tokens=120), kind="textbook"
    )
