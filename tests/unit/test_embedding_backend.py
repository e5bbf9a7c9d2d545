"""Which embedding kernel `auto` picks: a pure function of the CPU's flags and the installed runtimes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

import shared.embedder as embedder_module
from shared.embedder import (
    BACKENDS,
    SentenceEmbedder,
    backend_candidates,
    balanced_batch_size,
    check_mean_pooling,
    choose_backend,
    cpu_flags,
    default_model_path,
)
from shared.embedding_models import EmbeddingBuildError
from shared.settings import Settings

ALL = frozenset({"openvino", "onnxruntime", "sentence_transformers"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "fma"})
SAPPHIRE_RAPIDS = frozenset(
    {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
)
ALDER_LAKE = frozenset({"avx2", "fma", "avx_vnni"})
COOPER_LAKE_WITHOUT_VNNI = frozenset({"avx2", "avx512f", "avx512_bf16"})  # no such CPU: bf16 alone
HASWELL = frozenset({"avx2", "fma"})
GRAVITON = frozenset({"fp", "asimd", "asimddp", "sve"})


@pytest.mark.parametrize(
    ("flags", "runtimes", "expected"),
    [
        (ZEN4, ALL, "openvino-int8"),
        (SAPPHIRE_RAPIDS, ALL, "openvino-int8"),
        (ALDER_LAKE, ALL, "openvino-int8"),
        (COOPER_LAKE_WITHOUT_VNNI, ALL, "openvino-bf16"),
        (HASWELL, ALL, "openvino-fp32"),
        (GRAVITON, ALL, "openvino-fp32"),
        (frozenset(), ALL, "openvino-fp32"),  # no /proc/cpuinfo: nothing assumed
        (ZEN4, {"onnxruntime", "sentence_transformers"}, "onnx-fp32"),  # no OpenVINO
        (HASWELL, {"onnxruntime", "sentence_transformers"}, "onnx-fp32"),
        (ZEN4, {"sentence_transformers"}, "torch-fp32"),
        (ZEN4, set(), "torch-fp32"),
    ],
)
def test_auto_picks_by_the_cpus_instructions(
    flags: frozenset[str], runtimes: set[str], expected: str
) -> None:
    backend, reason = choose_backend("auto", flags=flags, runtimes=runtimes)
    assert backend == expected
    assert reason


def test_auto_never_picks_a_kernel_whose_instructions_the_cpu_lacks() -> None:
    for flags in (HASWELL, GRAVITON, frozenset()):
        backend, _ = choose_backend("auto", flags=flags, runtimes=ALL)
        assert backend not in ("openvino-int8", "openvino-bf16")
    backend, _ = choose_backend("auto", flags=ALDER_LAKE, runtimes=ALL)
    assert backend != "openvino-bf16"  # int8 dot products, no bf16


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_set_backend_is_taken_as_it_is(backend: str) -> None:
    assert choose_backend(backend, flags=HASWELL, runtimes=ALL) == (backend, "set by LMGPA_EMBEDDING_BACKEND")  # type: ignore[arg-type]


def test_the_setting_lists_every_backend_and_defaults_to_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().embedding_backend == "auto"
    for backend in BACKENDS:
        monkeypatch.setenv("LMGPA_EMBEDDING_BACKEND", backend)
        assert Settings().embedding_backend == backend
    monkeypatch.setenv("LMGPA_EMBEDDING_BACKEND", "gpu-fp8")
    with pytest.raises(ValueError, match="embedding_backend"):
        Settings()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512_vnni avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512_vnni avx512_bf16\n"
    )
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_vnni", "avx512_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu_flags(arm) == {"fp", "asimd", "asimddp"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_tries_every_kernel_the_cpu_can_run_fastest_first() -> None:
    assert [b for b, _ in backend_candidates("auto", flags=ZEN4, runtimes=ALL)] == [
        "openvino-int8",
        "openvino-bf16",
        "openvino-fp32",
        "onnx-fp32",
        "torch-fp32",
    ]
    assert [b for b, _ in backend_candidates("auto", flags=HASWELL, runtimes=ALL)] == [
        "openvino-fp32",
        "onnx-fp32",
        "torch-fp32",
    ]
    assert backend_candidates("openvino-bf16", flags=HASWELL, runtimes=ALL) == [
        ("openvino-bf16", "set by LMGPA_EMBEDDING_BACKEND")
    ]


class FakeKernel:
    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)


def _fake_machine(monkeypatch: pytest.MonkeyPatch, unbuildable: set[str]) -> list[str]:
    tried: list[str] = []

    def load(
        backend: str, model_path: Path, *, cache_dir: Path, threads: int, streams: int | None = None
    ) -> FakeKernel:
        tried.append(backend)
        if backend in unbuildable:
            raise EmbeddingBuildError(f"{backend} needs nncf to build (nncf is missing)")
        return FakeKernel()

    monkeypatch.setattr(embedder_module, "cpu_flags", lambda: ZEN4)
    monkeypatch.setattr(embedder_module, "installed_runtimes", lambda: ALL)
    monkeypatch.setattr(embedder_module, "load_kernel", load)
    return tried


def test_auto_falls_back_to_the_next_kernel_when_one_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _fake_machine(monkeypatch, unbuildable={"openvino-int8"})
    with capture_logs() as logs:
        embedder = SentenceEmbedder(name="m", threads=2)
    assert tried == ["openvino-int8", "openvino-bf16"]
    assert embedder.backend == "openvino-bf16"
    assert [(e["event"], e["backend"]) for e in logs] == [
        ("embedding_kernel_unavailable", "openvino-int8"),
        ("embedding_kernel_chosen", "openvino-bf16"),
    ]
    assert "nncf" in logs[0]["error"] and logs[1]["reason"] == "the CPU has bf16 (avx512_bf16)"
    assert embedder.embed_sync(["a", "b"]).shape == (2, 384)


def test_a_set_kernel_that_cannot_be_built_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _fake_machine(monkeypatch, unbuildable={"openvino-int8"})
    with pytest.raises(EmbeddingBuildError, match="nncf"):
        SentenceEmbedder(name="m", backend="openvino-int8")
    assert tried == ["openvino-int8"]


def test_models_the_fast_kernels_would_get_wrong_are_left_to_torch(tmp_path: Path) -> None:
    check_mean_pooling(default_model_path())  # all-MiniLM-L6-v2: Transformer, mean Pooling, Normalize
    modules = json.loads((default_model_path() / "modules.json").read_text())
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(EmbeddingBuildError, match="pooling_mode_cls_token"):
        check_mean_pooling(tmp_path)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    check_mean_pooling(tmp_path)
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (tmp_path / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(EmbeddingBuildError, match="Dense"):
        check_mean_pooling(tmp_path)


@pytest.mark.parametrize(
    ("texts", "batch_size", "parallel", "expected"),
    [
        (150, 32, 2, 25),  # six batches of 25, not 32+32+32+32+22
        (150, 32, 1, 32),  # one request: plain batches
        (40, 32, 2, 20),  # two even batches, not 32+8
        (1, 32, 2, 32),  # a note: one batch, whatever the streams
        (32, 32, 2, 32),  # one full batch is not split
        (64, 32, 2, 32),
        (65, 32, 2, 17),  # 3 batches would leave a stream idle: four of 17, 17, 17, 14
        (0, 32, 2, 32),
    ],
)
def test_batches_are_balanced_over_the_streams(
    texts: int, batch_size: int, parallel: int, expected: int
) -> None:
    size = balanced_batch_size(texts, batch_size, parallel)
    assert size == expected
    assert size <= batch_size
    if texts > batch_size and parallel > 1:
        assert (-(-texts // size)) % parallel == 0  # every stream gets the same number of batches
