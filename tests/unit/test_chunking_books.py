"""The chunking worker's books: a book stays open between its ranges, and only while it is the same file."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.chunking.adapters import PdfBooks
from shared.media.pdf import extract_pages
from shared.storage import LocalStorage
from tests.media import pdfs


@pytest.fixture
def library(tmp_path: Path) -> tuple[PdfBooks, str, Path]:
    path = tmp_path / "book.pdf"
    pdfs.make_text_pdf(path, 9)
    storage = LocalStorage(tmp_path)
    return PdfBooks(storage, max_pages=100), storage.url_for("book.pdf"), path


def test_ranges_of_one_book_share_one_open_file_and_give_the_pages_alone(
    library: tuple[PdfBooks, str, Path],
) -> None:
    books, url, path = library
    first = asyncio.run(books.extract(url, first_page=1, last_page=4))
    kept = books._open
    assert kept is not None and kept.path == path
    second = asyncio.run(books.extract(url, first_page=5, last_page=8))
    assert books._open is kept  # not opened again
    last = asyncio.run(books.extract(url, first_page=9, last_page=9))
    assert books._open is None and kept._stream.closed  # the last range closes it
    alone = [p for p in extract_pages(path, 1, 9, ocr=None) if p.text.strip()]
    assert [s.text for s in first + second + last] == [p.text for p in alone]
    assert [s.page for s in first + second + last] == list(range(1, 10))


def test_a_replaced_file_is_opened_again(library: tuple[PdfBooks, str, Path], tmp_path: Path) -> None:
    books, url, path = library
    asyncio.run(books.extract(url, first_page=1, last_page=2))
    kept = books._open
    assert kept is not None
    other = tmp_path / "other.pdf"
    pdfs.make_text_pdf(other, 3)
    shutil.copyfile(other, path)  # the same name, other bytes (a re-upload written in place)
    pages = asyncio.run(books.extract(url, first_page=1, last_page=2))
    assert kept._stream.closed and books._open is not kept
    assert [s.text for s in pages] == [p.text for p in extract_pages(path, 1, 2, ocr=None)]


def test_a_failed_range_does_not_keep_the_book(library: tuple[PdfBooks, str, Path]) -> None:
    books, url, _path = library
    with pytest.raises(ValueError, match="asked of a 9-page PDF"):
        asyncio.run(books.extract(url, first_page=8, last_page=12))
    assert books._open is None
