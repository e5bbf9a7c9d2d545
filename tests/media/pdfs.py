"""Deterministic test PDFs (text, scanned, mixed, encrypted, large, damaged), each with its per-page reference text.

Each make_* function writes the file at ``path``; those with readable pages return one reference per page: its
text in reading order (running header, headings, paragraphs unhyphenated, page number), blocks separated by
blank lines.  Compare after collapsing whitespace.  Files are byte-for-byte reproducible (reportlab's
``invariant`` mode, seeded noise), except the encrypted ones, whose file ID pypdf draws at random.
make_two_column_paper and make_split_glyph_summary stand in for two real PDFs the extraction was tuned on,
which may not be redistributed: they reproduce the traits that mattered (columns, TeX hyphenation and
ligatures; a producer that sets each line's last glyph apart).
"""

from __future__ import annotations

import io
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import letter  # type: ignore[import-untyped]
from reportlab.lib.utils import ImageReader  # type: ignore[import-untyped]
from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
from reportlab.pdfbase.ttfonts import TTFont  # type: ignore[import-untyped]
from reportlab.pdfgen.canvas import Canvas  # type: ignore[import-untyped]

PAGE_WIDTH, PAGE_HEIGHT = letter  # points
MARGIN = 72.0
SCAN_DPI = 200
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
PAGES_PER_CHAPTER = 5
OWNER_PASSWORD = "owner-secret"

Role = Literal["header", "title", "heading", "body", "footer"]
Kind = Literal["text", "scan", "blank", "figure"]

# Role -> (reportlab font, DejaVu file for scans, size pt, leading pt, space after pt).
_STYLE: dict[str, tuple[str, str, float, float, float]] = {
    "header": ("Times-Italic", "DejaVuSerif-Italic.ttf", 9.0, 11.0, 18.0),
    "title": ("DejaVuSans-Bold", "DejaVuSans-Bold.ttf", 20.0, 26.0, 14.0),
    "heading": ("DejaVuSans-Bold", "DejaVuSans-Bold.ttf", 13.0, 17.0, 6.0),
    "body": ("Times-Roman", "DejaVuSerif.ttf", 11.0, 14.5, 8.0),
    "footer": ("Times-Roman", "DejaVuSerif.ttf", 10.0, 12.0, 0.0),
}

CHAPTERS = (
    "Heat and Work",
    "The Living Cell",
    "Machines That Compute",
    "Rivers and Landscapes",
)
SECTIONS = (
    "Energy in transit",
    "Measuring temperature",
    "Membranes and transport",
    "The first programmable machines",
    "Erosion and deposition",
    "Models and their limits",
    "Worked example",
    "Review questions",
)
# Textbook prose with the punctuation real books carry (curly quotes, dashes, degree signs, accents).
SENTENCES = (
    "Heat is energy transferred between systems because of a difference in temperature.",
    "When a gas expands against a piston, part of its internal energy becomes mechanical work.",
    "The first law of thermodynamics states that energy is conserved in every process.",
    "Water boils at 100 °C at sea level, but at a lower temperature on a high mountain.",
    "A perfectly efficient engine would violate the second law — no real machine achieves it.",
    "Engineers call the ratio of useful work to heat supplied the “thermal efficiency” of an engine.",
    "Every living organism is built from one or more cells, the smallest units of life.",
    "The plasma membrane controls which molecules enter and leave the cell.",
    "Mitochondria convert the chemical energy of food into a form the cell can use.",
    "Diffusion moves particles from regions of high concentration to regions of low concentration.",
    "It’s tempting to picture the cell as a bag of fluid, but its interior is highly organized.",  # noqa: RUF001
    "Charles Babbage designed a mechanical engine that could, in principle, follow a program.",
    "Early electronic computers filled entire rooms and consumed enormous amounts of power.",
    "A naïve algorithm may be correct and still far too slow for realistic inputs.",
    "Programs are written for people to read, and only incidentally for machines to execute.",
    "The transistor replaced the vacuum tube and made computers smaller, cheaper and more reliable.",
    "Rivers shape landscapes by eroding material in one place and depositing it in another.",
    "A meander forms where the outer bank erodes faster than the inner bank builds up.",
    "Sediment carried by a river settles when the current slows near the delta.",
    "Geologists estimate erosion rates by measuring sediment loads over many years.",
    "A model is useful when its predictions agree with careful measurements.",
    "Students should check each result against an independent estimate before accepting it.",
    "The area of the plate is 2 × 3 metres, so the force on it is six times the pressure.",  # noqa: RUF001
    "Consider, for example, a café that keeps its coffee warm on a hot plate all afternoon.",
)
_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "vo", "sa", "pel", "dor", "ix")


@dataclass(frozen=True)
class Block:
    """One block of a page in reading order: a header, title, heading, paragraph or page number."""

    role: Role
    text: str


@dataclass(frozen=True)
class Line:
    """One laid-out line: its text, left edge and baseline in points from the top, and extra word space."""

    role: Role
    text: str
    x: float
    top: float
    word_space: float


def index_term(page: int) -> str:
    """Return the made-up word that appears only on page `page` (for finding 'page N' in extracted text)."""
    digits = []
    n = page
    while True:
        n, d = divmod(n, len(_SYLLABLES))
        digits.append(_SYLLABLES[d])
        if n == 0:
            break
    return "zo" + "".join(reversed(digits))


def unique_sentence(page: int) -> str:
    """Return the sentence printed on page `page` only."""
    return f"This is page {page} of the book, and its index term is {index_term(page)}."


def page_blocks(page: int, *, paragraphs: int = 3) -> list[Block]:
    """Return the blocks of textbook page `page` (1-based): deterministic for a given page number."""
    rng = random.Random(f"textbook-page-{page}")
    chapter = (page - 1) // PAGES_PER_CHAPTER + 1
    chapter_title = CHAPTERS[(chapter - 1) % len(CHAPTERS)]
    blocks = [Block("header", f"Chapter {chapter} · {chapter_title}")]
    if (page - 1) % PAGES_PER_CHAPTER == 0:
        blocks.append(Block("title", f"Chapter {chapter}: {chapter_title}"))
    blocks.append(Block("heading", f"{chapter}.{(page - 1) % PAGES_PER_CHAPTER + 1} {rng.choice(SECTIONS)}"))
    unique_at = rng.randrange(paragraphs)
    for i in range(paragraphs):
        sentences = rng.sample(SENTENCES, rng.randint(3, 4))
        if i == unique_at:
            sentences.insert(rng.randrange(len(sentences) + 1), unique_sentence(page))
        blocks.append(Block("body", " ".join(sentences)))
    blocks.append(Block("footer", str(page)))
    return blocks


def reference_text(blocks: Sequence[Block]) -> str:
    """Return the reference text of a page: its blocks separated by blank lines."""
    return "\n\n".join(block.text for block in blocks)


def _hyphen_split(word: str, room: float, width: Callable[[str], float]) -> tuple[str, str] | None:
    """Split a plain lowercase word so that its first part plus a hyphen fits in `room`, as typesetters do."""
    core = word.rstrip(".,;:")
    if len(core) < 7 or not core.isalpha() or not core.islower():
        return None
    for cut in range(len(core) - 3, 2, -1):
        if width(word[:cut] + "-") <= room:
            return word[:cut] + "-", word[cut:]
    return None


def layout(blocks: Sequence[Block], width: Callable[[Role, str], float]) -> list[Line]:
    """Lay out blocks on a letter page: justified, hyphenated body text; everything in points."""
    text_width = PAGE_WIDTH - 2 * MARGIN
    lines: list[Line] = []
    top = MARGIN - 20.0
    for block in blocks:
        _font, _file, _size, leading, after = _STYLE[block.role]
        if block.role == "footer":
            w = width("footer", block.text)
            lines.append(Line("footer", block.text, (PAGE_WIDTH - w) / 2, PAGE_HEIGHT - MARGIN + 30.0, 0.0))
            continue
        if block.role != "body":
            top += leading
            lines.append(Line(block.role, block.text, MARGIN, top, 0.0))
            top += after
            continue
        words = block.text.split(" ")
        current: list[str] = []
        while words:
            word = words.pop(0)
            candidate = " ".join([*current, word])
            if width("body", candidate) <= text_width:
                current.append(word)
                continue
            prefix = " ".join(current) + (" " if current else "")
            split = _hyphen_split(word, text_width - width("body", prefix), lambda s: width("body", s))
            if split is not None:
                current.append(split[0])
                words.insert(0, split[1])
            else:
                words.insert(0, word)
            top += leading
            lines.append(_justified(current, top, text_width, width))
            current = []
        top += leading
        lines.append(Line("body", " ".join(current), MARGIN, top, 0.0))
        top += after
    return lines


def _justified(words: list[str], top: float, text_width: float, width: Callable[[Role, str], float]) -> Line:
    text = " ".join(words)
    gaps = len(words) - 1
    extra = (text_width - width("body", text)) / gaps if gaps else 0.0
    return Line("body", text, MARGIN, top, max(0.0, extra))


_fonts_registered = False


def _register_fonts() -> None:
    global _fonts_registered
    if not _fonts_registered:
        for name in ("DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold"):
            pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / f"{name}.ttf")))
        _fonts_registered = True


def _pdf_width(role: Role, text: str) -> float:
    font, _file, size, _leading, _after = _STYLE[role]
    return float(pdfmetrics.stringWidth(text, font, size))


def _draw_text_page(canvas: Canvas, blocks: Sequence[Block]) -> None:
    for line in layout(blocks, _pdf_width):
        font, _file, size, _leading, _after = _STYLE[line.role]
        text = canvas.beginText(line.x, PAGE_HEIGHT - line.top)
        text.setFont(font, size)
        if line.word_space:
            text.setWordSpace(line.word_space)
        text.textOut(line.text)
        canvas.drawText(text)


def _new_canvas(target: Path | io.BytesIO) -> Canvas:
    _register_fonts()
    out = str(target) if isinstance(target, Path) else target
    canvas = Canvas(out, pagesize=letter, pageCompression=1, invariant=1)
    canvas.setTitle("A Generated Textbook")
    canvas.setAuthor("lmgpa tests")
    return canvas


_scan_fonts: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _scan_font(role: Role, dpi: int) -> ImageFont.FreeTypeFont:
    _font, file, size, _leading, _after = _STYLE[role]
    key = (role, dpi)
    if key not in _scan_fonts:
        _scan_fonts[key] = ImageFont.truetype(str(FONT_DIR / file), round(size * dpi / 72))
    return _scan_fonts[key]


def render_scan(
    blocks: Sequence[Block], *, seed: int, dpi: int = SCAN_DPI, skew_degrees: float = 0.0
) -> Image.Image:
    """Return a greyscale 'scan' of the page: Pillow text at `dpi`, blur, grey-level noise, a slight skew."""
    scale = dpi / 72

    def width(role: Role, text: str) -> float:
        return float(_scan_font(role, dpi).getlength(text)) / scale

    image = Image.new("L", (round(PAGE_WIDTH * scale), round(PAGE_HEIGHT * scale)), 240)
    draw = ImageDraw.Draw(image)
    for line in layout(blocks, width):
        font = _scan_font(line.role, dpi)
        x, y = line.x * scale, line.top * scale
        if not line.word_space:
            draw.text((x, y), line.text, font=font, fill=30, anchor="ls")
            continue
        for word in line.text.split(" "):
            draw.text((x, y), word, font=font, fill=30, anchor="ls")
            x += (font.getlength(word + " ")) + line.word_space * scale
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    if skew_degrees:
        image = image.rotate(skew_degrees, resample=Image.Resampling.BILINEAR, fillcolor=240)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 12.0, (image.height, image.width))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def _draw_scan_page(canvas: Canvas, image: Image.Image, *, quality: int = 80, rotate: int = 0) -> None:
    """Draw a page image as a JPEG filling the page; with `rotate`, stored turned and shown upright by /Rotate."""
    buffer = io.BytesIO()
    stored = image.rotate(rotate, expand=True) if rotate else image
    stored.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    width, height = (PAGE_HEIGHT, PAGE_WIDTH) if rotate in (90, 270) else (PAGE_WIDTH, PAGE_HEIGHT)
    # reportlab takes the page size as shown and swaps the MediaBox itself for a quarter turn.
    canvas.setPageSize((PAGE_WIDTH, PAGE_HEIGHT))
    canvas.setPageRotation(rotate)
    canvas.drawImage(ImageReader(buffer), 0, 0, width=width, height=height)


def _figure_image(seed: int) -> Image.Image:
    """A chart without any text: bars and axes, as in a figure page."""
    rng = random.Random(seed)
    image = Image.new("RGB", (900, 600), "white")
    draw = ImageDraw.Draw(image)
    draw.line((60, 540, 860, 540), fill="black", width=4)
    draw.line((60, 40, 60, 540), fill="black", width=4)
    for i in range(8):
        h = rng.randint(80, 460)
        draw.rectangle((100 + i * 95, 540 - h, 160 + i * 95, 540), fill=(40 + 25 * i, 90, 200 - 15 * i))
    return image


def make_text_pdf(path: Path, pages: int = 5) -> list[str]:
    """Write a textbook-like PDF with a real text layer; return each page's reference text."""
    canvas = _new_canvas(path)
    refs = []
    for page in range(1, pages + 1):
        blocks = page_blocks(page)
        _draw_text_page(canvas, blocks)
        canvas.showPage()
        refs.append(reference_text(blocks))
    canvas.save()
    return refs


def scan_skew(page: int) -> float:
    """The skew of scanned page `page` in degrees: alternating slightly, as sheets lie on a scanner."""
    return (0.0, 0.4, -0.6)[page % 3]


def make_scanned_pdf(path: Path, pages: int = 3, *, dpi: int = SCAN_DPI, rotate: int = 0) -> list[str]:
    """Write a PDF whose pages are only JPEG images of rendered text (no text layer); return the references.

    With `rotate` (90, 180 or 270) each image is stored turned that much anticlockwise on a page whose
    /Rotate shows it upright, as scanners do with sheets fed sideways.
    """
    canvas = _new_canvas(path)
    refs = []
    for page in range(1, pages + 1):
        blocks = page_blocks(page, paragraphs=2)
        image = render_scan(blocks, seed=page, dpi=dpi, skew_degrees=scan_skew(page))
        _draw_scan_page(canvas, image, rotate=rotate)
        canvas.showPage()
        refs.append(reference_text(blocks))
    canvas.save()
    return refs


def mixed_kind(page: int) -> Kind:
    """What page `page` of a mixed PDF is: text, scan, blank, or a text page with a text-free figure."""
    return ("text", "scan", "figure", "blank", "text", "scan")[(page - 1) % 6]


def make_mixed_pdf(path: Path, pages: int = 6) -> list[str]:
    """Write text, scanned, figure and blank pages in the order `mixed_kind` gives; return the references.

    A figure page has a full text layer and a large chart image with no words: it must stay "text".
    A blank page's reference is "".
    """
    canvas = _new_canvas(path)
    refs = []
    for page in range(1, pages + 1):
        kind = mixed_kind(page)
        if kind == "blank":
            refs.append("")
        elif kind == "scan":
            blocks = page_blocks(page, paragraphs=2)
            _draw_scan_page(canvas, render_scan(blocks, seed=page, skew_degrees=scan_skew(page)))
            refs.append(reference_text(blocks))
        else:
            blocks = page_blocks(page, paragraphs=2 if kind == "figure" else 3)
            _draw_text_page(canvas, blocks)
            if kind == "figure":
                canvas.drawImage(ImageReader(_figure_image(page)), MARGIN, 110, width=300, height=200)
            refs.append(reference_text(blocks))
        canvas.showPage()
    canvas.save()
    return refs


def make_encrypted_pdf(
    path: Path, user_password: str = "", *, pages: int = 3, algorithm: str = "RC4-128"
) -> list[str]:
    """Write an encrypted text PDF; with user_password "" any reader opens it, otherwise it needs the password.

    RC4 by default: pypdf encrypts and decrypts it without the optional `cryptography` package (AES needs it).
    """
    buffer = io.BytesIO()
    canvas = _new_canvas(buffer)
    refs = []
    for page in range(1, pages + 1):
        blocks = page_blocks(page)
        _draw_text_page(canvas, blocks)
        canvas.showPage()
        refs.append(reference_text(blocks))
    canvas.save()
    buffer.seek(0)
    writer = PdfWriter(clone_from=PdfReader(buffer))
    writer.encrypt(user_password=user_password, owner_password=OWNER_PASSWORD, algorithm=algorithm)
    with path.open("wb") as out:
        writer.write(out)
    return refs


# -- stand-ins for two real PDFs the extraction was tuned on (neither may be redistributed) --------------------

SUMMARY_TITLE = "The Open Classroom Act: A Summary for Teachers"
SUMMARY_PAGES = 18
_SUMMARY_FONT, _SUMMARY_SIZE, _SUMMARY_LEADING = "Times-Roman", 12.0, 13.44
_SUMMARY_GAP = 1.5  # points between a justified line and its last glyph, set apart by the producer
# Page 3 opens with this paragraph: its second line ends with "fulfillment of", set apart as "o f".
SUMMARY_FORMALITIES = (
    "The remaining technical amendment concerns the rule, common to both treaties, that no member state may "
    "make the enjoyment of rights granted to authors depend on the fulfillment of formalities. Registration "
    "is therefore no longer required before a foreign author can bring a claim, although it still gives the "
    "author of a domestic work certain advantages in court."
)
SUMMARY_SENTENCES = (
    "The act lets teachers copy short extracts of published works for the students of their own classes.",
    "A library may make an archival copy of a work in its collection that is damaged, lost or stolen.",
    "The exemption does not extend to works made and sold primarily for the educational market.",
    "An online service provider is not liable for material stored on its system at the direction of a user.",
    "A provider must remove the material promptly once it is properly notified that the material infringes.",
    "The register must report to the legislature on the effect of these provisions every two years.",
    "Nothing in this section enlarges or diminishes the rights that authors hold under existing law.",
    "Each exemption is reviewed in a public rulemaking held every three years by the office.",
    "Courts may award statutory damages where actual damages would be difficult to prove.",
    "Circumventing a technical measure that controls access to a protected work is prohibited.",
    "A nonprofit library may examine a work solely in order to decide whether to acquire a copy.",
    "The office consulted educators, publishers and librarians before it drafted the report.",
    "A broadcaster may make an ephemeral recording of a program that it is licensed to transmit.",
    "Distance education raises questions that the earlier law did not anticipate.",
    "A technician may start a computer in order to repair it without infringing the programs it holds.",
    "Copyright management information identifies a work, its author and the terms of its use.",
    "Removing that information knowingly, in order to conceal an infringement, is an offence.",
    "Encryption research is permitted when the researcher first tries to obtain authorization.",
    "The act implements two treaties adopted by a diplomatic conference of the member states.",
    "Teachers should keep a record of each extract they copy and of the class that received it.",
)
SUMMARY_HEADINGS = (
    "Scope of the Act",
    "Libraries and Archives",
    "Registration as a Prerequisite to Suit",
    "Online Service Providers",
    "Distance Education",
    "Technological Protection Measures",
)

PAPER_TITLE = "Unsupervised Relation Discovery in Student Notes"
PAPER_AUTHORS = "A. Writer and B. Reader, Example University"
PAPER_PAGES = 8
# Page 1's first paragraph (left column) holds this sentence; it spans several lines.
PAPER_SENTENCE = (
    "We obtained reasonably good performance on every collection we tried, without a single labelled "
    "example and without any knowledge of the subjects the students were taking."
)
_PAPER_FONT, _PAPER_BOLD = "DejaVuSerif", "DejaVuSerif-Bold"
_PAPER_SIZE, _PAPER_LEADING = 9.5, 11.5
_PAPER_MARGIN, _PAPER_GUTTER, _PAPER_TOP = 54.0, 18.0, 72.0
_PAPER_COLUMN = (PAGE_WIDTH - 2 * _PAPER_MARGIN - _PAPER_GUTTER) / 2
_PAPER_ROWS = int((PAGE_HEIGHT - 2 * _PAPER_TOP) // _PAPER_LEADING)
_PAPER_TITLE_ROWS = 6  # rows of both columns that page 1's title and authors take
# TeX sets these pairs as one glyph; the embedded DejaVu Serif has them, so the text layer says "ﬁ", not "fi".
_TEX_LIGATURES = (("ffi", "ﬃ"), ("ffl", "ﬄ"), ("ff", "ﬀ"), ("fi", "ﬁ"), ("fl", "ﬂ"))
# TeX's break points for the paper's long words (words not listed are never broken).
_PAPER_HYPHENATION = {
    word.replace("-", ""): word
    for word in (
        "per-for-mance",
        "re-la-tions",
        "re-la-tion",
        "dis-cov-ery",
        "un-su-per-vised",
        "clus-ter-ing",
        "clus-ters",
        "dif-fer-ent",
        "sig-nif-i-cant",
        "sig-nif-i-cantly",
        "in-for-ma-tion",
        "ex-trac-tion",
        "en-ti-ties",
        "eval-u-a-tion",
        "pre-ci-sion",
        "doc-u-ments",
        "find-ing",
        "find-ings",
        "sen-tences",
        "stu-dents",
        "lec-tures",
        "con-texts",
        "ex-am-ples",
        "col-lec-tion",
        "com-pared",
        "base-line",
        "con-sis-tently",
        "mea-sured",
        "ex-per-i-ments",
        "ap-proach",
        "re-ported",
        "ac-cu-racy",
    )
}
PAPER_SENTENCES = (
    "Our method groups pairs of entities that appear in similar contexts across many documents.",
    "The clustering step needs no labelled examples and no list of relations given in advance.",
    "Finding the relations that hold between named entities is a central task of information extraction.",
    "We measured precision, recall and F-score against relations annotated by two students.",
    "The F-score of our approach was significantly higher than that of the baseline on every collection.",
    "Students write notes in short fragments, which makes the contexts of each pair sparse.",
    "A pair of entities is represented by the words that occur between them in a sentence.",
    "The performance of the baseline dropped sharply when the notes came from different lectures.",
    "Clusters with fewer than three pairs were discarded before the evaluation.",
    "These findings suggest that the approach transfers to other collections of informal writing.",
    "Each cluster is labelled with the words that are most frequent among its contexts.",
    "Compared with supervised extraction, discovery finds relations that nobody thought to annotate.",
    "The experiments reported here used the notes of one hundred students taking four courses.",
    "Accuracy was consistently above the level reported for newspaper documents of similar size.",
    "A flat clustering of the contexts outperformed a hierarchical one in every experiment.",
    "Table 1 is a sample of the relations discovered in the notes of a single lecture.",
)
PAPER_SECTIONS = (
    "1 Introduction",
    "2 Related Work",
    "3 Method",
    "4 Data",
    "5 Evaluation",
    "6 Results",
    "7 Discussion",
    "8 Conclusion",
)


def _ligatures(text: str) -> str:
    for letters, glyph in _TEX_LIGATURES:
        text = text.replace(letters, glyph)
    return text


def _break_lines(
    words: Sequence[str],
    width: Callable[[str], float],
    text_width: float,
    split: Callable[[str, float], tuple[str, str] | None] | None = None,
    first_indent: float = 0.0,
) -> list[list[str]]:
    """Greedy line breaking of one paragraph; `split` may break the word that does not fit (its first part
    ends with a hyphen).  Returns the words (or word parts) of each line."""
    pending = list(words)
    lines: list[list[str]] = []
    current: list[str] = []
    while pending:
        room = text_width - (first_indent if not lines else 0.0)
        word = pending.pop(0)
        if width(" ".join([*current, word])) <= room:
            current.append(word)
            continue
        parts = split(word, room - width(" ".join(current) + " ")) if split and current else None
        if parts is not None:
            current.append(parts[0])
            pending.insert(0, parts[1])
        else:
            pending.insert(0, word)
        if not current:  # a word wider than the line: it gets a line of its own
            current.append(pending.pop(0))
        lines.append(current)
        current = []
    if current:
        lines.append(current)
    return lines


def _summary_width(text: str) -> float:
    return float(pdfmetrics.stringWidth(text, _SUMMARY_FONT, _SUMMARY_SIZE))


def _summary_page_blocks(page: int) -> list[Block]:
    rng = random.Random(f"summary-page-{page}")
    blocks = [Block("header", SUMMARY_TITLE)]
    if page == 1:
        blocks.append(Block("title", SUMMARY_TITLE))
    blocks.append(Block("heading", SUMMARY_HEADINGS[(page - 1) % len(SUMMARY_HEADINGS)]))
    if page == 3:
        blocks.append(Block("body", SUMMARY_FORMALITIES))
    for _ in range(3 if page != 3 else 2):
        blocks.append(Block("body", " ".join(rng.sample(SUMMARY_SENTENCES, rng.randint(3, 4)))))
    blocks.append(Block("footer", f"Office summary, page {page}"))
    return blocks


def _draw_summary_page(canvas: Canvas, blocks: Sequence[Block]) -> None:
    """Body paragraphs justified, each full line's last glyph drawn on its own after a small gap."""
    text_width = PAGE_WIDTH - 2 * MARGIN
    top = MARGIN - 20.0
    for block in blocks:
        if block.role in ("header", "footer"):
            size, y = (9.0, PAGE_HEIGHT - top) if block.role == "header" else (10.0, MARGIN - 30.0)
            canvas.setFont("Times-Italic" if block.role == "header" else _SUMMARY_FONT, size)
            canvas.drawCentredString(PAGE_WIDTH / 2, y, block.text)
            top += 24.0 if block.role == "header" else 0.0
            continue
        if block.role in ("title", "heading"):
            size = 16.0 if block.role == "title" else 12.0
            top += size + 8.0
            canvas.setFont("Times-Bold", size)
            canvas.drawString(MARGIN, PAGE_HEIGHT - top, block.text)
            top += 6.0
            continue
        lines = _break_lines(block.text.split(" "), _summary_width, text_width)
        for number, words in enumerate(lines):
            top += _SUMMARY_LEADING
            text = canvas.beginText(MARGIN, PAGE_HEIGHT - top)
            text.setFont(_SUMMARY_FONT, _SUMMARY_SIZE)
            line = " ".join(words)
            if number == len(lines) - 1:
                text.textOut(line)
            else:
                head, last = line[:-1], line[-1]
                spaces = head.count(" ")
                room = text_width - _summary_width(last) - _SUMMARY_GAP
                word_space = (room - _summary_width(head)) / spaces if spaces else 0.0
                text.setWordSpace(word_space)
                text.textOut(head)
                text.setWordSpace(0)
                text.moveCursor(text_width - _summary_width(last), 0)
                text.textOut(last)
            canvas.drawText(text)
        top += 8.0


def make_split_glyph_summary(path: Path, pages: int = SUMMARY_PAGES) -> list[str]:
    """Write a stand-in for a real 18-page government summary; return each page's reference text.

    Like the real file's producer, it justifies each full line and then draws the line's last glyph as a
    text object of its own a little apart ("the fulfillment o" + "f"), so pypdf reads "o f": the extraction
    must rejoin such letters from the page's own words.  It is encrypted (RC4) with an empty user password
    and carries a title in its metadata.
    """
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=letter, pageCompression=1, invariant=1)
    canvas.setTitle(SUMMARY_TITLE)
    canvas.setAuthor("lmgpa tests")
    refs = []
    for page in range(1, pages + 1):
        blocks = _summary_page_blocks(page)
        _draw_summary_page(canvas, blocks)
        canvas.showPage()
        # The running header and footer are drawn first and last on the page, as they are read.
        refs.append(reference_text(blocks))
    canvas.save()
    buffer.seek(0)
    writer = PdfWriter(clone_from=PdfReader(buffer))
    writer.encrypt(user_password="", owner_password=OWNER_PASSWORD, algorithm="RC4-128")
    with path.open("wb") as out:
        writer.write(out)
    return refs


def _paper_width(text: str, font: str = _PAPER_FONT) -> float:
    return float(pdfmetrics.stringWidth(_ligatures(text), font, _PAPER_SIZE))


def _paper_split(word: str, room: float) -> tuple[str, str] | None:
    """Break `word` as TeX would: after its own hyphen ("F-" / "score"), or at a listed syllable."""
    if "-" in word.strip("-"):
        head, _, tail = word.partition("-")
        return (head + "-", tail) if _paper_width(head + "-") <= room else None
    core = word.rstrip(".,;:")
    points = _PAPER_HYPHENATION.get(core.lower())
    if points is None:
        return None
    cuts = [i for i, ch in enumerate(points) if ch == "-"]
    cuts = [cut - n for n, cut in enumerate(cuts)]  # positions in the word itself
    for cut in reversed(cuts):
        if _paper_width(word[:cut] + "-") <= room:
            return word[:cut] + "-", word[cut:]
    return None


def _paper_blocks() -> Iterator[tuple[Literal["heading", "body"], list[str]]]:
    """The paper's sections and paragraphs as words, without end (the layout stops when the pages are full)."""
    rng = random.Random("two-column-paper")
    for number, section in enumerate(itertools.cycle(PAPER_SECTIONS)):
        yield "heading", section.split(" ")
        for paragraph in range(rng.randint(2, 4)):
            sentences = rng.sample(PAPER_SENTENCES, rng.randint(3, 5))
            if number == 0 and paragraph == 0:
                sentences.insert(1, PAPER_SENTENCE)
            yield "body", " ".join(sentences).split(" ")


def _draw_paper_line(
    canvas: Canvas, column: int, row: int, words: list[str], *, font: str, indent: float, justify: bool
) -> None:
    x = _PAPER_MARGIN + column * (_PAPER_COLUMN + _PAPER_GUTTER) + indent
    text = canvas.beginText(x, PAGE_HEIGHT - _PAPER_TOP - row * _PAPER_LEADING)
    text.setFont(font, _PAPER_SIZE)
    line = " ".join(words)
    if justify and len(words) > 1:
        text.setWordSpace((_PAPER_COLUMN - indent - _paper_width(line, font)) / (len(words) - 1))
    text.textOut(_ligatures(line))
    canvas.drawText(text)


def make_two_column_paper(path: Path, pages: int = PAPER_PAGES) -> list[str]:
    """Write a stand-in for a real 8-page two-column conference paper; return each page's reference text.

    As TeX sets it: an embedded TrueType font (DejaVu Serif) drawing "fi", "fl", "ff" as ligature glyphs,
    justified columns, long words hyphenated at line ends ("perfor-" / "mance") and compounds broken after
    their own hyphen ("F-" / "score"), never a word broken across pages.  The left column is drawn before
    the right one.  The references hold whole words and plain letters: what extraction must give, cleaned.
    """
    _register_fonts()
    canvas = Canvas(str(path), pagesize=letter, pageCompression=1, invariant=1)
    canvas.setTitle(PAPER_TITLE)
    canvas.setAuthor(PAPER_AUTHORS)
    blocks = _paper_blocks()
    role, words = next(blocks)
    done = 0  # words of the current block already drawn
    refs = []
    for page in range(1, pages + 1):
        parts: list[str] = []
        if page == 1:
            canvas.setFont(_PAPER_BOLD, 16)
            canvas.drawCentredString(PAGE_WIDTH / 2, PAGE_HEIGHT - _PAPER_TOP, _ligatures(PAPER_TITLE))
            canvas.setFont(_PAPER_FONT, 11)
            canvas.drawCentredString(PAGE_WIDTH / 2, PAGE_HEIGHT - _PAPER_TOP - 22, _ligatures(PAPER_AUTHORS))
            parts += [PAPER_TITLE, PAPER_AUTHORS]
        first_row = _PAPER_TITLE_ROWS if page == 1 else 0
        slots = [(column, row) for column in (0, 1) for row in range(first_row, _PAPER_ROWS)]
        while slots:
            if role == "heading":
                if slots[0][1] > first_row and len(slots) > 1:
                    slots.pop(0)  # a blank row above a heading, except at the top of a column
                column, row = slots.pop(0)
                _draw_paper_line(canvas, column, row, words, font=_PAPER_BOLD, indent=0.0, justify=False)
                parts.append(" ".join(words))
                role, words = next(blocks)
                continue
            indent = 12.0 if done == 0 else 0.0
            lines = _break_lines(words[done:], _paper_width, _PAPER_COLUMN, _paper_split, first_indent=indent)
            fits = lines[: len(slots)]
            if len(fits) < len(lines) and fits[-1][-1].endswith("-") and len(fits[-1]) > 1:
                fits[-1].pop()  # the page's last line ends at a whole word: no break across pages
            for number, line in enumerate(fits):
                column, row = slots.pop(0)
                last = number == len(lines) - 1
                _draw_paper_line(
                    canvas,
                    column,
                    row,
                    line,
                    font=_PAPER_FONT,
                    indent=indent if number == 0 else 0.0,
                    justify=not last,
                )
            # A broken word's first part ends with "-" and its second part counts as the word.
            count = sum(not part.endswith("-") for line in fits for part in line)
            parts.append(" ".join(words[done : done + count]))
            done += count
            if done == len(words):
                role, words = next(blocks)
                done = 0
        canvas.setFont(_PAPER_FONT, _PAPER_SIZE)
        canvas.drawCentredString(PAGE_WIDTH / 2, _PAPER_TOP / 2, str(page))
        parts.append(str(page))
        refs.append("\n\n".join(parts))
        canvas.showPage()
    canvas.save()
    return refs


def large_page_text(page: int) -> str:
    """The reference text of page `page` of the large book."""
    return (
        f"Section {page}\n\nThis is page {page} of the book, and its index term is {index_term(page)}. "
        "Heat is energy transferred between systems because of a difference in temperature."
    )


def make_large_pdf(path: Path, pages: int = 1200) -> list[str]:
    """Write a long book of short pages quickly (about 0.3 s per 1,000 pages); return the references."""
    canvas = Canvas(str(path), pagesize=letter, pageCompression=1, invariant=1)
    refs = []
    for page in range(1, pages + 1):
        heading, body = large_page_text(page).split("\n\n")
        canvas.setFont("Times-Bold", 16)
        canvas.drawString(MARGIN, PAGE_HEIGHT - MARGIN, heading)
        canvas.setFont("Times-Roman", 11)
        canvas.drawString(MARGIN, PAGE_HEIGHT - MARGIN - 24, body)
        canvas.showPage()
        refs.append(f"{heading}\n\n{body}")
    canvas.save()
    return refs


def make_truncated_pdf(path: Path, *, pages: int = 4, keep: float = 0.6) -> bytes:
    """Write the first `keep` fraction of a text PDF's bytes (an interrupted upload); return the full file."""
    full = io.BytesIO()
    canvas = _new_canvas(full)
    for page in range(1, pages + 1):
        _draw_text_page(canvas, page_blocks(page))
        canvas.showPage()
    canvas.save()
    data = full.getvalue()
    path.write_bytes(data[: math.floor(len(data) * keep)])
    return data


def make_corrupt_stream_pdf(path: Path, *, pages: int = 3, broken: Sequence[int] = (2,)) -> list[str]:
    """Write a text PDF whose content streams of pages `broken` (1-based) are overwritten with garbage.

    The garbage keeps each stream's length, so the file's structure (xref offsets) stays valid and only
    those pages are damaged: pypdf raises when it decodes them.  Returns the references of the intact file.
    """
    buffer = io.BytesIO()
    canvas = _new_canvas(buffer)
    refs = []
    for page in range(1, pages + 1):
        blocks = page_blocks(page)
        _draw_text_page(canvas, blocks)
        canvas.showPage()
        refs.append(reference_text(blocks))
    canvas.save()
    data = bytearray(buffer.getvalue())
    reader = PdfReader(io.BytesIO(bytes(data)))
    rng = random.Random(f"corrupt-{pages}-{tuple(broken)}")
    for number in broken:
        contents = reader.pages[number - 1].raw_get("/Contents")
        offset = reader.xref[contents.generation][contents.idnum]
        start = data.index(b"stream", data.index(b">>", offset)) + len(b"stream\n")
        end = data.index(b"endstream", start)
        data[start : end - 1] = bytes(rng.randrange(256) for _ in range(end - 1 - start))
    path.write_bytes(bytes(data))
    return refs


def make_zero_page_pdf(path: Path) -> None:
    """Write a structurally valid PDF with no page at all."""
    with path.open("wb") as out:
        PdfWriter().write(out)


def make_jpeg_named_pdf(path: Path) -> None:
    """Write a JPEG photo under a .pdf name (a mislabelled upload)."""
    _figure_image(1).save(path, format="JPEG", quality=85)


HostileKind = Literal["cycle", "huge_count", "deep", "stream_bomb", "image_bomb", "form_loop", "length_lie"]
HOSTILE_KINDS: tuple[HostileKind, ...] = (
    "cycle",
    "huge_count",
    "deep",
    "stream_bomb",
    "image_bomb",
    "form_loop",
    "length_lie",
)
HOSTILE_TEXT = "Hello from a hostile file."


def _raw_pdf(objects: Sequence[bytes]) -> bytes:
    """Assemble numbered objects (1-based; object 1 is the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _stream(data: bytes, extra: str = "", *, compress: bool = False) -> bytes:
    import zlib

    if compress:
        data = zlib.compress(data, 9)
        extra += " /Filter /FlateDecode"
    return f"<< /Length {len(data)}{extra} >>\nstream\n".encode() + data + b"\nendstream"


def make_hostile_pdf(path: Path, kind: HostileKind) -> list[str]:
    """Write a small PDF built to hurt a reader (a loop, a bomb, a lie); return the readable pages' references.

    Objects: 1 catalog, 2 page tree root, 3 page, 4 its content, 5 the font; kinds add or change some.
    The returned list has one entry per page a reader should find ("" for a page that cannot be read).
    """
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    text = f"BT /F1 12 Tf 72 720 Td ({HOSTILE_TEXT}) Tj ET".encode()
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page,
        _stream(text),
        font,
    ]
    refs = [HOSTILE_TEXT]
    if kind == "cycle":
        objects[1] = b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>"
    elif kind == "huge_count":
        objects[1] = b"<< /Type /Pages /Kids [3 0 R] /Count 1000000000 >>"
    elif kind == "deep":
        depth = 300
        objects[1] = b"<< /Type /Pages /Kids [6 0 R] /Count 1 >>"
        objects[2] = page.replace(b"/Parent 2 0 R", f"/Parent {5 + depth} 0 R".encode())
        for level in range(depth):
            number = 6 + level
            kid = number + 1 if level < depth - 1 else 3
            parent = number - 1 if level else 2
            objects.append(f"<< /Type /Pages /Parent {parent} 0 R /Kids [{kid} 0 R] /Count 1 >>".encode())
    elif kind == "stream_bomb":
        # Page 1's content inflates to 120 MB of spaces (a 120 kB file); page 2 is fine.
        objects[1] = b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>"
        objects[3] = _stream(b" " * 120_000_000, compress=True)
        objects.append(page.replace(b"/Contents 4 0 R", b"/Contents 7 0 R"))
        objects.append(_stream(text))
        refs = ["", HOSTILE_TEXT]
    elif kind == "image_bomb":
        # An image declaring 40 gigapixels (a few bytes of data) and no text: nothing to read, nothing decoded.
        objects[2] = page.replace(b"/Font << /F1 5 0 R >>", b"/XObject << /Im0 6 0 R >>")
        objects[3] = _stream(b"q 612 0 0 792 0 0 cm /Im0 Do Q")
        objects.append(
            _stream(
                b"\x00" * 1000,
                " /Type /XObject /Subtype /Image /Width 200000 /Height 200000 /ColorSpace /DeviceGray /BitsPerComponent 8",
                compress=True,
            )
        )
        refs = [""]
    elif kind == "form_loop":
        # A form XObject that paints itself: readers must stop the recursion.
        objects[2] = page.replace(
            b"/Font << /F1 5 0 R >>", b"/Font << /F1 5 0 R >> /XObject << /Fm0 6 0 R >>"
        )
        objects[3] = _stream(text + b" /Fm0 Do")
        objects.append(
            _stream(
                b"/Fm0 Do",
                " /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /XObject << /Fm0 6 0 R >> >>",
            )
        )
    elif kind == "length_lie":
        objects[3] = b"<< /Length 999999999999 >>\nstream\n" + text + b"\nendstream"
    path.write_bytes(_raw_pdf(objects))
    return refs


def make_edition_pdf(path: Path, *, pages: int, edition: str) -> list[str]:
    """Write a quick book of several paragraphs a page whose bytes differ by `edition` (each test its own file,
    so identical-upload reuse never finds another test's book); return each page's reference text."""
    canvas = Canvas(str(path), pagesize=letter, pageCompression=1, invariant=1)
    refs = []
    for page in range(1, pages + 1):
        rng = random.Random(f"edition-{edition}-{page}")
        lines = [f"Edition {edition}, section {page}", unique_sentence(page)]
        for _ in range(14):
            lines.append(" ".join(rng.choice(_EDITION_WORDS) for _ in range(12)) + ".")
        top = PAGE_HEIGHT - MARGIN
        for n, line in enumerate(lines):
            canvas.setFont("Times-Bold" if n == 0 else "Times-Roman", 14 if n == 0 else 10)
            canvas.drawString(MARGIN, top - n * 16, line)
        canvas.showPage()
        refs.append("\n".join(lines))
    canvas.save()
    return refs


_EDITION_WORDS = [
    *("entropy", "heat", "engine", "cycle", "temperature", "pressure", "volume", "gas", "piston", "work"),
    *("energy", "system", "boundary", "reservoir", "efficiency", "Carnot", "isothermal", "adiabatic"),
    *("expansion", "compression", "molecule", "kinetic", "equilibrium", "state", "function"),
]
