"""Speech-to-text behind one port: faster-whisper (CTranslate2, the default) or openai-whisper, offline.

Both take mono float32 audio at 16 kHz and return segments with absolute times (offset by where the piece
starts in the recording).  Models load once in `__init__` from local files (see shared.media.whisper_models);
nothing is fetched from a model hub.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.media.audio import downmix
from shared.media.whisper_models import base_dir, openai_checkpoint, tiny_en_dir

SAMPLE_RATE = 16000
BEAM_SIZE = 5
OPENAI_THREADS = 1
MIN_SAMPLES = SAMPLE_RATE // 10  # under 0.1 s there is nothing to transcribe
ENGINES = ("faster-whisper", "openai-whisper")
MODELS = ("tiny.en", "base")


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of recognised speech with absolute times; channel is set when channels were transcribed apart."""

    start_seconds: float
    end_seconds: float
    text: str
    confidence: float | None
    channel: int | None


class SpeechEngine(Protocol):
    """Turns mono float32 16 kHz audio into timed segments."""

    name: str

    def transcribe(
        self, audio: npt.NDArray[np.float32], *, offset_seconds: float = 0.0
    ) -> list[SpeechSegment]:
        """Transcribe one piece; segment times are offset_seconds + time within the piece."""
        ...


def confidence_from_logprob(avg_logprob: float | None) -> float | None:
    """Map a segment's average token log-probability to [0, 1] (its geometric-mean token probability)."""
    if avg_logprob is None or math.isnan(avg_logprob):
        return None
    return min(1.0, max(0.0, math.exp(avg_logprob)))


def default_threads() -> int:
    """Threads for one model: the machine's cores, at most 4 (more only adds contention on small models)."""
    return max(1, min(4, os.cpu_count() or 1))


def _mono(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio shaped (samples,), got {audio.shape}")
    return np.ascontiguousarray(audio, dtype=np.float32)


class FasterWhisperEngine:
    """faster-whisper on CPU: int8 compute, beam 5, Silero VAD filter; English forced for .en models."""

    def __init__(
        self,
        model_dir: Path,
        *,
        label: str | None = None,
        language: str | None = None,
        compute_type: str = "int8",
        beam_size: int = BEAM_SIZE,
        vad_filter: bool = True,
        cpu_threads: int | None = None,
    ) -> None:
        # Imported by name: the packages ship no type information (mypy config is shared, left untouched).
        faster_whisper: Any = importlib.import_module("faster_whisper")
        self._model = faster_whisper.WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads or default_threads(),
            local_files_only=True,
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = language or (None if self.multilingual else "en")
        self._beam_size = beam_size
        self._vad_filter = vad_filter
        self.name = f"faster-whisper:{label or model_dir.name}"

    def transcribe(
        self, audio: npt.NDArray[np.float32], *, offset_seconds: float = 0.0
    ) -> list[SpeechSegment]:
        """Transcribe one mono 16 kHz piece."""
        audio = _mono(audio)
        if audio.size < MIN_SAMPLES:
            return []
        segments, _ = self._model.transcribe(
            audio, beam_size=self._beam_size, vad_filter=self._vad_filter, language=self.language
        )
        out = []
        for seg in segments:  # a generator: decoding happens while iterating
            text = seg.text.strip()
            if text:
                out.append(
                    SpeechSegment(
                        start_seconds=offset_seconds + float(seg.start),
                        end_seconds=offset_seconds + float(seg.end),
                        text=text,
                        confidence=confidence_from_logprob(seg.avg_logprob),
                        channel=None,
                    )
                )
        return out


class OpenAIWhisperEngine:
    """openai-whisper on CPU from a local checkpoint (see whisper_models.openai_checkpoint): fp32, beam 5.

    Torch runs on OPENAI_THREADS (process-wide) unless cpu_threads says otherwise: with two spinning OpenMP
    threads on a busy 2-core machine, JFK's 11 s took 20-30 s instead of 4-9 s with one thread.
    """

    def __init__(
        self,
        checkpoint: Path,
        *,
        label: str | None = None,
        language: str | None = None,
        beam_size: int = BEAM_SIZE,
        cpu_threads: int | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(cpu_threads or OPENAI_THREADS)  # process-wide: torch has one intra-op pool
        whisper: Any = importlib.import_module("whisper")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = whisper.model.Whisper(whisper.model.ModelDimensions(**state["dims"]))
        model.load_state_dict(state["model_state_dict"])
        heads = state.get("alignment_heads") or []
        if heads:
            # whisper.load_model(path) leaves the default (last half of the layers); use the model's own heads.
            mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
            for layer, head in heads:
                mask[layer, head] = True
            model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
        self._model: Any = model.eval()
        self.multilingual = bool(model.is_multilingual)
        self.language = language or (None if self.multilingual else "en")
        self._beam_size = beam_size
        self.name = f"openai-whisper:{label or checkpoint.stem}"

    def transcribe(
        self, audio: npt.NDArray[np.float32], *, offset_seconds: float = 0.0
    ) -> list[SpeechSegment]:
        """Transcribe one mono 16 kHz piece."""
        audio = _mono(audio)
        if audio.size < MIN_SAMPLES:
            return []
        result = self._model.transcribe(
            audio, beam_size=self._beam_size, fp16=False, language=self.language, verbose=None
        )
        out = []
        for seg in result["segments"]:
            text = str(seg["text"]).strip()
            if text:
                out.append(
                    SpeechSegment(
                        start_seconds=offset_seconds + float(seg["start"]),
                        end_seconds=offset_seconds + float(seg["end"]),
                        text=text,
                        confidence=confidence_from_logprob(seg.get("avg_logprob")),
                        channel=None,
                    )
                )
        return out


def model_dir(model: str, *, cache_dir: Path) -> Path:
    """Return the CTranslate2 folder of a named model ("tiny.en" or "base")."""
    if model == "tiny.en":
        return tiny_en_dir()
    if model == "base":
        return base_dir(cache_dir)
    raise ValueError(f"unknown Whisper model {model!r}; known: {', '.join(MODELS)}")


def make_engine(engine: str, model: str, *, cache_dir: Path, cpu_threads: int | None = None) -> SpeechEngine:
    """Build an engine by name ("faster-whisper" | "openai-whisper") and model ("tiny.en" | "base")."""
    if engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r}; known: {', '.join(ENGINES)}")
    folder = model_dir(model, cache_dir=cache_dir)
    if engine == "faster-whisper":
        return FasterWhisperEngine(folder, label=model, cpu_threads=cpu_threads)
    if engine == "openai-whisper":
        return OpenAIWhisperEngine(openai_checkpoint(folder, cache_dir), label=model, cpu_threads=cpu_threads)
    raise ValueError(f"unknown speech engine {engine!r}; known: {', '.join(ENGINES)}")


def transcribe_channels(
    engine: SpeechEngine,
    pcm: npt.NDArray[np.float32],
    channels: list[int] | None,
    *,
    offset_seconds: float = 0.0,
) -> list[SpeechSegment]:
    """Transcribe a (channels, samples) piece: downmixed when channels is None, else each listed channel apart."""
    if pcm.ndim == 1:
        pcm = pcm[np.newaxis, :]
    if channels is None:
        return engine.transcribe(downmix(pcm), offset_seconds=offset_seconds)
    segments: list[SpeechSegment] = []
    for channel in channels:
        for seg in engine.transcribe(np.ascontiguousarray(pcm[channel]), offset_seconds=offset_seconds):
            segments.append(replace(seg, channel=channel))
    segments.sort(key=lambda s: (s.start_seconds, s.end_seconds, s.channel or 0))
    return segments
