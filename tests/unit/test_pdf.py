"""PDF text layer: exact page-aware extraction, bad files, encryption, page ranges of a long book (no OCR engine)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf.generic import DictionaryObject
from structlog.testing import capture_logs

from shared.errors import PermanentError
from shared.media.pdf import (
    MIN_TEXT_CHARS,
    PageText,
    PdfInfo,
    clean_text,
    extract_pages,
    inspect_pdf,
)
from tests.media import DATA, pdfs

INVALID = DATA / "bad" / "ocrmypdf_invalid.pdf"
CFF_TYPE1 = DATA / "pdfs" / "textbook_cff_type1.pdf"  # pages 1-2 of make_text_pdf through Ghostscript


def normalise(text: str) -> str:
    """Collapse whitespace: the only normalisation between a page's reference and its extraction."""
    return re.sub(r"\s+", " ", text).strip()


def no_ocr(image: Image.Image) -> object:
    """An OCR function that must not be reached: text-layer pages never need it."""
    raise AssertionError("OCR called on a page with a text layer")


@dataclass(frozen=True)
class FakeOcr:
    """What the OCR port returns."""

    text: str
    mean_confidence: float


class RecordingOcr:
    """An OCR stand-in that records the image sizes it is given."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, image: Image.Image) -> FakeOcr:
        self.sizes.append(image.size)
        return FakeOcr("Recognised words from a scanned page.", 91.0)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("pdf") / "book.pdf"
    return path, pdfs.make_text_pdf(path, 12)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("pdf") / "large.pdf"
    return path, pdfs.make_large_pdf(path, 1200)


def test_text_layer_extraction_is_exact_page_by_page(book: tuple[Path, list[str]]) -> None:
    path, refs = book
    pages = extract_pages(path, 1, len(refs), ocr=no_ocr)  # type: ignore[arg-type]
    assert [p.page for p in pages] == list(range(1, len(refs) + 1))
    assert {(p.method, p.confidence) for p in pages} == {("text", None)}
    exact = sum(normalise(p.text) == normalise(ref) for p, ref in zip(pages, refs, strict=True))
    print(f"exact agreement {exact}/{len(refs)} = {exact / len(refs):.3f}")
    # Justified, hyphenated lines; curly quotes, dashes, accents, an embedded TrueType heading font: all exact.
    assert exact == len(refs)
    for page in pages:
        assert pdfs.unique_sentence(page.page) in normalise(page.text)
        others = [p for p in pages if p.page != page.page]
        assert not any(pdfs.index_term(page.page) + "." in p.text for p in others)


def test_inspect_reads_count_title_and_author(book: tuple[Path, list[str]]) -> None:
    path, refs = book
    info = inspect_pdf(path, max_pages=100)
    assert info == PdfInfo(
        page_count=len(refs), encrypted=False, title="A Generated Textbook", author="lmgpa tests"
    )


def test_ranges_give_the_same_pages_as_the_whole_book(book: tuple[Path, list[str]]) -> None:
    path, refs = book
    whole = extract_pages(path, 1, len(refs), ocr=None)
    ranges = extract_pages(path, 1, 5, ocr=None) + extract_pages(path, 6, 11, ocr=None)
    ranges += extract_pages(path, 12, 12, ocr=None)
    assert ranges == whole


@pytest.mark.parametrize(("first", "last"), [(0, 3), (4, 3), (1, 13), (13, 13)])
def test_a_range_outside_the_book_is_a_caller_error(
    book: tuple[Path, list[str]], first: int, last: int
) -> None:
    with pytest.raises(ValueError, match=r"range|asked"):
        extract_pages(book[0], first, last, ocr=None)


def test_too_many_pages(book: tuple[Path, list[str]]) -> None:
    with pytest.raises(PermanentError) as caught:
        inspect_pdf(book[0], max_pages=11)
    assert caught.value.code == "too_many_pages"
    assert "12" in caught.value.reason


def test_empty_password_encryption_opens(tmp_path: Path) -> None:
    refs = pdfs.make_encrypted_pdf(tmp_path / "open.pdf", user_password="")
    assert pypdf.PdfReader(tmp_path / "open.pdf").is_encrypted
    info = inspect_pdf(tmp_path / "open.pdf")
    assert (info.page_count, info.encrypted, info.title) == (3, True, "A Generated Textbook")
    pages = extract_pages(tmp_path / "open.pdf", 1, 3, ocr=no_ocr)  # type: ignore[arg-type]
    assert [normalise(p.text) for p in pages] == [normalise(r) for r in refs]


def test_a_real_password_is_a_clear_permanent_error(tmp_path: Path) -> None:
    pdfs.make_encrypted_pdf(tmp_path / "locked.pdf", user_password="s3cret")
    for call in (
        lambda: inspect_pdf(tmp_path / "locked.pdf"),
        lambda: extract_pages(tmp_path / "locked.pdf", 1, 1),
    ):
        with pytest.raises(PermanentError) as caught:
            call()
        assert caught.value.code == "pdf_encrypted"
        assert "password" in caught.value.reason


def _raw_pages(path: Path) -> list[str]:
    """pypdf's own plain text of every page, before our cleaning."""
    reader = pypdf.PdfReader(path)
    if reader.is_encrypted:
        reader.decrypt("")
    return [page.extract_text(extraction_mode="plain") for page in reader.pages]


_SPLIT_LETTER = re.compile(r"[^\W\d_] [^\W\d_]$", re.MULTILINE)


def test_a_summary_whose_producer_sets_each_lines_last_glyph_apart_extracts_rejoined(tmp_path: Path) -> None:
    path = tmp_path / "summary.pdf"
    pdfs.make_split_glyph_summary(path)
    info = inspect_pdf(path)
    assert (info.page_count, info.encrypted) == (18, True)  # RC4 with an empty user password
    assert info.title == pdfs.SUMMARY_TITLE
    raw = _raw_pages(path)
    assert "o f\nformalities" in raw[2]  # the file really sets the glyph apart
    pages = extract_pages(path, 1, info.page_count, ocr=no_ocr)  # type: ignore[arg-type]
    assert all(p.method == "text" for p in pages)
    assert min(sum(c.isalpha() for c in p.text) for p in pages) > 100
    assert pdfs.SUMMARY_TITLE in pages[0].text
    # The page's own words rejoin a split letter: "of" occurs elsewhere on page 3.
    assert "fulfillment of formalities" in normalise(pages[2].text)
    before = sum(len(_SPLIT_LETTER.findall(text)) for text in raw)
    after = sum(len(_SPLIT_LETTER.findall(p.text)) for p in pages)
    print(f"line-end letters set apart: {before} in pypdf's text, {after} left after cleaning")
    assert after < before / 2  # those left are words found nowhere else on their page


def test_a_two_column_paper_extracts_in_column_order_dehyphenated_and_without_ligatures(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.pdf"
    refs = pdfs.make_two_column_paper(path)
    info = inspect_pdf(path)
    assert (info.page_count, info.encrypted) == (8, False)
    raw = "\n".join(_raw_pages(path))
    # What the file really holds: TeX-like breaks and ligature glyphs from an embedded TrueType font.
    assert "perfor-\nmance" in raw and "F-\nscore" in raw and "ﬁ" in raw
    assert pdfs.PAPER_SENTENCE not in normalise(raw)  # it spans lines, broken "perfor-" / "mance"
    pages = extract_pages(path, 1, 8, ocr=no_ocr)  # type: ignore[arg-type]
    text = normalise(" ".join(p.text for p in pages))
    assert "Relation Discovery" in text
    # plain mode keeps the left column's sentence whole (layout mode interleaves the two columns)
    assert pdfs.PAPER_SENTENCE in text
    assert "perfor-" not in text and "ﬁ" not in text and "finding" in text
    assert "F-score" in text and "Fscore" not in text  # a capital after the break: the hyphen stays
    assert [normalise(p.text) for p in pages] == [normalise(ref) for ref in refs]


def _fonts(page: pypdf.PageObject) -> list[DictionaryObject]:
    """The font dictionaries of a page's resources."""
    resources = cast(DictionaryObject, page["/Resources"].get_object())
    fonts = cast(DictionaryObject, resources["/Font"].get_object())
    return [cast(DictionaryObject, font.get_object()) for font in fonts.values()]


def _cff_type1_fonts(path: Path) -> set[str]:
    """Base names of the simple fonts embedded as CFF (FontFile3 /Type1C) without a ToUnicode map."""
    found = set()
    for page in pypdf.PdfReader(path).pages:
        for font in _fonts(page):
            descriptor = cast(DictionaryObject, font["/FontDescriptor"].get_object())
            file = descriptor.get("/FontFile3")
            if file is not None and file.get_object()["/Subtype"] == "/Type1C" and "/ToUnicode" not in font:
                found.add(str(font["/BaseFont"]).split("+")[-1])
    return found


def _without_encoding(source: Path, target: Path) -> None:
    """Copy a PDF with its Type1 fonts' /Encoding removed: their text then decodes by the fonts' own encoding."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(source))
    for page in writer.pages:
        for font in _fonts(page):
            if str(font["/Subtype"]) == "/Type1":
                font.pop("/Encoding", None)  # pages share font objects: the first pass removes it
    with target.open("wb") as out:
        writer.write(out)


@pytest.mark.parametrize("encoding", ["declared", "built-in"])
def test_cff_type1_fonts_extract_exactly_with_fonttools(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    path = CFF_TYPE1
    if encoding == "built-in":
        # Without fontTools pypdf cannot read a CFF font's own encoding and falls back to StandardEncoding:
        # measured, 8 characters of these 2 pages differ ("·" read as "•", "é" as "Ø", curly quotes and
        # the em dash as C1 control characters).
        path = tmp_path / "built-in.pdf"
        _without_encoding(CFF_TYPE1, path)
    assert _cff_type1_fonts(path) == {"Times-Roman", "Times-Italic"}
    refs = [pdfs.reference_text(pdfs.page_blocks(page)) for page in (1, 2)]
    with caplog.at_level("WARNING", logger="pypdf"):
        pages = extract_pages(path, 1, 2, ocr=no_ocr)  # type: ignore[arg-type]
    assert [normalise(p.text) for p in pages] == [normalise(ref) for ref in refs]
    assert not [r for r in caplog.records if "fontTools" in r.getMessage()]


def test_ocrmypdf_invalid_is_corrupt() -> None:
    # 44 bytes: a %PDF-1.3 header, one sentence and %%EOF; no object, no xref ("startxref not found").
    with pytest.raises(PermanentError) as caught:
        inspect_pdf(INVALID)
    assert caught.value.code == "corrupt_pdf"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.99])
def test_a_truncated_upload_is_corrupt(tmp_path: Path, keep: float) -> None:
    pdfs.make_truncated_pdf(tmp_path / "cut.pdf", keep=keep)
    for call in (
        lambda: inspect_pdf(tmp_path / "cut.pdf"),
        lambda: extract_pages(tmp_path / "cut.pdf", 1, 1),
    ):
        with pytest.raises(PermanentError) as caught:
            call()
        assert caught.value.code == "corrupt_pdf"


def test_a_jpeg_named_pdf_is_unsupported(tmp_path: Path) -> None:
    pdfs.make_jpeg_named_pdf(tmp_path / "photo.pdf")
    with pytest.raises(PermanentError) as caught:
        inspect_pdf(tmp_path / "photo.pdf")
    assert caught.value.code == "unsupported_media"
    assert "JPEG" in caught.value.reason


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "corrupt_pdf"),
        (b"Lecture notes, week 3\n" * 10, "unsupported_media"),
        (b"PK\x03\x04rest", "unsupported_media"),
    ],
)
def test_files_that_are_not_pdfs(tmp_path: Path, content: bytes, code: str) -> None:
    (tmp_path / "x.pdf").write_bytes(content)
    with pytest.raises(PermanentError) as caught:
        inspect_pdf(tmp_path / "x.pdf")
    assert caught.value.code == code


def test_a_pdf_without_pages_is_empty(tmp_path: Path) -> None:
    pdfs.make_zero_page_pdf(tmp_path / "none.pdf")
    with pytest.raises(PermanentError) as caught:
        inspect_pdf(tmp_path / "none.pdf")
    assert caught.value.code == "empty_pdf"


def test_a_damaged_page_is_empty_and_logged_the_rest_extracts(tmp_path: Path) -> None:
    refs = pdfs.make_corrupt_stream_pdf(tmp_path / "hurt.pdf", pages=3, broken=(2,))
    with capture_logs() as logs:
        pages = extract_pages(tmp_path / "hurt.pdf", 1, 3, ocr=None)
    assert pages[1] == PageText(2, "", "empty", None)
    assert [normalise(pages[i].text) for i in (0, 2)] == [normalise(refs[i]) for i in (0, 2)]
    failures = [e for e in logs if e["event"] == "pdf_page_text_failed"]
    assert [(e["page"], e["log_level"]) for e in failures] == [(2, "warning")]


def test_a_pdf_whose_every_page_fails_is_corrupt(tmp_path: Path) -> None:
    pdfs.make_corrupt_stream_pdf(tmp_path / "dead.pdf", pages=3, broken=(1, 2, 3))
    assert inspect_pdf(tmp_path / "dead.pdf").page_count == 3  # the structure is fine, the pages are not
    with pytest.raises(PermanentError) as caught:
        extract_pages(tmp_path / "dead.pdf", 1, 3)
    assert caught.value.code == "corrupt_pdf"


def _timed(path: Path, first: int, last: int) -> tuple[float, list[PageText]]:
    best, pages = float("inf"), []
    for _ in range(3):
        started = time.perf_counter()
        pages = extract_pages(path, first, last, ocr=None)
        best = min(best, time.perf_counter() - started)
    return best, pages


def test_the_last_range_of_a_long_book_costs_what_the_first_does(
    large: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, refs = large
    assert inspect_pdf(path).page_count == 1200
    extracted: list[int] = []
    original = pypdf.PageObject.extract_text

    def spy(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        extracted.append(id(self))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    def no_walk(self: pypdf.PdfReader, *args: object, **kwargs: object) -> None:
        raise AssertionError("the whole page tree was walked")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", spy)
    monkeypatch.setattr(pypdf.PdfReader, "_flatten", no_walk)
    first_seconds, first = _timed(path, 1, 25)
    last_seconds, last = _timed(path, 1176, 1200)
    print(f"pages 1-25: {first_seconds * 1000:.1f} ms, pages 1176-1200: {last_seconds * 1000:.1f} ms")
    assert len(extracted) == 6 * 25  # only the pages asked for are extracted
    assert [p.page for p in last] == list(range(1176, 1201))
    assert [normalise(p.text) for p in first + last] == [
        normalise(refs[i]) for i in [*range(25), *range(1175, 1200)]
    ]
    assert last_seconds < 2 * first_seconds + 0.05
    assert last_seconds < 1.0


def test_scanned_pages_go_to_ocr_and_text_pages_do_not(tmp_path: Path) -> None:
    refs = pdfs.make_mixed_pdf(tmp_path / "mixed.pdf", 6)
    ocr = RecordingOcr()
    pages = extract_pages(tmp_path / "mixed.pdf", 1, 6, ocr=ocr)
    kinds = [pdfs.mixed_kind(n) for n in range(1, 7)]
    assert [p.method for p in pages] == [
        {"text": "text", "figure": "text", "scan": "ocr", "blank": "empty"}[k] for k in kinds
    ]
    assert ocr.sizes == [(1700, 2200)] * kinds.count("scan")  # the full 200-dpi page image, once per scan
    for page, ref, kind in zip(pages, refs, kinds, strict=True):
        if kind == "scan":
            assert (page.text, page.confidence) == ("Recognised words from a scanned page.", 91.0)
        else:
            assert (normalise(page.text), page.confidence) == (normalise(ref), None)


def test_without_ocr_a_scanned_page_is_empty(tmp_path: Path) -> None:
    pdfs.make_scanned_pdf(tmp_path / "scan.pdf", 1)
    assert extract_pages(tmp_path / "scan.pdf", 1, 1, ocr=None) == [PageText(1, "", "empty", None)]


def test_min_text_chars_decides_when_a_page_with_an_image_is_scanned(tmp_path: Path) -> None:
    pdfs.make_mixed_pdf(tmp_path / "mixed.pdf", 3)  # page 3 has a chart and a full text layer
    letters = sum(c.isalpha() for c in extract_pages(tmp_path / "mixed.pdf", 3, 3, ocr=None)[0].text)
    assert letters > MIN_TEXT_CHARS
    ocr = RecordingOcr()
    [page] = extract_pages(tmp_path / "mixed.pdf", 3, 3, ocr=ocr, min_text_chars=letters + 1)
    assert page.method == "ocr" and ocr.sizes == [(900, 600)]
    assert page.text.endswith("Recognised words from a scanned page.")  # the text layer is kept in front


def test_clean_text() -> None:
    raw = "The ﬁrst law\x00 of thermo-\ndynamics\u00a0 is  simple.\r\nIts well-\nknown form: \u200bwell-known.\n\n\n\nF-\nscore th e\nthe end"
    assert clean_text(raw) == (
        "The first law of thermodynamics is simple.\nIts well-known form: well-known.\n\nF-score the\nthe end"
    )


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (
            "Features introduced in version 5.4 . . . . . . . . . . . . 23",
            "Features introduced in version 5.4 ... 23",
        ),
        ("Preface........................ix", "Preface ... ix"),
        ("Index \u00b7 \u00b7 \u00b7 \u00b7 \u00b7 301", "Index ... 301"),
        ("Wait... then go.", "Wait... then go."),  # an ellipsis stays as written
        ("1.2.3", "1.2.3"),
        ("x .... y", "x ... y"),
    ],
)
def test_dot_leaders_become_one_ellipsis(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_fonts_are_parsed_once_per_extraction_with_pypdfs_own_text(
    book: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.media import pdf

    path, refs = book
    parsed: list[int] = []
    original = pdf._pypdf_font_parse

    def counting(cls: type, font: DictionaryObject) -> object:
        parsed.append(id(font))
        return original(cls, font)

    monkeypatch.setattr(pdf, "_pypdf_font_parse", counting)
    pages = extract_pages(path, 1, len(refs), ocr=None)
    assert parsed and len(parsed) == len(set(parsed))  # each font dictionary once in the whole range
    with_cache = len(parsed)
    parsed.clear()
    # pypdf's own extraction outside extract_pages is untouched: every page parses its fonts again.
    reader = pypdf.PdfReader(path)
    own = [clean_text(page.extract_text(extraction_mode="plain")) for page in reader.pages]
    assert len(parsed) > with_cache
    assert [p.text for p in pages] == own
    # The cache is the installed parser (a pypdf that renamed it would leave the fonts parsed per page).
    from pypdf.generic import _font

    assert vars(_font.Font)["from_font_resource"].__func__ is pdf._font_once


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text() | st.sampled_from(["-\n", "\n", " ", "a", "e b\n", "ab-\ncd", "\u00ad\n"])).map(
        "".join
    )
)
def test_clean_text_is_idempotent_and_leaves_no_control_characters(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]|  |\n\n\n| \n|\n ", cleaned)


@pytest.fixture(scope="module")
def small_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("pdf") / "small.pdf"
    pdfs.make_text_pdf(path, 2)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_files_fail_cleanly_and_fast(small_pdf: bytes, tmp_path: Path, data: st.DataObject) -> None:
    damaged = bytearray(small_pdf)
    for _ in range(data.draw(st.integers(1, 12))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at : at + data.draw(st.integers(1, 64))] = data.draw(st.binary(min_size=0, max_size=64))
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    path = tmp_path / "damaged.pdf"
    path.write_bytes(bytes(damaged))
    started = time.perf_counter()
    try:
        info = inspect_pdf(path)
        pages = extract_pages(path, 1, info.page_count, ocr=None)
        assert [p.page for p in pages] == list(range(1, info.page_count + 1))
    except PermanentError as exc:
        assert exc.code in {"corrupt_pdf", "unsupported_media", "empty_pdf", "pdf_encrypted"}
    assert time.perf_counter() - started < 5.0


HOSTILE_OUTCOMES: dict[str, list[str] | str] = {
    "cycle": "corrupt_pdf",  # pypdf refuses a page tree that contains itself
    "huge_count": [
        pdfs.HOSTILE_TEXT
    ],  # a /Count of a billion over one page: the page is found, nothing sized by it
    "deep": "corrupt_pdf",  # 300 nested /Pages nodes: beyond pypdf's depth limit of 100
    "stream_bomb": ["", pdfs.HOSTILE_TEXT],  # 120 MB of inflated content stops at pypdf's 75 MB limit
    "image_bomb": [""],  # a 40-gigapixel image is never decoded
    "form_loop": [pdfs.HOSTILE_TEXT],
    "length_lie": "corrupt_pdf",  # the only page's stream declares a terabyte: that page fails, so the book does
}


@pytest.mark.parametrize("kind", pdfs.HOSTILE_KINDS)
def test_hostile_files_end_fast_and_bounded(tmp_path: Path, kind: pdfs.HostileKind) -> None:
    import tracemalloc

    path = tmp_path / f"{kind}.pdf"
    pdfs.make_hostile_pdf(path, kind)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        info = inspect_pdf(path, max_pages=5000)
        outcome: list[str] | str = [p.text for p in extract_pages(path, 1, info.page_count, ocr=no_ocr)]  # type: ignore[arg-type]
    except PermanentError as exc:
        outcome = exc.code
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{kind}: {seconds:.2f} s, peak {peak / 1e6:.0f} MB traced")
    assert outcome == HOSTILE_OUTCOMES[kind]
    assert seconds < 5.0
    assert peak < 200e6  # pypdf's 75 MB inflate limit, held about twice while it fails


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_lying_numbers_fail_cleanly_and_fast(small_pdf: bytes, tmp_path: Path, data: st.DataObject) -> None:
    numbers = list(re.finditer(rb"\d+", small_pdf))
    damaged = bytearray(small_pdf)
    for _ in range(data.draw(st.integers(1, 4))):
        match = numbers[data.draw(st.integers(0, len(numbers) - 1))]
        value = data.draw(st.sampled_from([0, 1, 2, 7, 255, 65535, 2**31, 10**12]))
        damaged[match.start() : match.end()] = str(value).encode().rjust(match.end() - match.start(), b"0")
    path = tmp_path / "lying.pdf"
    path.write_bytes(bytes(damaged))
    started = time.perf_counter()
    try:
        info = inspect_pdf(path)
        pages = extract_pages(path, 1, info.page_count, ocr=None)
        assert [p.page for p in pages] == list(range(1, info.page_count + 1))
    except PermanentError as exc:
        assert exc.code in {"corrupt_pdf", "empty_pdf", "pdf_encrypted"}
    assert time.perf_counter() - started < 5.0


def test_a_missing_decoder_is_not_mistaken_for_damage(
    book: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def needs_crypto(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        raise pypdf.errors.DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", needs_crypto)
    with pytest.raises(pypdf.errors.DependencyError):
        extract_pages(book[0], 1, 2, ocr=None)
