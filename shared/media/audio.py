"""Audio files as phones and laptops record them: probe, decode a span, find speaker channels, plan pieces.

Everything goes through PyAV (FFmpeg's libraries): m4a/AAC, mp3, wav, flac, ogg (vorbis/opus), webm, mono or
stereo, any sample rate, decoded and resampled to float32 per channel.  Work is bounded: probing decodes a few
seconds and at most demuxes (never decodes) the rest; spans are decoded after a seek; the speaker check and
the piece planner decode only short windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np
import numpy.typing as npt

from shared.errors import PermanentError

SAMPLE_RATE = 16000
MAX_CHANNELS = 32
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
PROBE_DECODE_SECONDS = 5.0  # decoded at the start to prove the stream is audio we can read
MAX_PLAUSIBLE_SECONDS = 7 * 24 * 3600.0  # a longer declared duration is a lie; measure instead
MAX_DECODE_ERRORS = 50  # bad packets skipped in one call before the file counts as corrupt
TAIL_TOLERANCE_SECONDS = 2.5  # audio may end this much before the declared duration (encoder padding)
PREROLL_SECONDS = 0.5  # decoded and dropped before a span, so decoder and resampler state have settled
_S16_SCALE = 32768.0  # 16-bit samples to floats in [-1, 1), as faster-whisper scales them
# Formats whose declared duration FFmpeg estimates from the bitrate (VBR mp3, raw AAC): measured by demuxing.
ESTIMATED_DURATION_FORMATS = frozenset({"mp3", "aac", "ac3", "eac3", "mp2", "adts", "amr"})
# Speaker-channel detection (see speaker_channels): thresholds set from measurements in tests/unit/test_audio.py.
SPEAKER_WINDOWS = 6
SPEAKER_WINDOW_SECONDS = 15.0
FRAME_SECONDS = 0.03
DOMINANCE_DB = 8.0  # a channel "holds" a frame when it is this much louder than every other channel
DOMINANCE_SHARE = 0.08  # ...for at least this share of the active frames
OVERLAP_BLOCK_SECONDS = 1.0
OVERLAP_SHARE = 0.1  # share of active 1 s blocks in which both channels of a pair hold frames
MIN_ACTIVE_FRAMES = 50  # 1.5 s of signal; with less the decision is a downmix
MAX_SPEAKER_CORRELATION = 0.5  # two channels that are copies (or one mic pair) correlate above this
# Piece planner.
PLAN_HOP_SECONDS = 0.01
PLAN_SMOOTH_SECONDS = 0.25
PLAN_QUIET_MARGIN_DB = 3.0

Float32Array = npt.NDArray[np.float32]

_MAGIC_PREFIXES = (
    b"fLaC",
    b"ID3",
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"OggS",
    b"\x1a\x45\xdf\xa3",  # EBML: Matroska/WebM
    b"FORM",  # AIFF
    b"caff",
    b"#!AMR",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF/WMA
    b"MAC ",
    b"wvpk",
    b"TTA1",
    b".snd",
)


@dataclass(frozen=True)
class AudioInfo:
    """What a recording is: its length, channels, native rate, codec and container (FFmpeg's names)."""

    duration_seconds: float
    channels: int
    sample_rate: int
    codec: str
    container: str


def _looks_like_audio_container(head: bytes) -> bool:
    """True when the first bytes carry the signature of an audio or media container (so failures are corruption)."""
    if head.startswith(_MAGIC_PREFIXES) or head[4:8] == b"ftyp":
        return True
    # An MPEG audio frame sync (mp3/mp2/ADTS AAC) at the very start.
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


@contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    """Open a media file for reading, turning FFmpeg's refusals into the pipeline's permanent errors."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except IsADirectoryError as exc:
        raise PermanentError("unsupported_media", f"{path.name} is a folder, not a file") from exc
    if not head:
        raise PermanentError("empty_audio", f"{path.name} is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if _looks_like_audio_container(head):
            raise PermanentError("corrupt_audio", f"{path.name}: unreadable header ({exc})") from exc
        raise PermanentError(
            "unsupported_media", f"{path.name} is not a media file FFmpeg recognises"
        ) from exc
    try:
        yield container
    finally:
        container.close()


def _audio_stream(container: av.container.InputContainer, name: str) -> av.AudioStream:
    """Return the first audio stream, or explain why there is none."""
    if not container.streams.audio:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["none"]
        raise PermanentError(
            "unsupported_media",
            f"{name} has no audio stream (format {container.format.name}, streams: {', '.join(kinds)})",
        )
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if (
        not MIN_SAMPLE_RATE <= (ctx.sample_rate or 0) <= MAX_SAMPLE_RATE
        or not 1 <= ctx.channels <= MAX_CHANNELS
    ):
        raise PermanentError(
            "corrupt_audio",
            f"{name}: absurd audio header ({ctx.sample_rate} Hz, {ctx.channels} channels)",
        )
    return stream


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _decoded_frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    name: str,
    errors: list[str] | None = None,
) -> Iterator[av.AudioFrame]:
    """Yield decoded frames, skipping packets the decoder rejects (a burst of them means the file is corrupt)."""
    seen = errors if errors is not None else []
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                seen.append(str(exc))
                if len(seen) > MAX_DECODE_ERRORS:
                    raise PermanentError(
                        "corrupt_audio", f"{name}: too many undecodable packets ({exc})"
                    ) from exc
                continue
            yield from frames
    except av.FFmpegError as exc:
        # The demuxer gave up (e.g. a stream cut inside a packet): what decoded so far stands.
        seen.append(str(exc))


# MPEG audio frame lengths, to tell a stream cut inside its last frame (an incomplete file).
_MPEG_BITRATES = {  # kbit/s by (MPEG-1?, layer) and bitrate index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mpeg_frame_length(header: bytes) -> int | None:
    """Return the byte length an MPEG audio frame header announces, or None when it is not a valid header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or not 1 <= bitrate_index <= 14 or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _MPEG_BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if mpeg1 or layer == 2 else 72
    return per_frame * bitrate // rate + padding


def _measure_by_demux(container: av.container.InputContainer, stream: av.AudioStream, name: str) -> float:
    """Return the stream's real length by reading (not decoding) every packet; flag an MPEG frame cut short."""
    time_base = stream.time_base
    end = 0.0
    summed = 0.0
    last_size = 0
    last_head = b""
    try:
        container.seek(0)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            last_size, last_head = packet.size, bytes(packet)[:4]
            length = _seconds(packet.duration, time_base) or 0.0
            summed += length
            start = _seconds(packet.pts, time_base)
            if start is not None:
                end = max(end, start + length)
            if summed > MAX_PLAUSIBLE_SECONDS:
                break
    except av.FFmpegError:
        pass  # a damaged tail: what was read is the measurable part
    if stream.codec_context.name in {"mp3", "mp3float", "mp2", "mp2float"} and last_size:
        expected = mpeg_frame_length(last_head)
        if expected is not None and last_size < expected:
            raise PermanentError(
                "corrupt_audio",
                f"{name} is truncated: its last MPEG frame has {last_size} of {expected} bytes "
                f"(about {max(end, summed):.2f} s readable); re-export or re-upload the complete file",
            )
    origin = _seconds(stream.start_time, time_base) or 0.0
    return max(end - origin, summed) if end else summed


def probe_audio(path: Path) -> AudioInfo:
    """Describe an audio file, proving it decodes; raise PermanentError (unsupported/corrupt/empty) otherwise."""
    name = path.name
    with _open(path) as container:
        stream = _audio_stream(container, name)
        ctx = stream.codec_context
        if ctx.codec is None:
            raise PermanentError("unsupported_media", f"{name}: no decoder for codec {ctx.name}")
        samples = 0
        errors: list[str] = []
        for frame in _decoded_frames(container, stream, name, errors):
            samples += frame.samples
            if samples >= PROBE_DECODE_SECONDS * frame.sample_rate:
                break
        if samples == 0 and errors:
            raise PermanentError("corrupt_audio", f"{name}: nothing decodes ({errors[0]})")
        if samples == 0:
            raise PermanentError("empty_audio", f"{name} holds no audio samples")
        rate = int(ctx.sample_rate)
        declared = None
        if container.duration is not None and container.duration > 0:
            declared = container.duration / av.time_base
        elif stream.duration:
            declared = _seconds(stream.duration, stream.time_base)
        format_name = container.format.name
        duration = _duration(container, stream, name, declared)
        duration = max(duration, samples / rate)
        if duration > MAX_PLAUSIBLE_SECONDS:
            raise PermanentError("corrupt_audio", f"{name}: absurd duration ({duration:.0f} s)")
        return AudioInfo(
            duration_seconds=duration,
            channels=int(ctx.channels),
            sample_rate=rate,
            codec=str(ctx.name),
            container=format_name,
        )


def _duration(
    container: av.container.InputContainer, stream: av.AudioStream, name: str, declared: float | None
) -> float:
    """The declared duration when the header is exact and the file holds it all, else the measured one."""
    exact_header = not set(container.format.name.split(",")) & ESTIMATED_DURATION_FORMATS
    if declared is None or not 0 < declared < MAX_PLAUSIBLE_SECONDS or not exact_header:
        return _measure_by_demux(container, stream, name)
    if _tail_present(container, stream, declared):
        return declared
    measured = _measure_by_demux(container, stream, name)
    if measured < declared - max(TAIL_TOLERANCE_SECONDS, 0.02 * declared):
        raise PermanentError(
            "corrupt_audio",
            f"{name} is truncated: its header declares {declared:.2f} s but only "
            f"{measured:.2f} s are present; re-export or re-upload the complete file",
        )
    return measured


def _tail_present(container: av.container.InputContainer, stream: av.AudioStream, declared: float) -> bool:
    """True when packets exist near the declared end (a header promising more than the file holds is caught)."""
    time_base = stream.time_base
    if time_base is None:
        return False
    origin = _seconds(stream.start_time, time_base) or 0.0
    target = origin + max(0.0, declared - TAIL_TOLERANCE_SECONDS + 0.5)
    try:
        container.seek(int(target / time_base), stream=stream, backward=True)
        last_end = None
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            last_end = float((packet.pts + (packet.duration or 0)) * time_base) - origin
        container.seek(0)
    except av.FFmpegError:
        return False
    return last_end is not None and last_end >= declared - TAIL_TOLERANCE_SECONDS


def decode_audio(
    path: Path,
    *,
    start_seconds: float = 0.0,
    end_seconds: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Float32Array:
    """Return float32 samples shaped (channels, samples) of [start, end) at sample_rate, seeking to the start."""
    if start_seconds < 0 or (end_seconds is not None and end_seconds < start_seconds):
        raise ValueError(f"bad span [{start_seconds}, {end_seconds})")
    name = path.name
    first = round(start_seconds * sample_rate)
    last = None if end_seconds is None else round(end_seconds * sample_rate)
    with _open(path) as container:
        stream = _audio_stream(container, name)
        channels = int(stream.codec_context.channels)
        time_base = stream.time_base
        origin = _seconds(stream.start_time, time_base) or 0.0
        seek_to = start_seconds - PREROLL_SECONDS
        if seek_to > 0 and time_base is not None:
            try:
                container.seek(int((origin + seek_to) / time_base), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0)
        chunks = _collect(container, stream, name, first, last, origin, sample_rate)
        if chunks is None:  # the seek overshot the span's start (a bad index): decode from the beginning
            container.seek(0)
            chunks = _collect(container, stream, name, first, last, origin, sample_rate) or []
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)


def _collect(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    name: str,
    first: int,
    last: int | None,
    origin: float,
    sample_rate: int,
) -> list[Float32Array] | None:
    """Decode and resample from the current position, keeping samples [first, last); None if we started late."""
    # 16-bit planar, then scaled to [-1, 1): the samples faster-whisper's own decode_audio gives the model (it
    # resamples to s16 too), so a file reads the same in the worker as in faster-whisper alone. Whisper's beam
    # search reacts to differences far below hearing: float output differs from it by an rms of 8e-6 on speech of
    # rms 0.087, and read a bench lecture at WER 0.052 against 0.046.
    resampler = av.AudioResampler(format="s16p", rate=sample_rate)
    chunks: list[Float32Array] = []
    position: int | None = None  # index (at sample_rate, from the stream's origin) of the next output sample

    def keep(frames: list[av.AudioFrame]) -> bool:
        nonlocal position
        for out in frames:
            data = out.to_ndarray().astype(np.float32) / _S16_SCALE
            begin = position or 0
            position = begin + data.shape[1]
            lo = max(first - begin, 0)
            hi = data.shape[1] if last is None else min(last - begin, data.shape[1])
            if hi > lo:
                chunks.append(data[:, lo:hi])
            if last is not None and position >= last:
                return False
        return True

    for frame in _decoded_frames(container, stream, name):
        if position is None:
            aligned = _align_first_frame(frame, origin, sample_rate)
            if aligned is None:
                continue
            frame, position = aligned
            if first > 0 and position > first:
                return None
        if not keep(resampler.resample(frame)):
            return chunks
    keep(resampler.resample(None))
    return chunks


def _align_first_frame(
    frame: av.AudioFrame, origin: float, sample_rate: int
) -> tuple[av.AudioFrame, int] | None:
    """Trim the first decoded frame to a sample shared by both rates; return it and its output sample index.

    A resampler started at an arbitrary input sample would produce output samples between those of a decode
    from the beginning (a sub-sample phase shift): starting on the common grid keeps spans identical.
    """
    rate = frame.sample_rate
    start = 0 if frame.time is None else max(0, round((frame.time - origin) * rate))
    grid = rate // math.gcd(rate, sample_rate)
    drop = (-start) % grid
    if drop == 0:
        return frame, start * sample_rate // rate
    if drop >= frame.samples:
        return None
    data: Any = frame.to_ndarray()
    planar = frame.format.is_planar
    data = data[:, drop:] if planar else data[:, drop * len(frame.layout.channels) :]
    trimmed = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout
    )
    trimmed.sample_rate = rate
    return trimmed, (start + drop) * sample_rate // rate


def _frame_energies(pcm: Float32Array, frame: int) -> npt.NDArray[np.float64]:
    """Mean square per channel and frame: shape (channels, frames)."""
    count = pcm.shape[1] // frame
    framed = pcm[:, : count * frame].astype(np.float64).reshape(pcm.shape[0], count, frame)
    return np.asarray((framed**2).mean(axis=2))


def _windows(duration: float, count: int, length: float) -> list[tuple[float, float]]:
    """Up to count windows of the given length spread evenly over [0, duration]."""
    if duration <= length * count:
        # Short file: cover it in consecutive windows.
        n = max(1, math.ceil(duration / length))
        return [(i * length, min(duration, (i + 1) * length)) for i in range(n)]
    starts = np.linspace(0.0, duration - length, count)
    return [(float(s), float(s) + length) for s in starts]


def _max_correlation(x: Float32Array, y: Float32Array, max_lag: int) -> tuple[float, float]:
    """Return (correlation at lag 0, largest |normalised cross-correlation| within ±max_lag samples)."""
    n = len(x)
    if n == 0:
        return 0.0, 0.0
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size))
    xcorr = np.fft.irfft(spectrum, size)
    norm = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y))) or 1.0
    lags = np.concatenate([xcorr[: max_lag + 1], xcorr[-max_lag:]]) if max_lag else xcorr[:1]
    return float(xcorr[0]) / norm, float(np.abs(lags).max()) / norm


@dataclass(frozen=True)
class ChannelReport:
    """The figures speaker_channels decides from (exposed for tests and tuning)."""

    active_frames: int
    dominance: tuple[
        float, ...
    ]  # per channel: share of active frames where it is DOMINANCE_DB above the rest
    overlap: dict[
        tuple[int, int], float
    ]  # per pair: share of 1 s blocks where each of the two dominates a frame
    correlation: dict[tuple[int, int], float]  # per pair: max |normalised cross-correlation| within ±20 ms
    zero_lag: dict[tuple[int, int], float]  # per pair: signed correlation at lag 0


def channel_report(path: Path, info: AudioInfo) -> ChannelReport:
    """Measure how the channels of a file relate, on a few windows spread over it."""
    frame = round(FRAME_SECONDS * SAMPLE_RATE)
    block = round(OVERLAP_BLOCK_SECONDS / FRAME_SECONDS)
    channels = info.channels
    pairs = [(a, b) for a in range(channels) for b in range(a + 1, channels)]
    energies: list[npt.NDArray[np.float64]] = []
    pieces: list[Float32Array] = []
    for start, end in _windows(info.duration_seconds, SPEAKER_WINDOWS, SPEAKER_WINDOW_SECONDS):
        pcm = decode_audio(path, start_seconds=start, end_seconds=end)
        if pcm.shape[1] >= frame:
            energies.append(_frame_energies(pcm, frame))
            pieces.append(pcm)
    if not energies:
        return ChannelReport(0, (0.0,) * channels, dict.fromkeys(pairs, 0.0), {}, {})
    loudest_all = np.concatenate([e.max(axis=0) for e in energies])
    # Active frames: clearly above the quiet floor of the recording and within 30 dB of its loud parts.
    floor = float(np.percentile(loudest_all, 20))
    threshold = max(1e-7, floor * 10.0, float(np.percentile(loudest_all, 95)) * 1e-3)
    held = np.zeros(channels)
    count = 0
    overlap_blocks = dict.fromkeys(pairs, 0)
    active_blocks = 0
    for energy in energies:
        levels = 10.0 * np.log10(energy + 1e-12)
        active = energy.max(axis=0) > threshold
        count += int(active.sum())
        # holds[c, f]: channel c is DOMINANCE_DB louder than every other channel in active frame f.
        holds = np.zeros_like(levels, dtype=bool)
        for ch in range(channels):
            others = np.delete(levels, ch, axis=0).max(axis=0)
            holds[ch] = active & (levels[ch] - others >= DOMINANCE_DB)
        held += holds.sum(axis=1)
        for lo in range(0, energy.shape[1] - block // 2, block):
            if active[lo : lo + block].sum() < block // 4:
                continue
            active_blocks += 1
            for a, b in pairs:
                if holds[a, lo : lo + block].any() and holds[b, lo : lo + block].any():
                    overlap_blocks[(a, b)] += 1
    dominance = tuple(float(h) / count if count else 0.0 for h in held)
    overlap = {p: overlap_blocks[p] / active_blocks if active_blocks else 0.0 for p in pairs}
    correlation: dict[tuple[int, int], float] = {}
    zero_lag: dict[tuple[int, int], float] = {}
    max_lag = round(0.02 * SAMPLE_RATE)
    for a, b in pairs:
        # Correlate window by window (bounded FFT sizes), weighting each by its energy.
        num0 = numx = den = 0.0
        for pcm in pieces:
            weight = math.sqrt(float(np.dot(pcm[a], pcm[a])) * float(np.dot(pcm[b], pcm[b])))
            zero, best = _max_correlation(pcm[a], pcm[b], max_lag)
            num0 += zero * weight
            numx += best * weight
            den += weight
        correlation[(a, b)] = numx / den if den else 0.0
        zero_lag[(a, b)] = num0 / den if den else 0.0
    return ChannelReport(count, dominance, overlap, correlation, zero_lag)


def speaker_channels(path: Path, info: AudioInfo) -> list[int] | None:
    """Return the channels to transcribe one by one (different speakers), or None when a downmix is right."""
    if info.channels < 2:
        return None
    report = channel_report(path, info)
    if report.active_frames < MIN_ACTIVE_FRAMES:
        return None
    # Different speakers on different mics: each channel holds its own frames, within the same seconds
    # (they talk over each other, which a downmix cannot untangle), and the channels are not copies of one
    # signal.  One talker moving between two mics swaps dominance only slowly and stays correlated.
    speakers: set[int] = set()
    for (a, b), share in report.overlap.items():
        if (
            min(report.dominance[a], report.dominance[b]) >= DOMINANCE_SHARE
            and share >= OVERLAP_SHARE
            and report.correlation[(a, b)] < MAX_SPEAKER_CORRELATION
        ):
            speakers.update((a, b))
    if speakers:
        return sorted(speakers)
    # Channels in opposite phase cancel in a downmix: transcribe the louder one alone.
    if info.channels == 2 and report.zero_lag.get((0, 1), 0.0) < -MAX_SPEAKER_CORRELATION:
        return [0] if report.dominance[0] >= report.dominance[1] else [1]
    return None


def quiet_energy(pcm: Float32Array, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float64]:
    """Return the smoothed short-window level (dB) every PLAN_HOP_SECONDS, loudest channel per hop."""
    hop = max(1, round(PLAN_HOP_SECONDS * sample_rate))
    energy = _frame_energies(pcm, hop).max(axis=0)
    width = max(1, round(PLAN_SMOOTH_SECONDS / PLAN_HOP_SECONDS))
    if len(energy) >= width:
        energy = np.convolve(energy, np.ones(width) / width, mode="same")
    return np.asarray(10.0 * np.log10(energy + 1e-12))


def _quietest_moment(levels: npt.NDArray[np.float64], nominal_index: int) -> int:
    """Index of the middle of the longest quiet run (within a few dB of the minimum), nearest the nominal cut."""
    quiet = levels <= levels.min() + PLAN_QUIET_MARGIN_DB
    best: tuple[int, int] | None = None
    best_key: tuple[int, int] = (0, 0)
    i = 0
    while i < len(quiet):
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        middle = (i + j - 1) // 2
        key = (j - i, -abs(middle - nominal_index))
        if best is None or key > best_key:
            best, best_key = (i, j), key
        i = j
    assert best is not None
    return (best[0] + best[1] - 1) // 2


def plan_pieces(
    path: Path, info: AudioInfo, *, piece_seconds: float, search_seconds: float = 20.0
) -> list[tuple[float, float]]:
    """Cut [0, duration] into contiguous spans of about piece_seconds, each cut moved into the quietest moment."""
    if piece_seconds <= 0:
        raise ValueError("piece_seconds must be positive")
    duration = info.duration_seconds
    count = math.floor(duration / piece_seconds + 0.5)
    if duration < 1.5 * piece_seconds or count < 2:
        return [(0.0, duration)]
    step = duration / count
    search = min(search_seconds, 0.4 * step)
    cuts: list[float] = []
    for k in range(1, count):
        nominal = k * step
        lo, hi = max(0.0, nominal - search), min(duration, nominal + search)
        pcm = decode_audio(path, start_seconds=lo, end_seconds=hi)
        levels = quiet_energy(pcm)
        if len(levels) == 0:
            cuts.append(nominal)
            continue
        index = _quietest_moment(levels, round((nominal - lo) / PLAN_HOP_SECONDS))
        cuts.append(round(lo + (index + 0.5) * PLAN_HOP_SECONDS, 3))
    bounds = [0.0, *cuts, duration]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def downmix(pcm: Float32Array) -> Float32Array:
    """Average the channels of a (channels, samples) array into one mono signal."""
    return np.ascontiguousarray(pcm.mean(axis=0, dtype=np.float32), dtype=np.float32)
