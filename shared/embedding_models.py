"""Fast kernels of the embedding model, built offline from the packaged weights and cached with checksums.

Two artifacts are derived from a sentence-transformers folder (default: the packaged all-MiniLM-L6-v2):

* ``onnx``: the BERT encoder exported by a plain ``torch.onnx.export`` (keyword-argument wrapper, eager
  attention, TorchScript exporter, dynamic batch and sequence axes). Its output is the last hidden state;
  pooling and normalisation happen at run time (shared.embedder). ONNX Runtime runs it in fp32, OpenVINO in
  fp32 or bf16.
* ``openvino-int8``: that graph quantized to int8 by NNCF (static, transformer preset), with the six
  FFN-output MatMuls left in float (quantizing them costs the most accuracy, field notes "Models") and
  SmoothQuant's alpha at 0.5 instead of the preset's 0.95. Cosine to fp32 on 600 chunks of varied real text
  (package descriptions), mean / min: this recipe .9989 / .9930; alpha 0.95 .9987 / .9832; no SmoothQuant
  .9970 / .9933; every MatMul quantized .9947 / .9613; FFN outputs kept in float in layers 0 and 5 only
  .9925 / .9772. Keeping them in float costs ~15% of int8's speed.
  Calibration uses a fixed, deterministic set of texts that none of the quality measurements use: windows of
  the Python documentation shipped with CPython (``pydoc_data.topics``), sized 32 to 254 word pieces.

Each artifact lives in ``<cache_dir>/embedding/<model>-<source digest>-r<RECIPE_VERSION>/<artifact>/`` with a
``manifest.json`` holding the SHA-256 of the source files, the recipe version, the inputs it was built from
and the SHA-256 of every built file. A folder whose manifest or checksums do not match is rebuilt, never
trusted. Builds take a file lock and publish with an atomic rename, so workers starting together build once
and never read a half-written model. Building needs torch and transformers (export) and nncf (int8); using a
built artifact needs neither. Nothing is downloaded.

A prebuilt copy made at install time (``make venv``: ``python -m shared.embedding_models build``) sits in
``<sys.prefix>/share/lmgpa/models``; it is used, after the same verification, when the configured cache
holds no valid copy, so test stacks and dev stacks with their own cache folders do not rebuild it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.checksums import sha256_file
from shared.logging import get_logger

log = get_logger(__name__)

RECIPE_VERSION = 1
"""Bump when the export, the quantization or the calibration changes, so stale builds are not reused."""
Artifact = Literal["onnx", "openvino-int8"]
ARTIFACTS: tuple[Artifact, ...] = ("onnx", "openvino-int8")
ARTIFACT_FILES: dict[Artifact, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "openvino-int8": ("model.xml", "model.bin"),
}
SOURCE_FILES = ("config.json", "tokenizer.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ONNX_OPSET = 17
FFN_OUTPUT_MATMULS = r".*/encoder/layer\.\d+/output/dense/MatMul"
"""BertOutput's dense layer (not attention's output/dense, whose path has /attention/ before it)."""
SMOOTH_QUANT_ALPHA = 0.5
CALIBRATION_TEXTS = 300
CALIBRATION_LENGTHS = (254, 200, 180, 160, 128, 96, 64, 32)
MANIFEST = "manifest.json"


class EmbeddingBuildError(RuntimeError):
    """A fast kernel cannot be built here (a build dependency is missing, or the source folder is not usable)."""


@dataclass(frozen=True)
class Source:
    """The model folder an artifact is derived from, and the SHA-256 of the files that define it."""

    path: Path
    files: dict[str, str]

    @property
    def digest(self) -> str:
        """One SHA-256 over the source files' names and hashes."""
        text = json.dumps(self.files, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def read_source(model_path: Path) -> Source:
    """Hash the files of a sentence-transformers folder that a build depends on: weights, config, tokenizer."""
    weights = next((model_path / n for n in WEIGHT_FILES if (model_path / n).is_file()), None)
    if weights is None:
        raise EmbeddingBuildError(f"{model_path} has no weights ({' or '.join(WEIGHT_FILES)})")
    files = {weights.name: sha256_file(weights)}
    for name in SOURCE_FILES:
        if not (model_path / name).is_file():
            raise EmbeddingBuildError(f"{model_path} has no {name}")
        files[name] = sha256_file(model_path / name)
    return Source(path=model_path, files=files)


def prebuilt_dir() -> Path:
    """Where `make venv` builds the artifacts once, beside the installed packages."""
    return Path(sys.prefix) / "share" / "lmgpa" / "models"


def model_dir(cache_dir: Path, source: Source) -> Path:
    """The cache folder of one source model under one recipe."""
    name = "-".join(source.path.parts[-2:])  # the packaged folder is plain "model": keep its package's name
    return cache_dir / "embedding" / f"{name}-{source.digest[:16]}-r{RECIPE_VERSION}"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The artifact folder's manifest, or None if it is missing or unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def verify(folder: Path, artifact: Artifact, source: Source) -> str | None:
    """None when the folder holds a complete build of `artifact` from `source`, else why it does not."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no readable manifest"
    if manifest.get("artifact") != artifact or manifest.get("recipe") != RECIPE_VERSION:
        return f"built by another recipe ({manifest.get('artifact')}, r{manifest.get('recipe')})"
    if manifest.get("source_sha256") != source.files:
        return "built from other source weights"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(ARTIFACT_FILES[artifact]):
        return "the manifest lists other files"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} does not match its SHA-256"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_artifact(
    artifact: Artifact,
    *,
    model_path: Path,
    cache_dir: Path,
    source: Source | None = None,
    prebuilt: Path | None = None,
) -> Path:
    """The verified folder of `artifact` for the model at `model_path`, built into cache_dir if needed.

    A verified copy in `prebuilt` (default: the install-time one) is used as it is; a copy in cache_dir that
    fails verification is rebuilt."""
    source = source or read_source(model_path)
    prebuilt = prebuilt_dir() if prebuilt is None else prebuilt
    folder = model_dir(cache_dir, source) / artifact
    if verify(folder, artifact, source) is None:
        return folder
    installed = model_dir(prebuilt, source) / artifact
    if installed != folder and verify(installed, artifact, source) is None:
        return installed
    with _locked(folder.parent / f".{artifact}.lock"):
        problem = verify(folder, artifact, source)
        if problem is None:  # another process built it while this one waited
            return folder
        if folder.exists():
            log.warning("embedding_cache_rebuilt", artifact=artifact, folder=str(folder), reason=problem)
        _build(artifact, folder, source, cache_dir=cache_dir, prebuilt=prebuilt)
    return folder


def _build(artifact: Artifact, folder: Path, source: Source, *, cache_dir: Path, prebuilt: Path) -> None:
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{artifact}."))
    try:
        inputs: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if artifact == "onnx":
            export_onnx(source.path, tmp / "model.onnx")
            versions = _versions("torch", "transformers", "onnx")
        else:
            onnx_dir = ensure_artifact(
                "onnx", model_path=source.path, cache_dir=cache_dir, source=source, prebuilt=prebuilt
            )
            texts = calibration_texts(source.path)
            quantize_int8(onnx_dir / "model.onnx", source.path, texts, tmp / "model.xml")
            inputs = {"model.onnx": sha256_file(onnx_dir / "model.onnx")}
            extra = {
                "calibration": {
                    "source": "pydoc_data.topics",
                    "texts": len(texts),
                    "sha256": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
                },
                "ignored_scope": [FFN_OUTPUT_MATMULS],
                "smooth_quant_alpha": SMOOTH_QUANT_ALPHA,
            }
            versions = _versions("openvino", "nncf")
        seconds = time.perf_counter() - started
        manifest = {
            "artifact": artifact,
            "recipe": RECIPE_VERSION,
            "source": str(source.path),
            "source_sha256": source.files,
            "inputs_sha256": inputs,
            **extra,
            "built_with": versions,
            "build_seconds": round(seconds, 1),
            "files": {name: sha256_file(tmp / name) for name in ARTIFACT_FILES[artifact]},
        }
        # The manifest is written last: a folder without one is never taken for a build.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # mkdtemp's folder is private (0700): a cache built by root at install time must be readable by the
        # workers' user.
        os.chmod(tmp, 0o755)  # noqa: S103 (read-only for others: model files, no secrets)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("embedding_kernel_built", artifact=artifact, folder=str(folder), seconds=round(seconds, 1))


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def export_onnx(model_path: Path, target: Path) -> None:
    """Export the folder's BERT encoder to ONNX: (input_ids, attention_mask) -> last_hidden_state."""
    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise EmbeddingBuildError(
            f"exporting the embedding model needs torch and transformers ({exc.name} is missing): "
            "build the kernels where they are installed (python -m shared.embedding_models build)"
        ) from exc

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    encoder = AutoModel.from_pretrained(str(model_path), attn_implementation="eager", local_files_only=True)
    encoder.eval()

    class Encoder(torch.nn.Module):
        """Keyword arguments for the encoder; token types are all zero for single texts, as in ST."""

        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state

    dummy = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side shape checks that are constant for these inputs (no cache).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(encoder),
            (dummy, dummy),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def calibration_texts(model_path: Path, count: int = CALIBRATION_TEXTS) -> list[str]:
    """A fixed set of texts for int8 calibration: paragraphs of CPython's documentation topics, in key order,
    joined into windows of 32 to 254 word pieces (the chunker's sizes and shorter ones, like queries)."""
    import pydoc_data.topics

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    topics: dict[str, str] = pydoc_data.topics.topics
    paragraphs = [
        " ".join(p.split()) for key in sorted(topics) for p in topics[key].split("\n\n") if p.strip()
    ]
    texts: list[str] = []
    window: list[str] = []
    pieces = 0
    for paragraph in paragraphs:
        window.append(paragraph)
        pieces += len(tokenizer.encode(paragraph, add_special_tokens=False).ids)
        if pieces >= CALIBRATION_LENGTHS[len(texts) % len(CALIBRATION_LENGTHS)]:
            texts.append(" ".join(window))
            window, pieces = [], 0
            if len(texts) == count:
                return texts
    raise EmbeddingBuildError(f"pydoc_data.topics yields only {len(texts)} calibration texts of {count}")


def quantize_int8(onnx_path: Path, model_path: Path, texts: Sequence[str], target: Path) -> None:
    """NNCF static int8 quantization of the ONNX encoder into an OpenVINO model at `target` (.xml + .bin)."""
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
    except ImportError as exc:
        raise EmbeddingBuildError(
            f"the int8 kernel needs openvino and nncf to build ({exc.name} is missing)"
        ) from exc
    from shared.embedder import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(model_path)
    nncf.set_log_level(40)  # errors only: its INFO lines list every quantizer
    # One text per sample: the recorded ranges then do not depend on how texts were padded together.
    items = []
    for text in texts:
        input_ids, attention_mask = tokenizer([text])
        items.append({"input_ids": input_ids, "attention_mask": attention_mask})
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(items),
        ignored_scope=nncf.IgnoredScope(patterns=[FFN_OUTPUT_MATMULS]),
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
        ),
    )
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Build (or verify) the fast kernels into a cache folder: `python -m shared.embedding_models build`."""
    parser = argparse.ArgumentParser(description="Build the embedding model's fast kernels offline.")
    parser.add_argument("command", choices=["build", "verify"])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: the install-time folder")
    parser.add_argument("--model-path", type=Path, default=None, help="default: packaged all-MiniLM-L6-v2")
    parser.add_argument("--artifact", choices=ARTIFACTS, action="append", help="default: all")
    args = parser.parse_args(argv)
    from shared.embedder import default_model_path

    model_path = args.model_path or default_model_path()
    cache_dir = args.cache_dir or prebuilt_dir()
    source = read_source(model_path)
    for artifact in args.artifact or ARTIFACTS:
        folder = model_dir(cache_dir, source) / artifact
        if args.command == "verify":
            problem = verify(folder, artifact, source)
            print(f"{artifact}: {folder}: {problem or 'ok'}")
            continue
        started = time.perf_counter()
        folder = ensure_artifact(
            artifact, model_path=model_path, cache_dir=cache_dir, source=source, prebuilt=cache_dir
        )
        print(f"{artifact}: {folder} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
