"""Benchmark of the token-aware chunker against naive 200-word chunks: `python -m shared.bench.chunking`.

The book is the Python documentation topics shipped with CPython (`pydoc_data.topics`, real technical
prose and code), cut into 500-word pages and cycled to 300 pages: deterministic and present everywhere.
PDFs given with --pdf (default: generated stand-ins of a two-column paper and of an 18-page summary,
from tests.media.pdfs) are chunked page by page as extracted.  Figures only: timings depend on the machine
and its load.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.bench import sample_pdfs
from shared.chunking import HfTokenCounter, Segment, chunk_segments

NAIVE_WORDS = 200
BOOK_PAGES = 300
PAGE_WORDS = 500


@dataclass(frozen=True)
class Report:
    """Figures for one corpus."""

    name: str
    pages: int
    words: int
    chunks: int
    seconds: float
    max_tokens: int
    mean_tokens: float
    naive_chunks: int
    naive_truncated: int
    naive_pieces_lost: int
    ours_truncated: int


def book_segments(pages: int = BOOK_PAGES, page_words: int = PAGE_WORDS) -> list[Segment]:
    """Return a deterministic ~150k-word book of pages built from CPython's documentation topics."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    # Paragraphs keep their blank lines so the chunker meets real paragraph and sentence boundaries.
    paragraphs = [p for key in sorted(topics) for p in topics[key].split("\n\n") if p.strip()]
    out: list[Segment] = []
    current: list[str] = []
    count = 0
    for paragraph in itertools.cycle(paragraphs):
        current.append(paragraph)
        count += len(paragraph.split())
        if count >= page_words:
            out.append(Segment("\n\n".join(current), page=len(out) + 1))
            if len(out) == pages:
                return out
            current, count = [], 0
    raise AssertionError("unreachable: itertools.cycle never ends")


def pdf_segments(path: Path) -> list[Segment]:
    """Return one segment per page of the PDF at `path`, as extracted by pypdf."""
    from pypdf import PdfReader

    reader = PdfReader(path)
    return [Segment(page.extract_text() or "", page=i + 1) for i, page in enumerate(reader.pages)]


def measure(name: str, segments: Sequence[Segment], counter: HfTokenCounter, runs: int = 3) -> Report:
    """Chunk `segments` `runs` times (best time kept) and compare with naive 200-word chunks."""
    timings = []
    chunks = []
    for _ in range(runs):
        started = time.perf_counter()
        chunks = chunk_segments(segments, counter)
        timings.append(time.perf_counter() - started)
    # Measured again from the chunk texts, not trusted from Chunk.token_count.
    ours = [len(offsets) for offsets in counter.encode_offsets_batch([c.text for c in chunks])]
    words = [w for s in segments for w in s.text.split()]
    naive_texts = [" ".join(words[i : i + NAIVE_WORDS]) for i in range(0, len(words), NAIVE_WORDS)]
    naive = [len(offsets) for offsets in counter.encode_offsets_batch(naive_texts)]
    limit = counter.max_tokens
    return Report(
        name=name,
        pages=len(segments),
        words=len(words),
        chunks=len(chunks),
        seconds=min(timings),
        max_tokens=max(ours, default=0),
        mean_tokens=statistics.fmean(ours) if ours else 0.0,
        naive_chunks=len(naive),
        naive_truncated=sum(n > limit for n in naive),
        naive_pieces_lost=sum(max(0, n - limit) for n in naive),
        ours_truncated=sum(n > limit for n in ours),
    )


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def print_report(report: Report, limit: int) -> None:
    """Print one corpus's figures."""
    print(f"== {report.name}")
    print(f"  pages                       {report.pages}")
    print(f"  words                       {report.words}")
    print(f"  chunks                      {report.chunks}")
    print(f"  chunking time (best of 3)   {report.seconds:.3f} s")
    print(f"  chunks/s                    {report.chunks / report.seconds:,.0f}")
    print(f"  words/s                     {report.words / report.seconds:,.0f}")
    print(f"  max tokens per chunk        {report.max_tokens} (model keeps {limit})")
    print(f"  mean tokens per chunk       {report.mean_tokens:.1f}")
    print(
        f"  naive {NAIVE_WORDS}-word chunks truncated {report.naive_truncated}/{report.naive_chunks}"
        f" = {_share(report.naive_truncated, report.naive_chunks)}"
        f" ({report.naive_pieces_lost} word pieces dropped)"
    )
    print(
        f"  our chunks truncated        {report.ours_truncated}/{report.chunks}"
        f" = {_share(report.ours_truncated, report.chunks)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pdf", type=Path, action="append", help="a PDF to chunk page by page (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    counter = HfTokenCounter()
    loaded = time.perf_counter() - started
    print(f"tokenizer loaded in {loaded:.3f} s; the model keeps {counter.max_tokens} content word pieces")
    print_report(measure("book: CPython documentation topics", book_segments(), counter), counter.max_tokens)

    try:
        import pypdf  # noqa: F401
    except ImportError:
        print("pypdf is not installed: PDFs skipped (pip install pypdf)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        pdfs: list[Path] = args.pdf or sample_pdfs(Path(tmp))
        for path in pdfs:
            print_report(measure(f"pdf: {path.name}", pdf_segments(path), counter), counter.max_tokens)


if __name__ == "__main__":
    main()
