"""Probe, decode, speaker channels and piece planning on real encodings (no Whisper model; a few seconds)."""

from __future__ import annotations

import itertools
import resource
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from shared.errors import PermanentError
from shared.media.audio import (
    AudioInfo,
    channel_report,
    decode_audio,
    mpeg_frame_length,
    plan_pieces,
    probe_audio,
    speaker_channels,
)
from tests.media import DATA
from tests.media.speech import (
    encode,
    make_duplicated_stereo,
    make_lecture,
    make_silence_spaced,
    make_two_speaker_stereo,
    read_wav,
    write_wav,
)

pytestmark = pytest.mark.timeout(120)

BAD = DATA / "bad"
AUDIO = DATA / "audio"
FORMATS = ("m4a", "mp3", "ogg", "opus", "webm", "flac", "wav")
# (sample rate, channels) per format; Opus encodes only at 8/12/16/24/48 kHz and always decodes at 48 kHz.
LAYOUTS = ((8000, 1), (22050, 2), (44100, 2), (48000, 1))
OPUS_LAYOUTS = ((8000, 1), (16000, 2), (24000, 2), (48000, 1))
EXPECTED_CODEC = {
    "m4a": "aac",
    "mp3": "mp3float",
    "ogg": "vorbis",
    "opus": "opus",
    "webm": "opus",
    "flac": "flac",
    "wav": "pcm_s16le",
}
CASES = [
    (fmt, rate, channels)
    for fmt in FORMATS
    for rate, channels in (OPUS_LAYOUTS if fmt in {"opus", "webm"} else LAYOUTS)
]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of generated speech: a 12 s lecture (22.05 kHz mono) and its stereo copy."""
    folder = tmp_path_factory.mktemp("audio")
    make_lecture(folder / "lecture.wav", seconds=12)
    make_duplicated_stereo(folder / "lecture.wav", folder / "lecture_stereo.wav")
    return folder


@pytest.fixture(scope="session")
def long_mp3(media: Path) -> Path:
    """A 9-minute 16 kHz mp3: the lecture looped 50 times (cheap to encode, long enough to see a seek)."""
    path = media / "long.mp3"
    source = str(media / "lecture.wav")
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "49", "-i", source]
    subprocess.run([*command, "-ar", "16000", "-c:a", "libmp3lame", "-q:a", "9", str(path)], check=True)
    return path


def _envelope(pcm: np.ndarray, hop: int = 1600) -> np.ndarray:
    mono = pcm.mean(axis=0)
    count = len(mono) // hop
    return np.sqrt((mono[: count * hop].reshape(count, hop) ** 2).mean(axis=1))


@pytest.mark.parametrize(("fmt", "rate", "channels"), CASES, ids=[f"{f}-{r}-{c}ch" for f, r, c in CASES])
def test_probe_and_decode_every_format(media: Path, fmt: str, rate: int, channels: int) -> None:
    """Every phone/laptop format at every common rate, mono and stereo, probes right and decodes the speech."""
    source = media / ("lecture_stereo.wav" if channels == 2 else "lecture.wav")
    path = encode(
        source, media / f"lecture_{rate}_{channels}.{fmt}", fmt, sample_rate=rate, channels=channels
    )
    info = probe_audio(path)
    reference = decode_audio(media / "lecture.wav")
    expected_seconds = reference.shape[1] / 16000

    assert info.channels == channels
    assert info.sample_rate == (48000 if fmt in {"opus", "webm"} else rate)
    assert info.codec == EXPECTED_CODEC[fmt]
    assert info.duration_seconds == pytest.approx(expected_seconds, abs=0.25)

    pcm = decode_audio(path)
    assert pcm.dtype == np.float32
    assert pcm.shape[0] == channels
    assert pcm.shape[1] == pytest.approx(reference.shape[1], abs=0.25 * 16000)
    # The same speech comes out: the loudness envelopes (100 ms hops) match the source's.
    a, b = _envelope(reference), _envelope(pcm)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95
    if channels == 2:
        assert np.corrcoef(pcm[0], pcm[1])[0, 1] > 0.99  # joint-stereo codecs keep the copies close


def _aligned(full: np.ndarray, span: np.ndarray, start: int, max_lag: int) -> tuple[int, float]:
    """The lag (samples) within ±max_lag where span best matches full[start:], and their correlation there."""
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        ref = full[start + lag : start + lag + len(span)]
        if start + lag >= 0 and len(ref) == len(span):
            corr = float(np.corrcoef(ref, span)[0, 1])
            best = max(best, (lag, corr), key=lambda pair: pair[1])
    return best


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_span_is_exactly_the_same_samples_as_a_full_decode(media: Path, fmt: str) -> None:
    """A decoded span equals the same samples of a full decode (the seek and the resampler phase are exact)."""
    path = encode(media / "lecture_stereo.wav", media / f"span_44100.{fmt}", fmt, sample_rate=44100)
    full = decode_audio(path)
    for start, end in [(0.0, 1.0), (3.37, 7.9), (9.5, None)]:
        span = decode_audio(path, start_seconds=start, end_seconds=end)
        stop = full.shape[1] if end is None else round(end * 16000)
        expected = full[:, round(start * 16000) : stop]
        assert span.shape == expected.shape
        np.testing.assert_allclose(span, expected, atol=1e-6)


@pytest.mark.parametrize(("fmt", "max_lag"), [("m4a", 0), ("ogg", 240), ("opus", 240), ("webm", 240)])
def test_span_of_lossy_formats_matches_a_full_decode(media: Path, fmt: str, max_lag: int) -> None:
    """AAC spans sit on the same samples (only its noise substitution differs); Vorbis/Opus timestamps in Ogg
    and WebM are coarse, so a span may sit up to 15 ms off a full decode: harmless for speech timings."""
    path = encode(media / "lecture_stereo.wav", media / f"span_lossy.{fmt}", fmt)
    full = decode_audio(path)[0]
    for start in (0.7, 3.37, 6.0):
        span = decode_audio(path, start_seconds=start, end_seconds=start + 3.0)[0]
        lag, corr = _aligned(full, span, round(start * 16000), max_lag)
        print(fmt, start, lag, corr)
        assert abs(lag) <= max_lag and corr > 0.99


def test_late_span_seeks_instead_of_decoding_everything(long_mp3: Path) -> None:
    """The last 10 s of a 9-minute mp3 decode in a small fraction of a full decode's time."""
    info = probe_audio(long_mp3)
    assert info.duration_seconds > 480
    started = time.perf_counter()
    full = decode_audio(long_mp3)
    full_seconds = time.perf_counter() - started
    started = time.perf_counter()
    start = info.duration_seconds - 10
    span = decode_audio(long_mp3, start_seconds=start)
    span_seconds = time.perf_counter() - started
    print(f"full decode {full_seconds:.3f} s, last 10 s {span_seconds:.3f} s")
    # The demuxed duration counts the encoder's padding frames (~0.1 s) that the decoder trims.
    assert span.shape[1] == pytest.approx(10 * 16000, abs=0.15 * 16000)
    np.testing.assert_allclose(span, full[:, round(start * 16000) :], atol=1e-6)
    assert span_seconds < full_seconds / 5


def test_truncated_mp3_is_corrupt() -> None:
    """beets' truncated.mp3: 0.5 s of near-silence whose last MPEG frame is cut (188 of 261 bytes): corrupt."""
    path = BAD / "beets-check_truncated.mp3"
    with pytest.raises(PermanentError) as caught:
        probe_audio(path)
    assert caught.value.code == "corrupt_audio"
    assert "truncated" in caught.value.reason
    # The verdict belongs to probe_audio; decoding stays lenient and returns the readable frames.
    assert decode_audio(path).shape[1] == pytest.approx(0.5 * 16000, abs=400)
    assert mpeg_frame_length(path.read_bytes()[2110:2114]) == 261


def test_ooming_flac_header_is_corrupt_fast_and_small() -> None:
    """mutagen's FLAC whose header claims 1.8e9 comments: corrupt_audio, in milliseconds, without a big allocation."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(PermanentError) as caught:
        probe_audio(BAD / "mutagen_ooming-header.flac")
    assert caught.value.code == "corrupt_audio"
    with pytest.raises(PermanentError):
        decode_audio(BAD / "mutagen_ooming-header.flac")
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (4).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * 12 for _ in range(4)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.wav", b"", "empty_audio"),
        ("notes.mp3", b"These are my lecture notes, not a recording.\n" * 20, "unsupported_media"),
        ("photo.m4a", _png(), "unsupported_media"),
        ("garbage.flac", b"fLaC" + bytes(range(256)) * 40, "corrupt_audio"),
    ],
)
def test_not_audio_is_rejected_with_the_right_code(
    tmp_path: Path, name: str, content: bytes, code: str
) -> None:
    """Zero bytes, text renamed .mp3, a PNG renamed .m4a, garbage after a FLAC signature."""
    path = tmp_path / name
    path.write_bytes(content)
    for call in (probe_audio, decode_audio):
        with pytest.raises(PermanentError) as caught:
            call(path)
        assert caught.value.code == code, caught.value.reason


def test_header_only_wav_is_empty(tmp_path: Path) -> None:
    """A WAV header with no samples is empty_audio; a zero-channel header is corrupt_audio."""
    source = (AUDIO / "LDC93S1.wav").read_bytes()
    (tmp_path / "header.wav").write_bytes(source[:44])
    with pytest.raises(PermanentError) as caught:
        probe_audio(tmp_path / "header.wav")
    assert caught.value.code == "empty_audio"
    (tmp_path / "zero.wav").write_bytes(source[:22] + (0).to_bytes(2, "little") + source[24:])
    with pytest.raises(PermanentError) as caught:
        probe_audio(tmp_path / "zero.wav")
    assert caught.value.code == "corrupt_audio"


@pytest.mark.parametrize("fmt", ["flac", "webm", "mp3", "m4a"])
def test_cut_off_upload_is_corrupt(media: Path, tmp_path: Path, fmt: str) -> None:
    """A file cut in half (an interrupted upload) whose header or framing shows it: corrupt_audio, 'truncated'."""
    whole = encode(media / "lecture.wav", tmp_path / f"whole.{fmt}", fmt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2 + 1])
    with pytest.raises(PermanentError) as caught:
        probe_audio(cut)
    assert caught.value.code == "corrupt_audio"


def test_shared_samples_probe() -> None:
    """The shared real recordings probe as what they are."""
    assert probe_audio(AUDIO / "jfk.flac") == AudioInfo(11.0, 2, 44100, "flac", "flac")
    ldc = probe_audio(AUDIO / "LDC93S1.wav")
    assert (ldc.channels, ldc.sample_rate, ldc.codec) == (1, 16000, "pcm_s16le")
    assert ldc.duration_seconds == pytest.approx(46797 / 16000)


def test_speaker_channels(media: Path, tmp_path: Path) -> None:
    """Mono and duplicated stereo downmix (None); two lapel mics talking over each other come apart ([0, 1])."""
    mono = media / "lecture.wav"
    assert speaker_channels(mono, probe_audio(mono)) is None
    duplicated = media / "lecture_stereo.wav"
    assert speaker_channels(duplicated, probe_audio(duplicated)) is None
    assert speaker_channels(AUDIO / "jfk.flac", probe_audio(AUDIO / "jfk.flac")) is None
    for crosstalk in (-30.0, -20.0, -10.0):
        two = tmp_path / f"two_{crosstalk}.wav"
        make_two_speaker_stereo(two, crosstalk_db=crosstalk)
        info = probe_audio(two)
        print(crosstalk, channel_report(two, info))
        assert speaker_channels(two, info) == [0, 1]
    # Still two speakers after a lossy phone codec.
    m4a = encode(tmp_path / "two_-20.0.wav", tmp_path / "two.m4a", "m4a")
    assert speaker_channels(m4a, probe_audio(m4a)) == [0, 1]


def test_one_speaker_moving_between_two_mics_is_not_two_speakers(media: Path, tmp_path: Path) -> None:
    """One talker panning slowly between channels (±6 dB, 8 s period): dominance swaps but never overlaps."""
    pcm, rate = read_wav(media / "lecture.wav")
    signal = pcm[0]
    t = np.arange(len(signal)) / rate
    pan = np.sin(2 * np.pi * t / 8.0)
    left = signal * 10 ** (6 * pan / 20)
    right = np.roll(signal, 10) * 10 ** (-6 * pan / 20)
    path = write_wav(tmp_path / "panning.wav", (0.5 * np.stack([left, right])).astype(np.float32), rate)
    info = probe_audio(path)
    print(channel_report(path, info))
    assert speaker_channels(path, info) is None


def test_opposite_phase_channels_are_not_downmixed(media: Path, tmp_path: Path) -> None:
    """L = -R would cancel in a downmix: one channel is transcribed instead."""
    pcm, rate = read_wav(media / "lecture.wav")
    path = write_wav(tmp_path / "inverted.wav", np.stack([pcm[0], -pcm[0]]), rate)
    assert speaker_channels(path, probe_audio(path)) == [0]


SENTENCES = [
    "The first sentence talks about the weather in the mountains.",
    "Then the speaker explains how rivers shape the valleys below.",
    "A third sentence describes the farms along the river banks.",
    "After that, the lecture moves on to the history of the region.",
    "Finally, the speaker summarises the main points of the talk.",
    "Questions from the audience close the session.",
]


def test_plan_pieces_cuts_in_the_silences(tmp_path: Path) -> None:
    """Boundaries land inside the known silent gaps, spans are contiguous and cover the whole file."""
    path = tmp_path / "spaced.wav"
    _, gaps = make_silence_spaced(path, SENTENCES, gap_seconds=1.2)
    info = probe_audio(path)
    piece = info.duration_seconds / 3  # nominal cuts at a third and two thirds: mid-sentence, not in a gap
    pieces = plan_pieces(path, info, piece_seconds=piece, search_seconds=4.0)
    print(gaps, pieces)
    assert len(pieces) == 3
    assert pieces[0][0] == 0.0 and pieces[-1][1] == info.duration_seconds
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    for _, cut in pieces[:-1]:
        assert any(start + 0.2 <= cut <= end - 0.2 for start, end in gaps), (
            f"cut at {cut:.2f} s is not in a gap"
        )


def test_plan_pieces_short_file_is_one_piece(media: Path) -> None:
    """Shorter than 1.5 pieces: one span, nothing decoded."""
    info = probe_audio(media / "lecture.wav")
    assert plan_pieces(media / "lecture.wav", info, piece_seconds=info.duration_seconds / 1.4) == [
        (0.0, info.duration_seconds)
    ]


def test_plan_pieces_long_recording(long_mp3: Path) -> None:
    """A 9-minute recording in 2-minute pieces: about 2 minutes each, every cut in a pause between sentences."""
    info = probe_audio(long_mp3)
    started = time.perf_counter()
    pieces = plan_pieces(long_mp3, info, piece_seconds=120)
    elapsed = time.perf_counter() - started
    print(pieces, f"{elapsed:.2f} s")
    count = round(info.duration_seconds / 120)
    assert len(pieces) == count
    assert pieces[0][0] == 0.0 and pieces[-1][1] == info.duration_seconds
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    for start, end in pieces:
        assert end - start == pytest.approx(info.duration_seconds / count, abs=2 * 20.0)
    for _, cut in pieces[:-1]:
        window = decode_audio(long_mp3, start_seconds=cut - 0.1, end_seconds=cut + 0.1)
        assert float(np.sqrt((window**2).mean())) < 0.01, f"cut at {cut:.2f} s is not quiet"
