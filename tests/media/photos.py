"""Deterministic photo-like images of class notes with their reference text, and hostile image files.

Every generator is seeded: the same call gives the same pixels, so accuracy thresholds measured once hold.
Pages of class notes (calculus, biology, history: 9-11 lines) are rendered with DejaVu TrueType fonts on
paper-like backgrounds lying on a desk, then degraded the way phone photos of notes are.  The classes
(PHOTO_CLASSES): clean, rotated (6.5 degrees), blurred_noisy (blur, sensor noise, JPEG quality 45),
uneven_light (lamp gradient, vignette, hand shadow, ruled paper), perspective (keystone and lean),
turned_90, upside_down, chalkboard (light writing on a dark board) and phone (all of it at once); plus a
12-megapixel photo for timing.  Files: every format the loader takes (HEIC too), EXIF-orientation
variants stored turned, and hostile files (decompression bombs, truncated and garbled images, a PDF and a
text file posing as photos, multi-page TIFF).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, ImageFilter, ImageFont

pillow_heif.register_heif_opener()

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf", "DejaVuSans-Bold.ttf")
PAPER = (244, 240, 226)
BOARD = (38, 58, 48)
CHALK = (226, 228, 220)
DESK = (92, 74, 58)
INKS = ((28, 30, 48), (22, 36, 110), (35, 35, 35))

NOTES: dict[str, tuple[str, ...]] = {
    "calculus": (
        "Calculus I - Lecture 7: The Derivative",
        "The derivative of f at a is the limit of",
        "the difference quotient (f(a+h) - f(a)) / h",
        "as h approaches zero, when that limit exists.",
        "Power rule: the derivative of x^n is n x^(n-1).",
        "Product rule: (fg)' = f'g + fg'.",
        "Chain rule: (f(g(x)))' = f'(g(x)) g'(x).",
        "Example: d/dx sin(3x) = 3 cos(3x).",
        "A function with a derivative is continuous,",
        "but |x| is continuous and not differentiable at 0.",
    ),
    "biology": (
        "Biology 101 - Cell Respiration",
        "Glycolysis happens in the cytoplasm and splits",
        "one glucose into two pyruvate molecules.",
        "Net yield: 2 ATP and 2 NADH per glucose.",
        "The Krebs cycle runs in the mitochondrial matrix.",
        "Electron transport chain: inner membrane,",
        "oxygen is the final electron acceptor.",
        "Total: about 30 to 32 ATP per glucose.",
        "Without oxygen, cells use fermentation instead.",
    ),
    "history": (
        "History 210 - The French Revolution",
        "1789: the Estates-General meets at Versailles.",
        "June 20: the Tennis Court Oath of the Third Estate.",
        "July 14: the storming of the Bastille in Paris.",
        "August: Declaration of the Rights of Man.",
        "1792: the monarchy is abolished, a republic begins.",
        "1793-94: the Reign of Terror under Robespierre.",
        "Causes: debt from wars, bread prices, new ideas",
        "of the Enlightenment about rights and reason.",
        "Exam: compare with the American Revolution.",
        "Read chapter 12 before Thursday's seminar.",
    ),
}


@dataclass(frozen=True)
class NotePhoto:
    """A generated photo of notes, its reference text and the degradations it went through."""

    name: str
    image: Image.Image
    text: str
    subject: str


def reference_text(subject: str) -> str:
    """The notes of a subject as they are written, one line per line."""
    return "\n".join(NOTES[subject])


def render_page(
    lines: Sequence[str],
    *,
    font_file: str = FONTS[0],
    font_size: int = 30,
    ink: tuple[int, int, int] = INKS[0],
    paper_colour: tuple[int, int, int] = PAPER,
    ruled: bool = False,
    seed: int = 0,
) -> Image.Image:
    """A sheet of paper (or a board) with the lines written on it, margins all round, faint texture."""
    rng = np.random.default_rng(seed)
    font = ImageFont.truetype(str(FONT_DIR / font_file), font_size)
    line_height = int(font_size * 1.6)
    text_width = max(int(font.getlength(line)) for line in lines)
    margin = font_size * 2
    width = text_width + 2 * margin
    height = line_height * len(lines) + 2 * margin
    # Paper fibre: low-amplitude noise, blurred so it is texture, not speckle.
    texture = rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
    fibre = Image.fromarray(np.clip(texture + 128, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1.2)
    )
    fibre_delta = np.asarray(fibre, dtype=np.float32)[..., None] - 128.0
    paper = np.clip(np.array(paper_colour, dtype=np.float32) + fibre_delta, 0, 255).astype(np.uint8)
    page = Image.fromarray(paper, "RGB")
    draw = ImageDraw.Draw(page)
    if ruled:
        for y in range(margin + line_height - font_size // 4, height - margin // 2, line_height):
            draw.line([(0, y), (width, y)], fill=(170, 195, 225), width=2)
    for index, line in enumerate(lines):
        # Hand-placed notes do not start exactly at the margin.
        x = margin + int(rng.integers(-4, 5))
        draw.text((x, margin + index * line_height), line, font=font, fill=ink)
    return page


def on_desk(page: Image.Image, *, border: int = 60) -> Image.Image:
    """The page lying on a darker desk, as a photo frames it."""
    desk = Image.new("RGB", (page.width + 2 * border, page.height + 2 * border), DESK)
    desk.paste(page, (border, border))
    return desk


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Turned counter-clockwise by some degrees, the uncovered corners filled with desk."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=DESK)


def blur(image: Image.Image, radius: float) -> Image.Image:
    """Out of focus or shaken."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def add_noise(image: Image.Image, sigma: float, *, seed: int = 0) -> Image.Image:
    """Sensor noise: Gaussian, independent per pixel and channel."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), image.mode)


def uneven_light(image: Image.Image, *, darkest: float = 0.35, shadow: bool = True) -> Image.Image:
    """A lamp on one side: a diagonal gradient, a vignette and optionally a soft hand shadow."""
    height, width = image.height, image.width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / width, ys / height
    gain = 1.0 - (1.0 - darkest) * (0.6 * u + 0.4 * v)
    radius = np.sqrt((u - 0.35) ** 2 + (v - 0.3) ** 2)
    gain *= 1.0 - 0.35 * np.clip(radius - 0.3, 0.0, 1.0)
    if shadow:
        # A blurred dark band across the lower right, like the shadow of the photographer's hand.
        band = np.exp(-(((u + v) - 1.35) ** 2) / 0.01)
        gain *= 1.0 - 0.3 * band
    pixels = np.asarray(image, dtype=np.float32)
    lit = pixels * (gain[..., None] if pixels.ndim == 3 else gain)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8), image.mode)


def _perspective_coefficients(
    source: Sequence[tuple[float, float]], target: Sequence[tuple[float, float]]
) -> tuple[float, ...]:
    """The 8 coefficients Pillow's PERSPECTIVE transform wants, mapping output corners to input corners."""
    rows: list[list[float]] = []
    rhs: list[float] = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend((u, v))
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    return tuple(float(c) for c in solution)


def perspective(image: Image.Image, *, keystone: float = 0.08, shear: float = 0.05) -> Image.Image:
    """Photographed from below and slightly to the side: the top narrower, the page leaning."""
    w, h = float(image.width), float(image.height)
    squeeze = keystone * w
    lean = shear * w
    target = [(squeeze + lean, 0.0), (w - squeeze + lean, 0.0), (w, h), (0.0, h)]
    source = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    coefficients = _perspective_coefficients(source, target)
    out_size = (int(w + lean), int(h))
    return image.transform(
        out_size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC, fillcolor=DESK
    )


def jpeg_artefacts(image: Image.Image, quality: int) -> Image.Image:
    """Re-encoded as a low-quality JPEG and decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(image.mode)


def _page(
    subject: str,
    seed: int,
    *,
    font_file: str = FONTS[0],
    ink: tuple[int, int, int] = INKS[0],
    ruled: bool = False,
) -> Image.Image:
    return on_desk(render_page(NOTES[subject], font_file=font_file, ink=ink, ruled=ruled, seed=seed))


Recipe = Callable[[], Image.Image]


def _recipes() -> dict[str, tuple[str, Recipe]]:
    """Photo classes: name -> (subject, how to make the image)."""
    return {
        "clean": ("biology", lambda: _page("biology", 1)),
        "rotated": ("calculus", lambda: blur(rotate(_page("calculus", 2, font_file=FONTS[1]), 6.5), 0.8)),
        "blurred_noisy": (
            "history",
            lambda: jpeg_artefacts(add_noise(blur(_page("history", 3, ink=INKS[1]), 2.0), 14.0, seed=3), 45),
        ),
        "uneven_light": (
            "biology",
            lambda: uneven_light(_page("biology", 4, font_file=FONTS[2], ruled=True), darkest=0.2),
        ),
        "perspective": ("history", lambda: perspective(_page("history", 5, font_file=FONTS[1]))),
        "turned_90": (
            "calculus",
            lambda: rotate(_page("calculus", 6, ink=INKS[2]), 2.0).transpose(Image.Transpose.ROTATE_270),
        ),
        "upside_down": ("history", lambda: rotate(_page("history", 7, font_file=FONTS[3]), 180.0)),
        "chalkboard": (
            "biology",
            lambda: blur(
                uneven_light(
                    rotate(render_page(NOTES["biology"], ink=CHALK, paper_colour=BOARD, seed=9), -3.0),
                    darkest=0.5,
                ),
                1.0,
            ),
        ),
        "phone": (
            "calculus",
            lambda: jpeg_artefacts(
                add_noise(
                    blur(
                        uneven_light(
                            perspective(rotate(_page("calculus", 8, ink=INKS[1]), -4.0), keystone=0.05)
                        ),
                        1.2,
                    ),
                    8.0,
                    seed=8,
                ),
                60,
            ),
        ),
    }


PHOTO_CLASSES: tuple[str, ...] = tuple(_recipes())


def note_photo(name: str) -> NotePhoto:
    """One photo class by name (see PHOTO_CLASSES), always the same pixels."""
    subject, make = _recipes()[name]
    return NotePhoto(name=name, image=make(), text=reference_text(subject), subject=subject)


def note_photos() -> list[NotePhoto]:
    """Every photo class, in a fixed order."""
    return [note_photo(name) for name in PHOTO_CLASSES]


def full_size_photo() -> NotePhoto:
    """A 12-megapixel phone photo (4000x3000-ish) of a page: big text, slight turn, shadow, blur, JPEG."""
    page = on_desk(render_page(NOTES["history"], font_size=110, seed=10), border=300)
    degraded = add_noise(blur(uneven_light(rotate(page, 3.0)), 2.5), 8.0, seed=10)
    return NotePhoto(
        name="phone_12mp",
        image=jpeg_artefacts(degraded, 85),
        text=reference_text("history"),
        subject="history",
    )


# -- files -------------------------------------------------------------------------------------------------

FORMATS: dict[str, str] = {"jpg": "JPEG", "png": "PNG", "tiff": "TIFF", "webp": "WEBP", "heic": "HEIF"}


def save_image(image: Image.Image, path: Path, *, exif: Image.Exif | None = None) -> Path:
    """Saved in the format its suffix names (.jpg, .png, .tiff, .webp, .heic), good quality."""
    fmt = FORMATS[path.suffix.lower().lstrip(".")]
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        options["quality"] = 90
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    if exif is not None:
        # As bytes: pillow-heif then records the orientation as the HEIF transform (irot), as phones do.
        options["exif"] = exif.tobytes()
    image.save(path, fmt, **options)
    return path


def save_all_formats(image: Image.Image, folder: Path, stem: str = "note") -> dict[str, Path]:
    """The same image as JPEG, PNG, TIFF, WebP and HEIC: suffix -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {suffix: save_image(image, folder / f"{stem}.{suffix}") for suffix in FORMATS}


# EXIF orientation -> the transpose that turns the upright image into the stored pixels.
STORED_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # tag 6: "rotate 90 clockwise to display" -> stored turned anticlockwise
    8: Image.Transpose.ROTATE_270,
}


def save_with_orientation(image: Image.Image, path: Path, orientation: int = 6) -> Path:
    """Pixels stored turned, with an EXIF Orientation tag that says how to turn them upright (as phones do)."""
    stored = image.transpose(STORED_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save_image(stored, path, exif=exif)


def make_decompression_bomb(path: Path, *, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid ~100 kB PNG that decodes to width x height pixels (900 Mpx, 2.7 GB as RGB)."""
    raw_row = b"\x00" + bytes((width + 7) // 8)  # filter byte + one bilevel row of zeros
    compressor = zlib.compressobj(9)
    rows_per_piece = 1024
    pieces = [
        compressor.compress(raw_row * min(rows_per_piece, height - start))
        for start in range(0, height, rows_per_piece)
    ]
    data = b"".join(pieces) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    )
    return path


def make_header_only_bomb(path: Path, *, width: int = 30_000, height: int = 30_000) -> Path:
    """A 60-byte PNG whose header declares width x height RGB pixels and carries no data at all."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def make_truncated(source: Path, path: Path, *, keep: float = 0.5) -> Path:
    """The first part of a valid image file, as an interrupted upload leaves it."""
    data = source.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_garbled(source: Path, path: Path, *, seed: int = 0) -> Path:
    """A valid header followed by random bytes where the compressed pixels were."""
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    start = min(len(data) // 4, 600)
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def make_pdf(path: Path) -> Path:
    """A small real PDF (one page of text), to be renamed as a photo."""
    stream = b"BT /F1 24 Tf 72 720 Td (Not a photo) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def make_text_file(path: Path) -> Path:
    """Plain text with a photo's name."""
    path.write_text("These are my notes, typed instead of photographed.\n", encoding="utf-8")
    return path


def make_multipage_tiff(path: Path, pages: Sequence[Image.Image]) -> Path:
    """A multi-page TIFF, as scanners produce."""
    first, *rest = pages
    first.save(path, "TIFF", save_all=True, append_images=list(rest), compression="tiff_deflate")
    return path


def blank_page(width: int = 1200, height: int = 900) -> Image.Image:
    """A photo of an empty sheet: paper texture and uneven light, no ink."""
    return uneven_light(on_desk(render_page([" "], seed=99).resize((width, height))), shadow=False)
