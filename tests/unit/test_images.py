"""Tests of loading photos safely and of the preprocessing geometry, without running Tesseract."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from shared.errors import PermanentError
from shared.media import images
from shared.media.images import analyse_layout, flatten_illumination, load_image, preprocess
from shared.media.ocr import LOW_CONFIDENCE, _result, _tokens, character_accuracy
from tests.media import DATA, photos

TRUNCATED_PNG = DATA / "bad" / "pillow_truncated_image.png"
INVALID_PDF = DATA / "bad" / "ocrmypdf_invalid.pdf"
SUFFIXES = tuple(photos.FORMATS)


@pytest.fixture(scope="module")
def note() -> Image.Image:
    return photos.note_photo("clean").image


@pytest.fixture(scope="module")
def saved(note: Image.Image, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return photos.save_all_formats(note, tmp_path_factory.mktemp("formats"))


def _difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def _code(path: Path, **kwargs: int) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning may escape either
        with pytest.raises(PermanentError) as caught:
            load_image(path, **kwargs)
    return caught.value.code


# -- formats and orientation -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_loads_as_rgb_with_the_same_pixels(
    suffix: str, saved: dict[str, Path], note: Image.Image
) -> None:
    loaded = load_image(saved[suffix])
    assert loaded.mode == "RGB"
    assert loaded.size == note.size
    assert _difference(loaded, note) < 4.0  # lossless 0; JPEG, WebP and HEIC at quality 90 about 1-2


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(
    suffix: str, orientation: int, note: Image.Image, tmp_path: Path
) -> None:
    path = photos.save_with_orientation(note, tmp_path / f"tagged.{suffix}", orientation)
    loaded = load_image(path)
    assert loaded.size == note.size
    assert _difference(loaded, note) < 4.0
    # The file really holds turned pixels: ignoring the tag would give a very different picture.
    stored = note.transpose(photos.STORED_FOR_ORIENTATION[orientation])
    if stored.size == note.size:
        assert _difference(stored, note) > 10.0


def test_grey_and_bilevel_images_load_as_l() -> None:
    scan = load_image(DATA / "images" / "tesseract_phototest.tif")
    assert scan.mode == "L"
    assert scan.size == (640, 480)


def test_transparent_png_is_flattened_onto_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    image.paste((10, 10, 10, 255), (5, 5, 15, 15))
    image.save(tmp_path / "t.png")
    loaded = load_image(tmp_path / "t.png")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((10, 10)) == (10, 10, 10)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.mode == "L"
    values = np.asarray(loaded)[0]
    assert values[0] == 0 and values[-1] == 255 and 100 < values[32] < 160


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (30, 30), (0, 0, 0, 0)).save(tmp_path / "print.jpg")
    loaded = load_image(tmp_path / "print.jpg")
    assert loaded.mode == "RGB"
    r, g, b = loaded.getpixel((15, 15))  # type: ignore[misc]
    assert min(r, g, b) > 240


def test_multi_page_tiff_gives_the_first_page(note: Image.Image, tmp_path: Path) -> None:
    path = photos.make_multipage_tiff(tmp_path / "scan.tiff", [note, Image.new("RGB", (100, 80), "red")])
    assert load_image(path).size == note.size


# -- hostile files -----------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    bomb = photos.make_decompression_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000  # it declares 900 Mpx
    start = time.perf_counter()
    assert _code(bomb) == "image_too_large"
    # Even when the caller allows more than Pillow does, Pillow's own limit is translated, not leaked.
    assert _code(bomb, max_pixels=10**12) == "image_too_large"
    assert time.perf_counter() - start < 2.0  # decoding 900 Mpx would take far longer (and 900 MB)


def test_image_between_pillow_warning_and_error_limits_is_too_large(tmp_path: Path) -> None:
    # 100 Mpx: above Pillow's warning threshold (89 Mpx), below its error (179 Mpx): the warning must not leak.
    bomb = photos.make_decompression_bomb(tmp_path / "big.png", width=10_000, height=10_000)
    assert _code(bomb) == "image_too_large"
    assert _code(bomb, max_pixels=150_000_000) == "image_too_large"


def test_header_only_bomb_is_too_large(tmp_path: Path) -> None:
    assert _code(photos.make_header_only_bomb(tmp_path / "header.png")) == "image_too_large"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_max_pixels_is_checked_from_the_header(suffix: str, saved: dict[str, Path]) -> None:
    assert _code(saved[suffix], max_pixels=100_000) == "image_too_large"


def test_real_truncated_png_is_corrupt() -> None:
    assert _code(TRUNCATED_PNG) == "corrupt_image"


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_files_are_corrupt(
    suffix: str, keep: float, saved: dict[str, Path], tmp_path: Path
) -> None:
    truncated = photos.make_truncated(saved[suffix], tmp_path / f"cut.{suffix}", keep=keep)
    assert _code(truncated) == "corrupt_image"


@pytest.mark.parametrize("suffix", ["jpg", "png", "tiff"])
def test_garbled_files_are_corrupt(suffix: str, saved: dict[str, Path], tmp_path: Path) -> None:
    # WebP and HEIC decoders turn random bytes into random pixels without complaint; these three notice.
    assert _code(photos.make_garbled(saved[suffix], tmp_path / f"noise.{suffix}")) == "corrupt_image"


def test_pdf_renamed_as_photo_is_unsupported(tmp_path: Path) -> None:
    assert _code(photos.make_pdf(tmp_path / "lecture.jpg")) == "unsupported_media"
    assert _code(INVALID_PDF) == "unsupported_media"


def test_text_file_renamed_as_photo_is_unsupported(tmp_path: Path) -> None:
    assert _code(photos.make_text_file(tmp_path / "notes.jpg")) == "unsupported_media"


def test_empty_file_has_its_own_code(tmp_path: Path) -> None:
    (tmp_path / "empty.heic").write_bytes(b"")
    assert _code(tmp_path / "empty.heic") == "empty_file"


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_other_image_formats_are_unsupported(fmt: str, tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "x.img", fmt)
    assert _code(tmp_path / "x.img") == "unsupported_media"


def test_postscript_never_reaches_ghostscript(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert _code(path) == "unsupported_media"


def test_errors_are_permanent_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as caught:
        load_image(TRUNCATED_PNG)
    assert "pillow_truncated_image.png" in caught.value.reason
    assert "truncated" in caught.value.reason


# -- preprocessing geometry (no Tesseract: orientation detection off) -------------------------------------


@pytest.fixture(scope="module")
def page() -> Image.Image:
    return photos.on_desk(photos.render_page(photos.NOTES["history"], seed=21)).convert("L")


@pytest.mark.parametrize("degrees", [-9.0, -4.5, -1.0, 0.0, 2.0, 6.5, 9.5])
def test_skew_is_measured_within_half_a_degree(page: Image.Image, degrees: float) -> None:
    layout = analyse_layout(photos.rotate(page.convert("RGB"), degrees).convert("L"))
    assert not layout.quarter_turn
    assert abs(layout.skew_degrees + degrees) <= 0.5
    assert layout.line_pitch is not None and 40 <= layout.line_pitch <= 56  # rendered at 48 px


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270])
def test_quarter_turn_is_detected(page: Image.Image, turn: Image.Transpose) -> None:
    assert analyse_layout(page.transpose(turn)).quarter_turn


def test_chalkboard_is_inverted_but_a_page_on_a_desk_is_not(page: Image.Image) -> None:
    assert analyse_layout(photos.note_photo("chalkboard").image.convert("L")).inverted
    small_page = photos.on_desk(photos.render_page(photos.NOTES["biology"][:3], seed=4), border=400)
    assert not analyse_layout(small_page.convert("L")).inverted  # mostly desk, yet the page is no writing
    assert not analyse_layout(page).inverted


def test_big_text_is_shrunk_and_output_is_straight_grey(page: Image.Image) -> None:
    big = page.resize((page.width * 3, page.height * 3))
    out = preprocess(photos.rotate(big.convert("RGB"), 5.0))
    assert out.mode == "L"
    assert max(out.size) < 0.6 * max(big.size)  # 144 px lines brought down to 64 px (then turned back)
    layout = analyse_layout(out)
    assert abs(layout.skew_degrees) <= 0.5
    assert layout.line_pitch is not None and 56 <= layout.line_pitch <= 72


def test_clean_page_is_not_resampled(page: Image.Image) -> None:
    out = preprocess(page)
    assert out.size == page.size


def test_uneven_light_is_flattened() -> None:
    paper = photos.render_page([" "], seed=5).resize((800, 600))
    lit = photos.uneven_light(paper, darkest=0.25).convert("L")
    before = np.asarray(lit, dtype=np.float32)
    after = np.asarray(flatten_illumination(lit), dtype=np.float32)
    assert before.max() - before.min() > 120
    assert after.min() > 200  # the whole sheet is paper-white again


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 90),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["L", "RGB", "1", "RGBA"]),
)
def test_preprocess_never_fails_on_odd_images(width: int, height: int, seed: int, mode: str) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    out = preprocess(image)
    assert out.mode == "L" and out.width >= 1 and out.height >= 1


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    columns=st.integers(1, 40),
    window=st.integers(1, 15).map(lambda n: 2 * n + 1),
    seed=st.integers(0, 2**16),
)
def test_running_extremes_match_brute_force(rows: int, columns: int, window: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (rows, columns), dtype=np.uint8)
    half = window // 2
    padded = np.pad(pixels, half, mode="edge")
    views = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
    assert np.array_equal(images._running(pixels, window, np.maximum), views.max(axis=(2, 3)))
    assert np.array_equal(images._running(pixels, window, np.minimum), views.min(axis=(2, 3)))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 1100), columns=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_median3_is_pillows_median_filter(rows: int, columns: int, seed: int) -> None:
    # Up to 1,100 rows: more than two of its bands, so band edges are covered.
    pixels = np.random.default_rng(seed).integers(0, 256, (rows, columns), dtype=np.uint8)
    image = Image.fromarray(pixels, "L")
    expected = np.asarray(image.filter(ImageFilter.MedianFilter(3)))
    assert np.array_equal(np.asarray(images.median3(image)), expected)


# -- OCR result assembly and scoring (no Tesseract) --------------------------------------------------------

_TSV_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def _tsv(*rows: tuple[int, int, int, float, str]) -> str:
    lines = [_TSV_HEADER, "1\t1\t0\t0\t0\t0\t0\t0\t640\t480\t-1\t"]
    for block, par, line, conf, text in rows:
        lines.append(f"5\t1\t{block}\t{par}\t{line}\t1\t0\t0\t10\t10\t{conf}\t{text}")
    return "\n".join(lines) + "\n"


def test_words_are_grouped_into_lines_and_paragraphs() -> None:
    tsv = _tsv(
        (1, 1, 1, 96.5, "The"),
        (1, 1, 1, 91.0, "derivative"),
        (1, 1, 2, 40.25, "of"),
        (1, 1, 2, -1, ""),
        (1, 2, 1, 88.0, "Chain"),
        (2, 1, 1, 12.0, "rule:"),
        (2, 1, 1, 95.0, "   "),
    )
    result = _result(_tokens(tsv))
    assert result.text == "The derivative\nof\n\nChain\n\nrule:"
    assert [line.text for line in result.lines] == ["The derivative", "of", "Chain", "rule:"]
    assert result.lines[0].confidence == pytest.approx((96.5 + 91.0) / 2)
    assert result.mean_confidence == pytest.approx((96.5 + 91.0 + 40.25 + 88.0 + 12.0) / 5)
    assert result.low_confidence_words == 2
    assert all(word.confidence < LOW_CONFIDENCE for word in result.lines[3].words)


def test_no_words_is_an_empty_result() -> None:
    result = _result(_tokens(_tsv()))
    assert result.text == "" and result.lines == () and result.mean_confidence == 0.0
    assert _result(_tokens("")).text == ""


def test_character_accuracy() -> None:
    assert character_accuracy("The  quick\nbrown fox", "The quick brown fox") == 1.0
    assert character_accuracy("abcd", "abce") == pytest.approx(0.75)
    assert character_accuracy("the final", "the \ufb01nal") == 1.0  # the "fi" ligature folds
    assert character_accuracy("abc", "something much longer than abc") == 0.0
    assert character_accuracy("", "") == 1.0
    assert character_accuracy("", "noise") == 0.0


def test_generators_are_deterministic() -> None:
    first = photos.note_photo("phone")
    second = photos.note_photo("phone")
    assert first.image.tobytes() == second.image.tobytes()
    assert first.text == photos.reference_text("calculus")
    assert 6 <= len(first.text.splitlines()) <= 12
    buffer = io.BytesIO()
    first.image.save(buffer, "PNG")
    assert buffer.tell() > 10_000


def test_upside_down_lines_are_told_by_their_ascenders(note: Image.Image) -> None:
    page = preprocess(note)
    assert not images.looks_upside_down(page)
    assert images.looks_upside_down(page.rotate(180, expand=True))
    real = preprocess(load_image(DATA / "images" / "tesseract_phototest.tif"))
    assert not images.looks_upside_down(real)
    assert images.looks_upside_down(real.rotate(180, expand=True))


def test_a_page_without_lines_to_tell_by_is_taken_as_it_is() -> None:
    assert not images.looks_upside_down(Image.new("L", (400, 300), 255))  # blank
    bars = Image.new("L", (400, 300), 255)
    for top in range(20, 280, 40):  # ink with nothing above or below its bands: bars, capitals, a table
        bars.paste(0, (20, top, 380, top + 16))
    assert not images.looks_upside_down(bars)
    assert not images.looks_upside_down(bars.rotate(180))
    for top in range(20, 280, 40):  # a hairline under each bar: all the little ink outside is below, and yet
        bars.paste(0, (20, top + 16, 120, top + 17))  # 1.7% of it is too little to tell by (no ascenders)
    assert not images.looks_upside_down(bars)
