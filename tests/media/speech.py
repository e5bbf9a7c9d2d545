"""Speech test media: espeak-ng lectures, two-speaker stereo, silence-spaced clips, re-encodings, and WER.

Everything is deterministic (fixed sentence lists, fixed voices) so tests and benchmarks compare like with like.
Needs Debian's `espeak-ng` and `ffmpeg` on PATH (`make system-deps`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np
import numpy.typing as npt

# Topics of a first-year survey lecture; plain words (no digits or names Whisper may spell differently).
LECTURE_TOPICS: dict[str, list[str]] = {
    "biology": [
        "Good morning everyone, today we begin with the structure of the living cell.",
        "Every cell is surrounded by a thin membrane that controls what enters and what leaves.",
        "Inside the cell, the nucleus stores the genetic information that guides growth.",
        "The mitochondria convert sugar and oxygen into the energy the cell needs to survive.",
        "Plant cells also have a rigid wall and small green bodies that capture sunlight.",
        "When a cell divides, it first copies its genetic material and then splits in two.",
        "Remember that mistakes in this copying process can lead to changes we call mutations.",
    ],
    "history": [
        "Let us now turn to the history of the printing press and how it changed Europe.",
        "Before printing, books were copied by hand, which made them rare and very expensive.",
        "The new machines allowed the same text to be produced quickly and cheaply.",
        "As books spread, more people learned to read and new ideas travelled faster than ever.",
        "Many historians argue that printing helped to start the scientific revolution.",
        "It also allowed governments and churches to reach ordinary people with their messages.",
    ],
    "computing": [
        "Our next topic is how a computer stores and processes information.",
        "At the lowest level, everything is represented as a long sequence of ones and zeros.",
        "The processor reads instructions from memory and carries them out one after another.",
        "A program is simply a list of such instructions written in a language people can read.",
        "When the memory is full, the system moves unused data to the much slower disk.",
        "This is why adding more memory often makes an old computer feel faster.",
    ],
    "economics": [
        "Finally, we will discuss supply and demand, the basic ideas of economics.",
        "When the price of a product rises, people usually want to buy less of it.",
        "At the same time, sellers are happy to offer more of the product at a higher price.",
        "The market price settles where the amount offered matches the amount people want.",
        "A sudden shortage pushes the price up until demand falls back in line with supply.",
        "For the next class, please read the chapter on markets and write a short summary.",
    ],
}

# Two lapel microphones in a seminar: a lecturer and a student asking about something else entirely.
LEFT_SENTENCES = [
    "The river carries fresh water from the mountains down to the sea.",
    "Farmers along the banks depend on the spring floods for their crops.",
    "In dry years the water level falls and the fields turn brown.",
]
RIGHT_SENTENCES = [
    "My grandmother baked bread every morning before sunrise.",
    "She taught me to fold the dough slowly and let it rest.",
    "The kitchen always smelled of butter and warm honey.",
]

SAMPLE_RATE = 16000

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def speak(
    text: str,
    path: Path,
    *,
    voice: str = "en-us",
    words_per_minute: int = 150,
    sample_rate: int | None = None,
    ssml: bool = False,
) -> Path:
    """Speak text with espeak-ng into a mono WAV at path (espeak's 22.05 kHz unless sample_rate is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["espeak-ng", "-v", voice, "-s", str(words_per_minute)]
    if ssml:
        command.append("-m")
    if sample_rate is None:
        subprocess.run([*command, "-w", str(path), "--stdin"], input=text.encode(), check=True)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run([*command, "-w", str(raw), "--stdin"], input=text.encode(), check=True)
        _ffmpeg(["-i", str(raw), "-ar", str(sample_rate), str(path)])
    return path


def _ffmpeg(args: Sequence[str]) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def lecture_text(seconds: float, words_per_minute: int = 150) -> list[list[str]]:
    """Return about `seconds` of lecture as paragraphs (one per topic turn) of sentences, deterministically."""
    budget = seconds * words_per_minute / 60.0 * 0.9  # espeak's sentence pauses take the rest
    paragraphs: list[list[str]] = []
    words = 0
    round_ = 0
    while words < budget:
        for topic in LECTURE_TOPICS.values():
            paragraph = []
            # Each round takes the next few sentences of every topic, so long lectures do not repeat at once.
            for k in range(3):
                sentence = topic[(round_ * 3 + k) % len(topic)]
                paragraph.append(sentence)
                words += len(sentence.split())
                if words >= budget:
                    break
            paragraphs.append(paragraph)
            if words >= budget:
                break
        round_ += 1
    return paragraphs


def make_lecture(path: Path, *, seconds: float, voice: str = "en-us", sample_rate: int | None = None) -> str:
    """Write a multi-topic lecture of about `seconds` to path (WAV) and return its reference text."""
    paragraphs = lecture_text(seconds)
    # SSML pauses between topics, like a lecturer turning a slide.
    body = '<break time="900ms"/>'.join(" ".join(p) for p in paragraphs)
    speak(f"<speak>{body}</speak>", path, voice=voice, ssml=True, sample_rate=sample_rate)
    return " ".join(" ".join(p) for p in paragraphs)


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """Read a 16-bit PCM WAV as float32 (channels, samples) and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    pcm = np.ascontiguousarray(data.reshape(-1, channels).T, dtype=np.float32) / np.float32(32768.0)
    return pcm.astype(np.float32), rate


def write_wav(path: Path, pcm: npt.NDArray[np.float32], sample_rate: int) -> Path:
    """Write float32 (channels, samples) in [-1, 1] as a 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.atleast_2d(pcm)
    ints = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(pcm.shape[0])
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(ints.T.tobytes())
    return path


def _spoken(text: str, voice: str, words_per_minute: int = 150) -> npt.NDArray[np.float32]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = speak(
            text, Path(tmp) / "s.wav", voice=voice, words_per_minute=words_per_minute, sample_rate=SAMPLE_RATE
        )
        pcm, _ = read_wav(wav)
        return np.ascontiguousarray(pcm[0], dtype=np.float32)


def make_two_speaker_stereo(
    path: Path, *, crosstalk_db: float = -20.0, delay_ms: float = 3.0, right_offset_seconds: float = 1.5
) -> tuple[str, str]:
    """Write a 16 kHz stereo WAV: one speaker per lapel mic, talking over each other; return (left, right) text."""
    left_text, right_text = " ".join(LEFT_SENTENCES), " ".join(RIGHT_SENTENCES)
    left = _spoken(left_text, "en-us")
    right = _spoken(right_text, "en-gb+f3", words_per_minute=160)
    offset = round(right_offset_seconds * SAMPLE_RATE)
    length = max(len(left), offset + len(right)) + SAMPLE_RATE // 2
    a = np.zeros(length, dtype=np.float32)
    b = np.zeros(length, dtype=np.float32)
    a[: len(left)] = left
    b[offset : offset + len(right)] = right
    # Each mic also hears the other person, quieter and a few milliseconds later, over a faint room hiss.
    gain, delay = 10 ** (crosstalk_db / 20.0), round(delay_ms * SAMPLE_RATE / 1000.0)
    rng = np.random.default_rng(7)
    hiss = 10 ** (-60 / 20.0)
    mic_left = a + gain * np.roll(b, delay) + rng.normal(0.0, hiss, length).astype(np.float32)
    mic_right = b + gain * np.roll(a, delay) + rng.normal(0.0, hiss, length).astype(np.float32)
    write_wav(path, np.stack([mic_left, mic_right]).astype(np.float32) * 0.8, SAMPLE_RATE)
    return left_text, right_text


def make_duplicated_stereo(src: Path, dst: Path) -> Path:
    """Write a stereo WAV carrying the same (mono) signal in both channels."""
    pcm, rate = read_wav(src)
    return write_wav(dst, np.vstack([pcm[0], pcm[0]]), rate)


def make_silence_spaced(
    path: Path,
    sentences: Sequence[str],
    *,
    gap_seconds: float = 1.5,
    voice: str = "en-us",
    noise_db: float = -55.0,
) -> tuple[str, list[tuple[float, float]]]:
    """Write sentences separated by quiet gaps (faint noise) to a 16 kHz WAV; return text and the gaps' spans."""
    parts: list[npt.NDArray[np.float32]] = []
    gaps: list[tuple[float, float]] = []
    position = 0
    gap = round(gap_seconds * SAMPLE_RATE)
    for i, sentence in enumerate(sentences):
        voice_pcm = _spoken(sentence, voice)
        # espeak pads its output with a little silence: trim it so the gap spans are exact.
        loud = np.flatnonzero(np.abs(voice_pcm) > 1e-3)
        voice_pcm = voice_pcm[loud[0] : loud[-1] + 1] if len(loud) else voice_pcm
        parts.append(voice_pcm)
        position += len(voice_pcm)
        if i < len(sentences) - 1:
            parts.append(np.zeros(gap, dtype=np.float32))
            gaps.append((position / SAMPLE_RATE, (position + gap) / SAMPLE_RATE))
            position += gap
    pcm = np.concatenate(parts)
    pcm = pcm + np.random.default_rng(3).normal(0.0, 10 ** (noise_db / 20.0), len(pcm)).astype(np.float32)
    write_wav(path, pcm, SAMPLE_RATE)
    return " ".join(sentences), gaps


ENCODINGS: dict[str, list[str]] = {
    "m4a": ["-c:a", "aac", "-b:a", "96k"],
    "mp3": ["-c:a", "libmp3lame", "-q:a", "4"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "4"],
    "opus": ["-c:a", "libopus", "-b:a", "48k"],
    "webm": ["-c:a", "libopus", "-b:a", "48k"],
    "flac": ["-c:a", "flac"],
    "wav": ["-c:a", "pcm_s16le"],
}

OPUS_FORMATS = frozenset({"opus", "webm"})
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def encode(
    src_wav: Path, dst: Path, fmt: str, *, sample_rate: int | None = None, channels: int | None = None
) -> Path:
    """Re-encode src_wav to dst as fmt (m4a, mp3, ogg, opus, webm, flac, wav), optionally resampled or remixed."""
    if fmt not in ENCODINGS:
        raise ValueError(f"unknown format {fmt}; known: {sorted(ENCODINGS)}")
    if fmt in OPUS_FORMATS and sample_rate is not None and sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus encodes only at {OPUS_RATES} Hz, not {sample_rate}")
    args = ["-i", str(src_wav), "-vn", *ENCODINGS[fmt]]
    if sample_rate is not None:
        args += ["-ar", str(sample_rate)]
    if channels is not None:
        args += ["-ac", str(channels)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg([*args, str(dst)])
    return dst


def number_words(n: int) -> str:
    """Spell a non-negative integer below a million in English words."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalize(text: str) -> str:
    """Lower-case, spell numbers, drop punctuation and apostrophes, collapse spaces (for WER)."""
    text = text.lower().replace("%", " percent").replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    text = re.sub("[-\u2010\u2013\u2014/]", " ", text)
    text = re.sub("['\u2019]", "", text)
    text = re.sub(r"[^a-z ]+", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of hypothesis against reference after normalize() (1.0 when the hypothesis is empty)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def ldc_reference(path: Path) -> str:
    """Read a TIMIT-style transcript ('start end text') and return its text."""
    fields = path.read_text().split(maxsplit=2)
    return fields[2].strip() if len(fields) == 3 and fields[0].isdigit() else path.read_text().strip()
