"""PDF books as page-numbered text: pypdf's text layer, OCR of a scanned page's images, bounded on bad files.

Choices measured on generated books and on two real PDFs, an 8-page two-column paper and the 18-page DMCA
summary (the figures below; the repository may not redistribute either file, so tests.media.pdfs generates
stand-ins of both that ``python -m shared.bench.pdf`` and the tests use):

- pypdf's ``plain`` extraction mode, not ``layout``: on the two-column paper layout mode interleaves the
  columns line by line (only 44% of plain mode's word 6-grams survive), pads with 3.5x as many spaces (+32%
  characters for the chunker to pay for) and is no faster (44 vs 49 pages/s).  On single-column generated
  pages both modes are exact once cleaned.
- Line-end dehyphenation: typeset books break words at line ends ("perfor-\\nmance": 112 breaks in the
  8-page paper, 108 joined; kept: "F-score", "mid-Sep." and two artefacts).  A break is joined when both
  sides are lowercase letters, unless the hyphenated form occurs elsewhere on the same page (a compound such
  as "hurricane-related" keeps its hyphen).  Share of whole dictionary words: 0.903 -> 0.934.
- A letter split off a line's last word ("th e", "copyrigh t") is rejoined when the joined word occurs
  elsewhere on the same page: 139 words in the 18-page DMCA summary, whose producer sets each line's last
  glyph apart (no change on the paper; the generated books stay exact).  Whole-word share there, with
  both repairs: 0.937 -> 0.945.
  Both repairs look at one page only, so a page's text never depends on the range it was asked in.
- Dot leaders (the rows of dots from a heading to its page number in a contents page or an index) become
  one " ... ": in gnuplot's 311-page manual they are 10.6% of all word pieces (24,558 of 231,812, 532 rows),
  which the embedding model would pay for and which carry no meaning; three dots stay as they are.
- Fonts parsed once per book: pypdf parses a font's encoding and ToUnicode map again on every page that
  uses it; a book's pages share a few fonts (31 font dictionaries over the bench corpus's 437 pages, 1,890
  parses).  An open ``PdfBook`` parses each font dictionary once, over all the ranges extracted from it.
  Over the bench corpus in 25-page ranges (CPU-s): pypdf's own ``extract_text`` 5.9-6.1; before this, a file
  opened per range, 7.0-7.1; now with a file opened per range (``extract_pages``) 6.1, and with one open book
  per file, as the chunking worker keeps it, 5.3-5.5 (7-12% under pypdf), the same text (tests/unit/test_pdf.py).
- Page ranges: a page is reached by walking down the page tree with the /Count of each node, without reading
  other pages' dictionaries (when a flat /Kids array holds exactly /Count pages) and never their content.
  pypdf's own ``reader.pages[i]`` first builds the whole page list: ~0.1 s per 1,000 pages, in every range.
- pypdf's ``DependencyError`` is never taken for damage: AES encryption needs the `cryptography` package
  (``pypdf[crypto]``) and JBIG2 scans the ``jbig2dec`` program.  It propagates, so a deployment without
  them fails loudly instead of turning such books into empty pages.
"""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from PIL import Image
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
from pypdf.generic import (
    ArrayObject,
    ContentStream,
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    StreamObject,
)
from pypdf.generic import _font as pypdf_font

from shared.errors import PermanentError
from shared.logging import get_logger

log = get_logger(__name__)

MIN_TEXT_CHARS = 50
"""Letters below which a page with images counts as scanned.  A typeset page has 1,000-3,000 letters (the
sample PDFs' sparsest page has 134); what a scan's text layer may carry is a stamp, a page number or a
running header ("Digitized by Google": 17 letters).  Erring high only costs an OCR of a short page that has
an image: its text layer is kept in front of the OCR text either way."""

HEADER_WINDOW = 1024
"""Readers accept the %PDF- marker anywhere in the first 1,024 bytes (PDF 1.7, annex H)."""

MIN_OCR_IMAGE_SIDE = 24
"""Thinner images are rules and borders: Tesseract needs about 20 px of letter height to read anything."""
MIN_OCR_IMAGE_PIXELS = 20_000
"""Images smaller than this (about 140x140 px) hold a word at most: bullets, logos, icons."""

MAX_OCR_IMAGE_PIXELS = 60_000_000
"""Larger images are not decoded (decompression bombs); the same bound as the photo limit in the settings."""

MAX_OCR_IMAGE_SIDE = 20_000
"""A 600-dpi scan of a 17-inch page is 10,200 px long; Tesseract refuses sides beyond 32,767."""

MAX_OCR_IMAGES_PER_PAGE = 8
"""The largest images of a page are read; a mosaic of hundreds of tiles would otherwise take minutes."""

MAX_FORM_DEPTH = 8
MAX_TREE_DEPTH = 64
MAX_TREE_KIDS = 100_000  # page-tree entries looked at to find one page; pypdf's own walk stops there too
MAX_META_CHARS = 500

Method = Literal["text", "ocr", "empty"]
_INHERITABLE = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")
_LIGATURES = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


_CHAR_MAP_LIMIT = 65_536


class _CharMap(dict[int, str | int | None]):
    """str.translate's table for clean_text, filled per character on first sight: ligatures spelled out,
    control, format, surrogate, private-use and unassigned characters dropped (\\n and \\t kept).  5-6x
    faster than asking unicodedata for every character of every page (gnuplot's 847,455 characters: 0.02
    against 0.11 CPU-s)."""

    def __missing__(self, code: int) -> str | int | None:
        char = chr(code)
        if char in _LIGATURES:
            value: str | int | None = _LIGATURES[char]
        elif char not in "\n\t" and unicodedata.category(char) in _DROP_CATEGORIES:
            value = None
        else:
            value = code
        if len(self) < _CHAR_MAP_LIMIT:  # hostile text of every code point must not grow it without bound
            self[code] = value
        return value


_CHAR_MAP = _CharMap()
_DOT_LEADER = re.compile(r"(?:[ \t]*[.\u00b7\u2024\u2026]){4,}[ \t]*")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (EPUB or Office document?)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
)
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\n(?=[^\W\d_])")
_WORD_END = re.compile(r"[^\W\d_]+\Z")
_WORD_START = re.compile(r"[^\W\d_]+")
_SPLIT_LAST_LETTER = re.compile(r"\b([^\W\d_]+) ([^\W\d_])$", re.MULTILINE)
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


_fonts = threading.local()
_FontCache = dict[int, tuple[DictionaryObject, pypdf_font.Font]]
_pypdf_font_parse: Callable[[type[pypdf_font.Font], DictionaryObject], pypdf_font.Font] = vars(
    pypdf_font.Font
)["from_font_resource"].__func__


def _font_once(cls: type[pypdf_font.Font], pdf_font_dict: DictionaryObject) -> pypdf_font.Font:
    """pypdf's Font.from_font_resource, answered from the calling thread's cache while one is open."""
    cache: _FontCache | None = getattr(_fonts, "cache", None)
    if cache is None:
        return _pypdf_font_parse(cls, pdf_font_dict)
    hit = cache.get(id(pdf_font_dict))
    if hit is not None and hit[0] is pdf_font_dict:  # the dictionary is kept alive, so its id is not reused
        return hit[1]
    font = _pypdf_font_parse(cls, pdf_font_dict)
    cache[id(pdf_font_dict)] = (pdf_font_dict, font)
    return font


# The one change made to pypdf: its font parser answers from a book's cache inside PdfBook.extract (see the
# module's docstring).  pypdf's page extraction only reads a parsed Font, except space_width, which it sets
# to the same value on every page for a font without a space width.
pypdf_font.Font.from_font_resource = classmethod(_font_once)  # type: ignore[method-assign,assignment]


@contextmanager
def _fonts_parsed_once(cache: _FontCache) -> Iterator[None]:
    """Within this block, this thread parses each font dictionary once, keeping the parsed fonts in `cache`."""
    outer = getattr(_fonts, "cache", None)
    _fonts.cache = cache
    try:
        yield
    finally:
        _fonts.cache = outer


class OcrOutput(Protocol):
    """What extract_pages reads from an OCR result (``shared.media.ocr.OcrResult`` has it)."""

    @property
    def text(self) -> str:
        """The recognised text."""
        ...

    @property
    def mean_confidence(self) -> float:
        """The mean word confidence."""
        ...


OcrFunction = Callable[[Image.Image], OcrOutput]


@dataclass(frozen=True)
class PdfInfo:
    """What a PDF is, read without extracting any page."""

    page_count: int
    encrypted: bool
    title: str | None
    author: str | None


@dataclass(frozen=True)
class PageText:
    """One page's cleaned text, its 1-based number, how it was obtained and the OCR confidence if any."""

    page: int
    text: str
    method: Method
    confidence: float | None


def _default_ocr(image: Image.Image) -> OcrOutput:
    """OCR with the shared Tesseract wrapper, imported only when a scanned page needs it."""
    from shared.media.ocr import ocr_image

    return ocr_image(image)


def inspect_pdf(path: Path, *, max_pages: int | None = None) -> PdfInfo:
    """Open a PDF, check it can be read, count its pages and read its title and author."""
    with PdfBook(path) as book:
        return book.info(max_pages=max_pages)


def extract_pages(
    path: Path,
    first_page: int,
    last_page: int,
    *,
    ocr: OcrFunction | None = _default_ocr,
    min_text_chars: int = MIN_TEXT_CHARS,
) -> list[PageText]:
    """Return the cleaned text of pages first_page..last_page (1-based, inclusive), OCR-ing scanned pages."""
    with PdfBook(path) as book:
        return book.extract(first_page, last_page, ocr=ocr, min_text_chars=min_text_chars)


class PdfBook:
    """One open PDF, extracted range after range: the objects pypdf parsed and the fonts stay for the next
    range (25-page ranges of the bench corpus cost 11-15% more CPU when the file is opened again for each).
    A range at a time (a lock), any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream = path.open("rb")
        try:
            stat = os.fstat(self._stream.fileno())
            self.identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            self._reader = _open_reader(path, self._stream)
        except BaseException:
            self._stream.close()
            raise
        self._pages = _PageTree(self._reader, path)
        self._fonts: _FontCache = {}
        self._lock = threading.RLock()

    def __enter__(self) -> PdfBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file once the range being extracted, if any, is done (what pypdf parsed goes with it)."""
        with self._lock:
            self._stream.close()

    def info(self, *, max_pages: int | None = None) -> PdfInfo:
        """Check the book can be read, count its pages and read its title and author (the page tree walked
        here stays parsed for the ranges)."""
        with self._lock:
            path, reader = self.path, self._reader
            declared = _declared_count(reader)
            try:
                # Walks the page tree (not the pages' content): ~0.1 s per 1,000 pages, bounded by pypdf's limits.
                page_count = len(reader.pages)
            except LimitReachedError as exc:
                if max_pages is not None and declared is not None and declared > max_pages:
                    raise PermanentError(
                        "too_many_pages", f"the PDF declares {declared} pages, more than {max_pages}"
                    ) from exc
                raise _corrupt(path, "its page tree is beyond a safety limit", exc) from exc
            except DependencyError:
                raise
            except Exception as exc:
                raise _corrupt(path, "its page tree cannot be read", exc) from exc
            if page_count == 0:
                raise PermanentError("empty_pdf", "the PDF has no pages")
            if max_pages is not None and page_count > max_pages:
                raise PermanentError(
                    "too_many_pages", f"the PDF has {page_count} pages, more than {max_pages}"
                )
            if declared is not None and declared != page_count:
                log.warning("pdf_page_count_mismatch", file=path.name, declared=declared, found=page_count)
            return PdfInfo(
                page_count=page_count,
                encrypted=bool(reader.is_encrypted),
                title=_metadata(reader, "title"),
                author=_metadata(reader, "author"),
            )

    def page_count(self) -> int:
        """The book's pages, as the ranges count them."""
        with self._lock:
            return self._pages.count()

    def extract(
        self,
        first_page: int,
        last_page: int,
        *,
        ocr: OcrFunction | None = _default_ocr,
        min_text_chars: int = MIN_TEXT_CHARS,
    ) -> list[PageText]:
        """The cleaned text of pages first_page..last_page (1-based, inclusive), OCR-ing scanned pages."""
        if first_page < 1 or last_page < first_page:
            raise ValueError(f"invalid page range {first_page}-{last_page}")
        with self._lock, _fonts_parsed_once(self._fonts):
            pages, path = self._pages, self.path
            if last_page > pages.count():
                # /Count may be wrong: count the pages themselves.
                pages.walk_all("the range ends beyond /Count")
            if pages.count() == 0:
                raise PermanentError("empty_pdf", "the PDF has no pages")
            if last_page > pages.count():
                raise ValueError(f"pages {first_page}-{last_page} asked of a {pages.count()}-page PDF")
            results: list[PageText] = []
            failures = 0
            for number in range(first_page, last_page + 1):
                page_text, failed = _extract_page(pages, number, path, ocr, min_text_chars)
                results.append(page_text)
                failures += failed
            if failures == len(results):
                raise PermanentError(
                    "corrupt_pdf", f"no page of {first_page}-{last_page} could be read: the PDF is damaged"
                )
            return results


def clean_text(text: str) -> str:
    """Normalise extracted text: ligatures, control and invisible characters, line-end hyphens, whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00ad\n", "-\n")  # a soft hyphen at a line end is a typeset break
    text = text.translate(_CHAR_MAP)
    text = _DOT_LEADER.sub(" ... ", text)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    text = "\n".join(lines)
    vocabulary = set(_WORD.findall(text.lower()))
    text = _HYPHEN_BREAK.sub(lambda m: _join_hyphenated(m, vocabulary), text)
    vocabulary = set(_WORD.findall(text.lower()))
    text = _SPLIT_LAST_LETTER.sub(lambda m: _join_split_letter(m, vocabulary), text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _join_hyphenated(match: re.Match[str], vocabulary: set[str]) -> str:
    """'' to join a word broken at a line end, '-' to keep a compound's hyphen (the line break goes either way)."""
    text, start, end = match.string, match.start(), match.end()
    head = _WORD_END.search(text, max(0, start - 64), start)
    tail = _WORD_START.match(text, end)
    assert head is not None and tail is not None  # the lookarounds guarantee a letter on each side
    before, after = head.group(), tail.group()
    if before[-1].islower() and after[0].islower() and f"{before}-{after}".lower() not in vocabulary:
        return ""
    return "-"


def _join_split_letter(match: re.Match[str], vocabulary: set[str]) -> str:
    word, letter = match.group(1), match.group(2)
    if letter.islower() and (word + letter).lower() in vocabulary:
        return word + letter
    return match.group(0)


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _corrupt(path: Path, what: str, exc: BaseException) -> PermanentError:
    log.warning("pdf_unreadable", file=path.name, what=what, error=type(exc).__name__, detail=str(exc)[:200])
    return PermanentError("corrupt_pdf", f"the PDF is damaged: {what} ({type(exc).__name__})")


def _check_header(path: Path, head: bytes) -> None:
    if b"%PDF-" in head:
        return
    if not head:
        raise PermanentError("corrupt_pdf", "the file is empty")
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            raise PermanentError("unsupported_media", f"not a PDF: the file is {kind}")
    raise PermanentError("unsupported_media", "not a PDF: no %PDF- header in its first 1,024 bytes")


def _open_reader(path: Path, stream: IO[bytes]) -> PdfReader:
    """Open a PDF lazily from `stream`; map every way it can fail to a PermanentError."""
    _check_header(path, stream.read(HEADER_WINDOW))
    stream.seek(0)
    try:
        reader = PdfReader(stream, strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise PermanentError("pdf_encrypted", "the PDF is protected by a password")
        return reader
    except PermanentError:
        raise
    except FileNotDecryptedError as exc:
        raise PermanentError("pdf_encrypted", "the PDF is protected by a password") from exc
    except DependencyError:
        raise  # this deployment lacks a decoder (AES needs `cryptography`): not the file's fault
    except RecursionError as exc:
        raise _corrupt(path, "its objects nest without end", exc) from exc
    except Exception as exc:
        raise _corrupt(path, "its structure cannot be parsed", exc) from exc


def _declared_count(reader: PdfReader) -> int | None:
    """The page tree root's /Count, if it is a plausible number; None if it cannot be read."""
    try:
        pages = reader.root_object["/Pages"].get_object()
        count = pages["/Count"].get_object() if isinstance(pages, DictionaryObject) else None
    except DependencyError:
        raise
    except Exception:
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def _metadata(reader: PdfReader, field: Literal["title", "author"]) -> str | None:
    try:
        info = reader.metadata
        value = getattr(info, field, None) if info is not None else None
    except DependencyError:
        raise
    except Exception:
        return None
    if value is None:
        return None
    cleaned = " ".join(clean_text(str(value)).split())[:MAX_META_CHARS]
    return cleaned or None


class _TreeMismatch(Exception):
    """The page tree's /Count values do not describe its /Kids: walk it all instead."""


class _PageTree:
    """Random access to the pages of a book, reading only the page-tree nodes above the page asked for."""

    def __init__(self, reader: PdfReader, path: Path) -> None:
        self._reader = reader
        self._path = path
        self._flat = False
        self._count: int | None = None

    def count(self) -> int:
        """The number of pages: the root's /Count, or the walked tree's if that is implausible."""
        if self._count is None:
            self._count = _declared_count(self._reader)
            if self._count is None:
                self.walk_all("no usable /Count")
        assert self._count is not None
        return self._count

    def page(self, index: int) -> PageObject:
        """The page at 0-based `index`, with the attributes it inherits from its ancestors."""
        if not self._flat:
            try:
                return self._descend(index)
            except DependencyError:
                raise
            except Exception as exc:
                self.walk_all(f"{type(exc).__name__}: {exc}"[:200])
        return self._reader.pages[index]

    def walk_all(self, why: str) -> None:
        """Build pypdf's full page list and use it from now on (a damaged tree, or a wrong /Count)."""
        if self._flat:
            return
        log.info("pdf_page_tree_walked", file=self._path.name, why=why)
        self._flat = True
        try:
            self._count = len(self._reader.pages)
        except DependencyError:
            raise
        except Exception as exc:
            raise _corrupt(self._path, "its page tree cannot be read", exc) from exc

    def _descend(self, index: int) -> PageObject:
        node = self._reader.root_object["/Pages"].get_object()
        inherited: dict[str, PdfObject] = {}
        budget = MAX_TREE_KIDS
        for _depth in range(MAX_TREE_DEPTH):
            if not isinstance(node, DictionaryObject):
                raise _TreeMismatch("a /Pages node is not a dictionary")
            inherited.update({key: node[key] for key in _INHERITABLE if key in node})
            kids = node.get("/Kids")
            kids = kids.get_object() if kids is not None else None
            if not isinstance(kids, ArrayObject):
                raise _TreeMismatch("/Kids is not an array")
            budget -= len(kids)
            if budget < 0:
                raise _TreeMismatch("too many page-tree entries")
            count = node.get("/Count")
            count = count.get_object() if count is not None else None
            if count == len(kids) and index < len(kids):
                # Every kid is one page: index directly, if that kid is a page whose parent is this node.
                reference = kids[index]
                kid = reference.get_object()
                if _node_type(kid) == "/Page" and _is_parent(kid, node):
                    return self._page(reference, kid, inherited)
            remaining = index
            for reference in kids:
                kid = reference.get_object()
                kind = _node_type(kid)
                if kind == "/Page":
                    if remaining == 0:
                        return self._page(reference, kid, inherited)
                    remaining -= 1
                elif kind == "/Pages":
                    assert isinstance(kid, DictionaryObject)
                    size = kid.get("/Count")
                    size = size.get_object() if size is not None else None
                    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                        raise _TreeMismatch("a /Pages node has no usable /Count")
                    if remaining < size:
                        node, index = kid, remaining
                        break
                    remaining -= size
            else:
                raise _TreeMismatch("the page is beyond the node's kids")
        raise _TreeMismatch("the page tree is too deep")

    def _page(self, reference: PdfObject, kid: PdfObject, inherited: dict[str, PdfObject]) -> PageObject:
        if isinstance(reference, IndirectObject):
            page = PageObject(self._reader, reference)
        else:
            page = PageObject(self._reader)
            assert isinstance(kid, DictionaryObject)
            page.update(kid)
        for key, value in inherited.items():
            if key not in page:
                page[NameObject(key)] = value
        return page


def _node_type(node: PdfObject) -> str | None:
    """'/Page', '/Pages' or None (skipped), decided as pypdf's own page-tree walk decides."""
    if not isinstance(node, DictionaryObject) or not node:
        return None
    if "/Type" in node:
        kind = node["/Type"]
        return kind if isinstance(kind, str) and kind in ("/Page", "/Pages") else None
    return "/Pages" if "/Kids" in node else "/Page"


def _is_parent(kid: PdfObject, node: DictionaryObject) -> bool:
    assert isinstance(kid, DictionaryObject)
    parent = kid.get("/Parent")
    mine = node.indirect_reference
    return (
        isinstance(parent, IndirectObject)
        and mine is not None
        and (parent.idnum, parent.generation) == (mine.idnum, mine.generation)
    )


def _extract_page(
    pages: _PageTree, number: int, path: Path, ocr: OcrFunction | None, min_text_chars: int
) -> tuple[PageText, bool]:
    """One page's text and whether pypdf failed on it."""
    try:
        page = pages.page(number - 1)
    except (PermanentError, DependencyError):
        raise
    except Exception as exc:
        _log_failure("pdf_page_unreadable", path, number, exc)
        return PageText(number, "", "empty", None), True
    failed = False
    try:
        text = clean_text(page.extract_text(extraction_mode="plain"))
    except DependencyError:
        raise
    except Exception as exc:
        _log_failure("pdf_page_text_failed", path, number, exc)
        text, failed = "", True
    if ocr is None or _letters(text) >= min_text_chars:
        return PageText(number, text, "text" if text else "empty", None), failed
    ocr_text, confidence, images_failed = _ocr_page(page, number, path, ocr)
    if ocr_text:
        combined = clean_text(f"{text}\n\n{ocr_text}") if text else ocr_text
        return PageText(number, combined, "ocr", confidence), False
    return PageText(number, text, "text" if text else "empty", None), failed or images_failed


def _log_failure(event: str, path: Path, number: int, exc: BaseException) -> None:
    log.warning(event, file=path.name, page=number, error=type(exc).__name__, detail=str(exc)[:200])


@dataclass(frozen=True)
class _ImageRef:
    key: str | tuple[str, ...]
    width: int
    height: int


def _ocr_page(page: PageObject, number: int, path: Path, ocr: OcrFunction) -> tuple[str, float | None, bool]:
    """OCR the page's displayed images, largest first: (text, word-weighted mean confidence, listing failed)."""
    try:
        refs = _displayed_images(page)
    except DependencyError:
        raise
    except Exception as exc:
        _log_failure("pdf_page_images_failed", path, number, exc)
        return "", None, True
    candidates = [
        ref
        for ref in refs
        if min(ref.width, ref.height) >= MIN_OCR_IMAGE_SIDE
        and MIN_OCR_IMAGE_PIXELS <= ref.width * ref.height <= MAX_OCR_IMAGE_PIXELS
        and max(ref.width, ref.height) <= MAX_OCR_IMAGE_SIDE
    ]
    skipped = [
        ref
        for ref in refs
        if ref.width * ref.height > MAX_OCR_IMAGE_PIXELS or max(ref.width, ref.height) > MAX_OCR_IMAGE_SIDE
    ]
    if skipped:
        log.warning(
            "pdf_image_too_large", file=path.name, page=number, pixels=skipped[0].width * skipped[0].height
        )
    candidates.sort(key=lambda ref: ref.width * ref.height, reverse=True)
    texts: list[str] = []
    weighted = 0.0
    words = 0
    rotation = _rotation(page)
    for ref in candidates[:MAX_OCR_IMAGES_PER_PAGE]:
        image = _decode(page, ref, number, path)
        if image is None:
            continue
        if rotation:
            image = image.rotate(-rotation, expand=True)
        started = time.perf_counter()
        result = ocr(image)
        text = clean_text(result.text)
        log.debug(
            "pdf_page_ocr", file=path.name, page=number, seconds=round(time.perf_counter() - started, 2)
        )
        if text:
            texts.append(text)
            count = len(text.split())
            weighted += result.mean_confidence * count
            words += count
    if not texts:
        return "", None, False
    return "\n\n".join(texts), weighted / words, False


def _rotation(page: PageObject) -> int:
    try:
        rotation = page.rotation
    except Exception:
        return 0
    return rotation % 360 if isinstance(rotation, int) and rotation % 90 == 0 else 0


def _decode(page: PageObject, ref: _ImageRef, number: int, path: Path) -> Image.Image | None:
    """Decode one image with pypdf and Pillow into a mode Tesseract reads; None if the data is bad."""
    try:
        image = page.images[ref.key if isinstance(ref.key, str) else list(ref.key)].image
        if image is None:
            return None
        image.load()
        return _for_ocr(image)
    except DependencyError:
        raise
    except Exception as exc:
        _log_failure("pdf_image_unreadable", path, number, exc)
        return None


def _for_ocr(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # A transparent background becomes black when dropped; scans want white paper.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("1", "I", "I;16", "I;16B", "I;16L", "F"):
        return image.convert("L")
    return image.convert("RGB")


def _displayed_images(page: PageObject) -> list[_ImageRef]:
    """The images the page's content actually paints (not merely listed in shared resources), with sizes."""
    found: dict[str | tuple[str, ...], _ImageRef] = {}
    contents = page.get_contents()
    if contents is None:
        return []
    inline = 0
    for operands, operator in contents.operations:
        if operator == b"INLINE IMAGE":
            settings = operands.get("settings", {}) if isinstance(operands, dict) else {}
            key = f"~{inline}~"
            inline += 1
            width, height = _size(settings, "/W", "/Width"), _size(settings, "/H", "/Height")
            found[key] = _ImageRef(key, width, height)
    for ref in _painted(page, contents, (), 0, page.pdf):
        found.setdefault(ref.key, ref)
    return list(found.values())


def _painted(
    owner: DictionaryObject, contents: ContentStream, prefix: tuple[str, ...], depth: int, pdf: object
) -> Iterator[_ImageRef]:
    """Images painted with Do by `contents`, looking inside forms up to MAX_FORM_DEPTH."""
    resources = owner.get("/Resources")
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if isinstance(resources, DictionaryObject) else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not isinstance(xobjects, DictionaryObject):
        return
    names: list[str] = []
    for operands, operator in contents.operations:
        if operator == b"Do" and operands and str(operands[0]) not in names:
            names.append(str(operands[0]))
    for name in names:
        xobject = xobjects.get(name)
        xobject = xobject.get_object() if xobject is not None else None
        if not isinstance(xobject, StreamObject):
            continue
        path = (*prefix, name)
        subtype = xobject.get("/Subtype")
        if subtype == "/Image":
            yield _ImageRef(name if not prefix else path, _size(xobject, "/Width"), _size(xobject, "/Height"))
        elif subtype == "/Form" and depth < MAX_FORM_DEPTH:
            yield from _painted(xobject, ContentStream(xobject, pdf), path, depth + 1, pdf)


def _size(entries: object, *keys: str) -> int:
    if not isinstance(entries, dict):
        return 0
    for key in keys:
        value = entries.get(key)
        value = value.get_object() if isinstance(value, PdfObject) else value
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0
