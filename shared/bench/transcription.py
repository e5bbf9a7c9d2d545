"""Benchmark of the speech engines: `python -m shared.bench.transcription` (from the repository root).

For faster-whisper tiny.en, openai-whisper tiny.en and faster-whisper base: WER and real-time factor on a
generated lecture (espeak-ng, deterministic text) and on each real recording in tests/data/audio.
RTF = processing seconds / audio seconds (lower is faster; 0.1 means ten times faster than real time).
Figures only: timings depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.bench import sample_file
from shared.media.audio import decode_audio
from shared.media.speech import make_engine, transcribe_channels

CONFIGS = (("faster-whisper", "tiny.en"), ("openai-whisper", "tiny.en"), ("faster-whisper", "base"))


@dataclass(frozen=True)
class Sample:
    """One recording and its reference transcript."""

    name: str
    path: Path
    reference: str


@dataclass(frozen=True)
class Row:
    """One engine on one recording."""

    engine: str
    sample: str
    audio_seconds: float
    seconds: float
    wer: float

    @property
    def rtf(self) -> float:
        """Processing time over audio time."""
        return self.seconds / self.audio_seconds


def recorded_samples(folder: Path) -> list[Sample]:
    """The recordings in `folder` that have a reference transcript beside them (at least one)."""
    from tests.media.speech import ldc_reference

    samples = []
    for audio in sorted(folder.glob("*")):
        if audio.suffix not in {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm"}:
            continue
        for ref in (audio.with_suffix(".ref.txt"), audio.with_suffix(".txt")):
            if ref.is_file():
                samples.append(Sample(audio.name, audio, ldc_reference(ref)))
                break
    if not samples:
        raise SystemExit(f"no recording with a reference transcript (.ref.txt or .txt) in {folder}")
    return samples


def run(configs: Sequence[tuple[str, str]], samples: Sequence[Sample], cache_dir: Path) -> list[Row]:
    """Transcribe every sample with every engine configuration and score it."""
    from tests.media.speech import wer

    rows = []
    for engine_name, model in configs:
        started = time.perf_counter()
        engine = make_engine(engine_name, model, cache_dir=cache_dir)
        print(f"loaded {engine.name} in {time.perf_counter() - started:.1f} s", flush=True)
        for sample in samples:
            pcm = decode_audio(sample.path)
            started = time.perf_counter()
            segments = transcribe_channels(engine, pcm, None)
            elapsed = time.perf_counter() - started
            text = " ".join(s.text for s in segments)
            rows.append(
                Row(engine.name, sample.name, pcm.shape[1] / 16000, elapsed, wer(sample.reference, text))
            )
            print(f"  {sample.name}: {text[:100]}", flush=True)
        del engine
    return rows


def print_table(rows: Sequence[Row]) -> None:
    """Print the figures as a fixed-width table, with per-engine totals."""
    print(
        f"\n{'engine':<24} {'recording':<16} {'audio s':>8} {'proc s':>8} {'RTF':>6} {'x RT':>6} {'WER':>7}"
    )
    for row in rows:
        print(
            f"{row.engine:<24} {row.sample:<16} {row.audio_seconds:>8.1f} {row.seconds:>8.2f} "
            f"{row.rtf:>6.3f} {1 / row.rtf:>6.1f} {row.wer:>6.1%}"
        )
    for engine in dict.fromkeys(r.engine for r in rows):
        mine = [r for r in rows if r.engine == engine]
        audio = sum(r.audio_seconds for r in mine)
        spent = sum(r.seconds for r in mine)
        print(
            f"{engine:<24} {'all':<16} {audio:>8.1f} {spent:>8.2f} {spent / audio:>6.3f} {audio / spent:>6.1f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Generate the lecture, run every configuration, print the table."""
    from tests.media.speech import make_lecture

    # Models come from local folders only; the Whisper libraries are imported lazily, after this.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("var/models"), help="assembled/converted models"
    )
    parser.add_argument("--lecture-seconds", type=float, default=60.0)
    parser.add_argument(
        "--audio-dir", type=Path, help="recordings with references (default: tests/data/audio)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lecture = Path(tmp) / "lecture.wav"
        reference = make_lecture(lecture, seconds=args.lecture_seconds)
        samples = [
            Sample("lecture.wav", lecture, reference),
            *recorded_samples(args.audio_dir or sample_file("audio")),
        ]
        print_table(run(CONFIGS, samples, args.cache_dir))


if __name__ == "__main__":
    main()
