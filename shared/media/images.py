"""Loading photos and scans safely, and preparing them for Tesseract.

Loading checks the declared pixel count before any pixel is decoded, decodes fully (so truncation is
found here, not later inside Tesseract), applies the EXIF orientation and returns RGB or L.  Only JPEG
(MPO included), PNG, TIFF, WebP and HEIC/HEIF are opened: Pillow's other plugins (EPS through
Ghostscript, for one) are never reached.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import cv2
import numpy as np
import numpy.typing as npt
import pillow_heif
import pytesseract  # type: ignore[import-untyped]
from PIL import (
    Image,
    ImageFilter,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from shared.errors import PermanentError

# Imported for their side effect: Image.open(formats=...) only knows plugins that are already registered.
_PLUGINS: Final = (JpegImagePlugin, MpoImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin)
pillow_heif.register_heif_opener()

# "JPEG" also opens MPO files (a JPEG plus extra frames, written by some phone cameras).
FORMATS: Final = ("JPEG", "PNG", "TIFF", "WEBP", "HEIF")
MAX_SKEW_DEGREES: Final = 10.0
# Below this the page is left alone: resampling a straight scan only blurs it.
MIN_SKEW_DEGREES: Final = 0.3
# Tesseract's OSD confidence for a quarter or half turn; below it the guess is noise.
MIN_OSD_CONFIDENCE: Final = 2.0

# Text lines this far apart are read as well as bigger ones, and much faster (see preprocess).
TARGET_LINE_PITCH: Final = 64.0

_ANALYSIS_SIDE: Final = 1000  # longest side of the downscaled copy the layout analysis runs on
# Closing window for the paper's brightness: wider than any text stroke at the pitch preprocess leaves.
DEFAULT_CLOSING_WINDOW: Final = 31
WHITE_RATIO: Final = 0.9  # a pixel this bright relative to the paper around it is paper
_BAND_ROWS: Final = 512
_MIN_INK_DEPTH: Final = 8.0  # grey levels below the paper; fainter marks are paper
_NOISE_MARGIN: Final = 4.0  # ... and at least this many times the noise
_MAX_BLACK_POINT: Final = 128  # contrast stretching never maps a grey lighter than this to black
_QUARTER_TURN_MARGIN: Final = 1.3  # columns must beat rows clearly before a page counts as turned
_MIN_PERIODICITY: Final = 0.2
_STROKE_TEST_WINDOW: Final = 7  # at analysis size: wider than chalk strokes, far narrower than a page
_MAX_THICK_SHARE: Final = 0.3
_LINE_ROW_SHARE: Final = 0.03  # rows with less ink than this share of the inkiest row are gaps between lines
_MIN_LINES_TO_TELL: Final = 3
_MIN_OUTER_INK: Final = 0.03  # share of the lines' ink above or below their bands (the bench's pages: 10-13%)
# Of a page's ink above or below its lines' bands, the share above: upright pages measured 0.64-1.00, turned 0-0.36.
_UPSIDE_DOWN_SHARE: Final = 0.4

# Decoders raise many types for broken data; all of them mean "corrupt file", none is a bug of ours.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    RuntimeError,
)

_MAGIC: Final = (
    (0, b"\xff\xd8\xff"),
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"II*\x00"),
    (0, b"MM\x00*"),
    (0, b"II+\x00"),
    (0, b"MM\x00+"),
    (8, b"WEBP"),
    (4, b"ftyp"),
)

Array = npt.NDArray[np.float32]


class _TesseractEnvironment(Mapping[str, str]):
    """This process's environment as it is at each call, with OMP_THREAD_LIMIT=1 on top: only for Tesseract."""

    def __getitem__(self, key: str) -> str:
        return "1" if key == "OMP_THREAD_LIMIT" else os.environ[key]

    def __iter__(self) -> Iterator[str]:
        return iter({*os.environ, "OMP_THREAD_LIMIT"})

    def __len__(self) -> int:
        return len({*os.environ, "OMP_THREAD_LIMIT"})


def limit_tesseract_threads() -> None:
    """Make every Tesseract started from now on single-threaded (OMP_THREAD_LIMIT=1): faster on shared cores.

    Only Tesseract's own processes get the limit (pytesseract hands its module's `environ` to each child):
    set in this process's environment, it would also bind every OpenMP library loaded here (CTranslate2 under
    faster-whisper gave wrong transcripts in a process that had run OCR first)."""
    pytesseract.pytesseract.environ = _TesseractEnvironment()


def _looks_like_supported_image(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _MAGIC)


def load_image(path: Path, *, max_pixels: int = 60_000_000) -> Image.Image:
    """Decode a photo or scan (JPEG, PNG, TIFF, WebP, HEIC) upright as RGB or L; multi-page TIFF: page 1 only."""
    if path.stat().st_size == 0:
        raise PermanentError("empty_file", f"{path.name} is empty (0 bytes)")
    with warnings.catch_warnings():
        # Decoders warn about damaged metadata (corrupt EXIF) and still give the pixels: not our concern.
        warnings.simplefilter("ignore")
        # Pillow's own limit (Image.MAX_IMAGE_PIXELS) warns, then raises: both mean "too large" here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _decode(path, max_pixels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise PermanentError("image_too_large", f"{path.name}: {str(error).strip()}") from error
    return image


def _decode(path: Path, max_pixels: int) -> Image.Image:
    try:
        opened = Image.open(path, formats=FORMATS)
    except UnidentifiedImageError as error:
        if _looks_like_supported_image(path):
            raise PermanentError("corrupt_image", f"{path.name}: unreadable image header") from error
        raise PermanentError(
            "unsupported_media", f"{path.name} is not a JPEG, PNG, TIFF, WebP or HEIC image"
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except _DECODE_ERRORS as error:
        raise PermanentError("corrupt_image", f"{path.name}: {str(error).strip()}") from error
    with opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise PermanentError(
                "image_too_large",
                f"{path.name} declares {width}x{height} = {width * height:,} pixels, over {max_pixels:,}",
            )
        if width == 0 or height == 0:
            raise PermanentError("corrupt_image", f"{path.name} declares an empty {width}x{height} image")
        try:
            opened.seek(0)  # multi-page TIFF: the first page only
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return as_rgb_or_l(upright)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
            raise
        except _DECODE_ERRORS as error:
            raise PermanentError("corrupt_image", f"{path.name}: {str(error).strip()}") from error


def as_rgb_or_l(image: Image.Image) -> Image.Image:
    """RGB for colour, L for grey; transparency flattened onto white (dark text on transparent stays legible)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flattened = Image.alpha_composite(white, rgba).convert("RGB")
        return flattened.convert("L") if image.mode in ("LA", "La") else flattened
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits (Pillow's convert("L") would clip everything above 255 to white).
        pixels = np.asarray(image.convert("I"), dtype=np.float64)
        peak = max(float(pixels.max()), 1.0)
        return Image.fromarray((pixels * (255.0 / (65535.0 if peak > 255 else 255.0))).astype(np.uint8), "L")
    if image.mode in ("1", "L", "F"):
        return image.convert("L")
    return image.convert("RGB")


# -- preprocessing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What the analysis of a downscaled copy found: light text on dark, turn, skew and line pitch (full size)."""

    inverted: bool
    quarter_turn: bool
    skew_degrees: float
    line_pitch: float | None


def preprocess(image: Image.Image) -> Image.Image:
    """Greyscale, shrink big text, denoise, even out lighting, stretch contrast, straighten. Which way up the page
    is read is shared.media.ocr.ocr_image's choice (first as the lines' ascenders say, then half-turned, then by
    Tesseract's orientation detection, each only after an unconvincing reading)."""
    grey = as_rgb_or_l(image).convert("L")
    layout = analyse_layout(grey)
    if layout.inverted:
        grey = ImageOps.invert(grey)  # chalk on a board: everything below expects dark text on light
    pitch = layout.line_pitch
    if pitch is not None and pitch > 2 * TARGET_LINE_PITCH:
        # Phone photos of a page have 100-300 px lines; Tesseract reads 64 px ones as well, several times faster.
        scale = TARGET_LINE_PITCH / pitch
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
        pitch = TARGET_LINE_PITCH
    if layout.quarter_turn:
        grey = grey.transpose(Image.Transpose.ROTATE_90)  # which way round is left to ocr_image
    window = DEFAULT_CLOSING_WINDOW if pitch is None else max(DEFAULT_CLOSING_WINDOW, round(pitch * 0.75))
    denoised = median3(grey)
    contrasted = stretch_contrast(flatten_illumination(denoised, window=window))
    if abs(layout.skew_degrees) >= MIN_SKEW_DEGREES:
        contrasted = rotate_by(contrasted, layout.skew_degrees)
    return contrasted


def flatten_illumination(grey: Image.Image, *, window: int = DEFAULT_CLOSING_WINDOW) -> Image.Image:
    """Divide by the paper's own brightness, found by closing over the text: shadows, gradients and desk go."""
    grey = grey.convert("L")
    pixels = np.asarray(grey, dtype=np.uint8)
    # A closing (running max, then running min): dark marks narrower than the window (text strokes) become
    # the paper around them, while large dark areas (desk, shadow) keep their exact edges, so dividing
    # leaves no dark halo along them.  The closing of a smoothed copy is not lifted by the running max of
    # sensor noise (which would leave the paper grey and speckled) but blurs edges by a pixel or two (a thin
    # line Tesseract reads as "|"); the lower of both closings has neither fault.
    smooth = np.asarray(grey.filter(ImageFilter.BoxBlur(2)), dtype=np.uint8)
    window = max(3, window | 1)
    paper = np.minimum(_closing(smooth, window), _closing(pixels, window))
    # Sensor noise is about the same number of grey levels everywhere, so dividing by a dark background
    # (desk, deep shadow) magnifies it into speckle that Tesseract reads as letters.  Marks only count as
    # ink when they are darker than their paper by several times the noise (estimated robustly: the
    # median absolute residual, which the few text edges hardly move).
    residual = pixels[::2, ::2].astype(np.float32) - smooth[::2, ::2].astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    min_depth = max(_MIN_INK_DEPTH, _NOISE_MARGIN * noise)
    flat = np.empty_like(pixels)
    # In bands of rows: a 60 Mpx photo never needs more than a few float copies of one band.
    for top in range(0, pixels.shape[0], _BAND_ROWS):
        band = pixels[top : top + _BAND_ROWS].astype(np.float32)
        light = np.maximum(paper[top : top + _BAND_ROWS].astype(np.float32), 1.0)
        # Paper texture sits just below the paper's brightness: the white point clears it.
        ratio = band / (light * WHITE_RATIO)
        ratio[light - band < min_depth] = 1.0
        flat[top : top + _BAND_ROWS] = np.clip(ratio * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(flat, "L")


def _closing(pixels: npt.NDArray[np.uint8], window: int) -> npt.NDArray[np.uint8]:
    return _running(_running(pixels, window, np.maximum), window, np.minimum)


def _running(pixels: npt.NDArray[np.uint8], window: int, extreme: np.ufunc) -> npt.NDArray[np.uint8]:
    """Running max or min over a centred square window, edges repeated: OpenCV's dilation or erosion by a square.
    Its default border leaves what lies outside the image out, which for a max or a min is the same as repeating
    the edge: the same pixels as scipy's separable filters (which it replaces), 25x faster (a closing of a
    12-megapixel photo: 15 ms against 387 ms, medians of 5)."""
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))
    flavour = cv2.dilate if extreme is np.maximum else cv2.erode
    return cast(npt.NDArray[np.uint8], flavour(pixels, square))


def median3(grey: Image.Image) -> Image.Image:
    """3x3 median of a greyscale image, edges repeated: the same pixels as Pillow's MedianFilter(3), by OpenCV's
    median blur (7 ms on a 12-megapixel photo, against 48 ms for the numpy sorting network it replaces)."""
    pixels = np.asarray(grey.convert("L"), dtype=np.uint8)
    return Image.fromarray(cv2.medianBlur(pixels, 3), "L")


def stretch_contrast(grey: Image.Image) -> Image.Image:
    """Map the darkest 1% to black, white stays white; a page with little ink is only gently stretched."""
    histogram = np.asarray(grey.histogram(), dtype=np.float64)
    cumulative = np.cumsum(histogram) / max(histogram.sum(), 1.0)
    low = min(int(np.searchsorted(cumulative, 0.01)), _MAX_BLACK_POINT)
    scale = 255.0 / (255 - low)
    table = [min(255, max(0, round((level - low) * scale))) for level in range(256)]
    return grey.point(table)


def _otsu_ink(grey: Image.Image) -> npt.NDArray[np.bool_]:
    """Ink mask (True = dark) of a grey image, by Otsu's threshold."""
    pixels = np.asarray(grey, dtype=np.uint8)
    histogram = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight_dark = np.cumsum(histogram)
    weight_light = histogram.sum() - weight_dark
    sum_dark = np.cumsum(histogram * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_dark = sum_dark / weight_dark
        mean_light = (sum_dark[-1] - sum_dark) / weight_light
        between = np.nan_to_num(weight_dark * weight_light * (mean_dark - mean_light) ** 2, nan=-1.0)
    threshold = int(np.argmax(between))
    return pixels <= threshold


def _row_profile(ys: Array, xs: Array, degrees: float) -> Array:
    """Ink per row of the page rotated anticlockwise by some degrees, from the ink pixels' coordinates."""
    theta = np.deg2rad(degrees)
    rows = ys * np.cos(theta) - xs * np.sin(theta)
    bins = (rows - rows.min()).astype(np.int64)
    return np.bincount(bins).astype(np.float32)


def _best_angle(ys: Array, xs: Array, angles: Array) -> tuple[float, float]:
    # Sum of squares of the profile: peaks when lines of text lie along rows (the sum itself is constant).
    scores = [float(np.square(_row_profile(ys, xs, float(angle))).sum()) for angle in angles]
    best = int(np.argmax(scores))
    return float(angles[best]), scores[best]


def analyse_layout(grey: Image.Image, *, max_degrees: float = MAX_SKEW_DEGREES) -> Layout:
    """Quarter turn, skew (anticlockwise degrees that straighten the lines) and line pitch of a page."""
    grey = grey.convert("L")
    scale = min(1.0, _ANALYSIS_SIDE / max(grey.size))
    small = grey.resize(
        (max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.BOX
    )
    inverted = _light_on_dark(small)
    if inverted:
        small = ImageOps.invert(small)
    ink = _otsu_ink(flatten_illumination(median3(small)))
    if not 0.0 < ink.mean() < 0.5:  # more "ink" than paper: no text, or nothing to go on
        return Layout(inverted=inverted, quarter_turn=False, skew_degrees=0.0, line_pitch=None)
    ys, xs = (coordinates.astype(np.float32) for coordinates in np.nonzero(ink))
    coarse = np.arange(-max_degrees, max_degrees + 1e-6, 1.0, dtype=np.float32)
    upright_angle, upright_score = _best_angle(ys, xs, coarse)
    # The same search on the page turned a quarter anticlockwise (ROTATE_90): rows become columns.
    turned = (float(ink.shape[1] - 1) - xs, ys)
    turned_angle, turned_score = _best_angle(*turned, coarse)
    quarter_turn = turned_score > upright_score * _QUARTER_TURN_MARGIN
    if quarter_turn:
        ys, xs = turned
    angle = turned_angle if quarter_turn else upright_angle
    fine = np.arange(angle - 0.9, angle + 0.91, 0.1, dtype=np.float32)
    angle, score = _best_angle(ys, xs, fine)
    if score <= float(np.square(_row_profile(ys, xs, 0.0)).sum()) * 1.01:  # hardly better: noise, not skew
        angle = 0.0
    return Layout(
        inverted=inverted,
        quarter_turn=quarter_turn,
        skew_degrees=round(angle, 2),
        line_pitch=_line_pitch(_row_profile(ys, xs, angle), scale),
    )


def _light_on_dark(grey: Image.Image) -> bool:
    """Light writing on a dark ground (a chalkboard, a negative), not a light page on a dark desk."""
    dark = _otsu_ink(grey)
    if dark.mean() <= 0.5:
        return False
    light = (~dark).astype(np.uint8)
    if not light.any():
        return False
    # Writing is thin: almost none of it survives an erosion; a sheet of paper mostly does.
    eroded = _running(light, _STROKE_TEST_WINDOW, np.minimum)
    return float(eroded.sum()) < _MAX_THICK_SHARE * float(light.sum())


def _line_pitch(profile: Array, scale: float) -> float | None:
    """Distance between text lines from the autocorrelation of the row profile; None if not periodic."""
    centred = profile - profile.mean()
    if len(centred) < 8 or not np.any(centred):
        return None
    correlation = np.correlate(centred, centred, mode="full")[len(centred) - 1 :]
    correlation /= correlation[0]
    below = np.nonzero(correlation < 0)[0]
    if len(below) == 0:
        return None
    start = int(below[0])
    window = correlation[start : len(centred) // 2]
    if len(window) < 3:
        return None
    peaks = [
        index
        for index in range(1, len(window) - 1)
        if window[index] >= window[index - 1] and window[index] > window[index + 1]
    ]
    tallest = max((float(window[index]) for index in peaks), default=0.0)
    if tallest < _MIN_PERIODICITY:
        return None
    # The first clear peak: later ones are multiples of the pitch and can be as tall.
    lag = start + next(index for index in peaks if window[index] >= 0.7 * tallest)
    return lag / scale


def looks_upside_down(grey: Image.Image) -> bool:
    """Whether a straightened page's lines look upside down. Latin text has far more ascenders (b d f h k l t,
    capitals, digits) than descenders (g j p q y), so more of a line's ink stands above the band of its small
    letters than hangs below it; turned half round, the reverse. The bench's photos: upright 0.64-1.00 of that
    ink above, the upside-down one 0.04. Only an order of reading hangs on it: ocr_image reads the other way round
    too when the first reading is unconvincing, so a wrong guess costs a reading, never the text."""
    ink = _otsu_ink(grey.convert("L"))
    profile = ink.sum(axis=1).astype(np.float64)
    if not profile.any():
        return False
    rows = profile > _LINE_ROW_SHARE * profile.max()
    edges = np.flatnonzero(np.diff(np.concatenate(([0], rows.astype(np.int8), [0]))))
    above = below = inside = 0.0
    lines = 0
    for top, bottom in zip(edges[::2], edges[1::2], strict=True):
        line = profile[top:bottom]
        if len(line) < 4:
            continue
        band = np.flatnonzero(line >= 0.5 * line.max())  # the small letters' rows
        above += float(line[: band[0]].sum())
        below += float(line[band[-1] + 1 :].sum())
        inside += float(line[band[0] : band[-1] + 1].sum())
        lines += 1
    # Too few lines, or too little ink outside the bands (capitals only, a drawing): nothing to tell by.
    if lines < _MIN_LINES_TO_TELL or above + below < _MIN_OUTER_INK * (above + below + inside):
        return False
    return above / (above + below) < _UPSIDE_DOWN_SHARE


def rotate_by(grey: Image.Image, degrees: float) -> Image.Image:
    """Rotated anticlockwise by some degrees, the new corners filled with white."""
    return grey.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


@contextmanager
def tesseract_input(image: Image.Image) -> Iterator[str]:
    """The image as an uncompressed PNM file in a private temporary folder, for Tesseract to read."""
    # pytesseract's own PNG costs ~0.1 s per megapixel to encode; PNM is a memory copy.
    with tempfile.TemporaryDirectory(prefix="lmgpa-ocr-") as folder:
        path = Path(folder) / "page.pnm"
        image.save(path, "PPM")
        yield str(path)


def turn_upright(grey: Image.Image) -> Image.Image:
    """Turned by a multiple of 90 degrees when Tesseract's orientation detection is confident."""
    limit_tesseract_threads()
    try:
        with tesseract_input(grey) as path:
            osd = pytesseract.image_to_osd(path, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractError:
        return grey  # too little text to tell: leave it
    rotate = int(osd.get("rotate", 0))
    confidence = float(osd.get("orientation_conf", 0.0))
    if rotate % 360 == 0 or confidence < MIN_OSD_CONFIDENCE:
        return grey
    # OSD's "rotate" is clockwise; Pillow's rotate is anticlockwise.
    return grey.rotate(-rotate, expand=True, fillcolor=255)
