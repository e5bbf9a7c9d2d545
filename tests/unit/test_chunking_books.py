"""The chunking worker's books: a book stays open from its plan to its last range, only while it is the same
file, a few books at a time, and is never closed under an extraction using it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.chunking import adapters
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


def test_a_books_plan_and_ranges_share_one_open_file_and_give_the_pages_alone(
    library: tuple[PdfBooks, str, Path],
) -> None:
    books, url, path = library
    assert asyncio.run(books.inspect(url)).page_count == 9
    kept = books._open[path].book
    first = asyncio.run(books.extract(url, first_page=1, last_page=4))
    second = asyncio.run(books.extract(url, first_page=5, last_page=8))
    assert books._open[path].book is kept and books._open[path].users == 0  # not opened again
    last = asyncio.run(books.extract(url, first_page=9, last_page=9))
    assert path not in books._open and kept._stream.closed  # the last range closes it
    alone = [p for p in extract_pages(path, 1, 9, ocr=None) if p.text.strip()]
    assert [s.text for s in first + second + last] == [p.text for p in alone]
    assert [s.page for s in first + second + last] == list(range(1, 10))


def test_a_replaced_file_is_opened_again(library: tuple[PdfBooks, str, Path], tmp_path: Path) -> None:
    books, url, path = library
    asyncio.run(books.extract(url, first_page=1, last_page=2))
    kept = books._open[path].book
    other = tmp_path / "other.pdf"
    pdfs.make_text_pdf(other, 3)
    shutil.copyfile(other, path)  # the same name, other bytes (a re-upload written in place)
    pages = asyncio.run(books.extract(url, first_page=1, last_page=2))
    assert kept._stream.closed and books._open[path].book is not kept
    assert [s.text for s in pages] == [p.text for p in extract_pages(path, 1, 2, ocr=None)]


def test_a_failed_range_or_plan_does_not_keep_the_book(
    library: tuple[PdfBooks, str, Path], tmp_path: Path
) -> None:
    books, url, path = library
    with pytest.raises(ValueError, match="asked of a 9-page PDF"):
        asyncio.run(books.extract(url, first_page=8, last_page=12))
    assert path not in books._open
    small = PdfBooks(LocalStorage(tmp_path), max_pages=5)
    with pytest.raises(Exception, match="more than 5"):
        asyncio.run(small.inspect(url))
    assert not small._open


def test_only_a_few_books_stay_open_and_one_in_use_is_closed_after_its_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters, "KEEP_OPEN_BOOKS", 2)
    storage = LocalStorage(tmp_path)
    books = PdfBooks(storage, max_pages=100)
    for name in ("a", "b", "c"):
        pdfs.make_text_pdf(tmp_path / f"{name}.pdf", 3)
    held_a = books._book(tmp_path / "a.pdf")  # an extraction of a is under way
    asyncio.run(books.extract(storage.url_for("b.pdf"), first_page=1, last_page=1))
    asyncio.run(books.extract(storage.url_for("c.pdf"), first_page=1, last_page=1))
    assert list(books._open) == [tmp_path / "b.pdf", tmp_path / "c.pdf"]  # a let go, the least recent
    assert not held_a.book._stream.closed  # but not closed under its extraction
    assert [p.page for p in held_a.book.extract(1, 3, ocr=None)] == [1, 2, 3]
    books._release(held_a, done=False)
    assert held_a.book._stream.closed


def test_kept_books_are_bounded_in_bytes_and_a_large_one_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    for name, pages in (("a", 3), ("b", 3), ("big", 12)):
        pdfs.make_text_pdf(tmp_path / f"{name}.pdf", pages)
    sizes = {name: (tmp_path / f"{name}.pdf").stat().st_size for name in ("a", "b", "big")}
    monkeypatch.setattr(adapters, "KEEP_OPEN_MAX_BYTES", sizes["big"] - 1)
    monkeypatch.setattr(adapters, "KEEP_OPEN_TOTAL_BYTES", sizes["a"] + sizes["b"] - 1)
    books = PdfBooks(storage, max_pages=100)
    asyncio.run(books.extract(storage.url_for("a.pdf"), first_page=1, last_page=1))
    asyncio.run(books.extract(storage.url_for("b.pdf"), first_page=1, last_page=1))
    assert list(books._open) == [tmp_path / "b.pdf"]  # both together are over the total: a let go
    extracted = asyncio.run(books.extract(storage.url_for("big.pdf"), first_page=1, last_page=2))
    assert [segment.page for segment in extracted] == [1, 2] and tmp_path / "big.pdf" not in books._open
