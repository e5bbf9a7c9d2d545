"""Scanned and mixed PDFs through the real Tesseract: per-page choice of text layer or OCR, and its accuracy.

Thresholds come from measurements on these generated 200-dpi greyscale JPEG scans (DejaVu Serif 11 pt,
grey-level noise, skews of 0, +0.4 and -0.6 degrees): character accuracy 0.994-0.996 and mean word
confidence 95-96 per page, about 3-4 s of OCR per page on one core.  The thresholds leave room for another
Tesseract build, not for a regression.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from PIL import Image

from shared.media.ocr import OcrResult, character_accuracy, ocr_image
from shared.media.pdf import extract_pages, inspect_pdf
from tests.media import pdfs

pytestmark = [pytest.mark.integration]

MIN_CHARACTER_ACCURACY = 0.97
MIN_CONFIDENCE = 85.0


def normalise(text: str) -> str:
    """Collapse whitespace: the only normalisation between a page's reference and a text-layer extraction."""
    return re.sub(r"\s+", " ", text).strip()


class CountingOcr:
    """The real OCR, counting the images it reads."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, image: Image.Image) -> OcrResult:
        self.sizes.append(image.size)
        return ocr_image(image)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("pdf") / "scanned.pdf"
    return path, pdfs.make_scanned_pdf(path, 3)


def test_scanned_pages_are_read_by_ocr_page_by_page(scanned: tuple[Path, list[str]]) -> None:
    path, refs = scanned
    assert inspect_pdf(path).page_count == 3
    started = time.perf_counter()
    pages = extract_pages(path, 1, 3)
    seconds = time.perf_counter() - started
    accuracies = [character_accuracy(ref, page.text) for page, ref in zip(pages, refs, strict=True)]
    confidences = [page.confidence or 0.0 for page in pages]
    print(
        f"OCR {seconds / 3:.2f} s/page, accuracy {[round(a, 4) for a in accuracies]}, confidence {confidences}"
    )
    assert [(p.page, p.method) for p in pages] == [(1, "ocr"), (2, "ocr"), (3, "ocr")]
    assert min(accuracies) >= MIN_CHARACTER_ACCURACY
    assert min(confidences) >= MIN_CONFIDENCE
    for page in pages:  # each page's own sentence is on that page, so a search finds "page N"
        assert pdfs.index_term(page.page) in page.text
        assert f"page {page.page} of the book" in normalise(page.text)


def test_a_later_range_of_a_scanned_book_is_read_alone(scanned: tuple[Path, list[str]]) -> None:
    path, refs = scanned
    ocr = CountingOcr()
    [page] = extract_pages(path, 3, 3, ocr=ocr)
    assert ocr.sizes == [(1700, 2200)]
    assert page.page == 3 and page.method == "ocr"
    assert character_accuracy(refs[2], page.text) >= MIN_CHARACTER_ACCURACY


def test_mixed_pdf_chooses_per_page(tmp_path: Path) -> None:
    refs = pdfs.make_mixed_pdf(tmp_path / "mixed.pdf", 6)
    ocr = CountingOcr()
    pages = extract_pages(tmp_path / "mixed.pdf", 1, 6, ocr=ocr)
    kinds = [pdfs.mixed_kind(n) for n in range(1, 7)]
    expected = {"text": "text", "figure": "text", "scan": "ocr", "blank": "empty"}
    assert [p.method for p in pages] == [expected[k] for k in kinds]
    assert len(ocr.sizes) == kinds.count(
        "scan"
    )  # the figure page's chart is not read: its text layer is enough
    exact = 0
    for page, ref, kind in zip(pages, refs, kinds, strict=True):
        if kind == "scan":
            assert character_accuracy(ref, page.text) >= MIN_CHARACTER_ACCURACY
            assert page.confidence is not None and page.confidence >= MIN_CONFIDENCE
        else:
            exact += normalise(page.text) == normalise(ref)
            assert page.confidence is None
    print(f"text-layer pages exact: {exact}/{len(kinds) - kinds.count('scan')}")
    assert exact == len(kinds) - kinds.count("scan")
    assert pages[kinds.index("blank")].text == ""


def test_a_sideways_scan_shown_upright_by_rotate_is_read(tmp_path: Path) -> None:
    refs = pdfs.make_scanned_pdf(tmp_path / "sideways.pdf", 1, rotate=90)
    ocr = CountingOcr()
    [page] = extract_pages(tmp_path / "sideways.pdf", 1, 1, ocr=ocr)
    assert ocr.sizes == [(1700, 2200)]  # stored 2200x1700; turned upright by the page's /Rotate before OCR
    assert page.method == "ocr"
    assert character_accuracy(refs[0], page.text) >= MIN_CHARACTER_ACCURACY
