"""Retrieval quality of Qdrant's dense, sparse (BM25) and hybrid search on books: `python -m shared.bench.retrieval`
(make bench-retrieval).

It starts an embedded stack of its own (every worker, in a temporary folder) and uploads, as the backend would,
- a generated 220-page textbook (tests.media.pdfs.make_text_pdf: made-up index terms, one per page, in prose
  that repeats across the book);
- gnuplot's 311-page manual, a real book (pdfTeX, from Debian's gnuplot-doc; --no-real leaves it out);
then builds a labelled query set from what the pipeline stored:
- known-item spans: 15 consecutive words cut from a chunk; the label is every chunk holding the span (a span in
  more than two chunks is boilerplate and left out);
- rare words: for a page, its three rarest words across the book (fewest pages; names, identifiers, terms) that
  the stored chunks of that page hold; the label is every page holding all three.
Each query is searched the way a student's search is (the student's class, 5 hits) in each mode: dense (the
embedding), sparse (BM25 computed by the Qdrant server), hybrid fused by RRF and hybrid fused by DBSF. Printed:
recall@1 and recall@5 per book, query kind and mode, the search latency p50 per mode, and the mode with the best
mean recall@1 over the books and kinds. Writes JSON (default var/bench/retrieval.json). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from shared.bench import own_stack, write_json
from shared.bench.corpus import real_pdf, run_pipeline
from shared.settings import Settings
from shared.vectors.qdrant import DBSF, RRF, QdrantStore
from shared.vectors.records import SearchMode

DEFAULT_JSON = Path("var/bench/retrieval.json")
GENERATED_PAGES = 220
SPAN_WORDS = 15
SPANS_PER_BOOK = 200
RARE_WORDS = 3
WORD = re.compile(r"[a-z][a-z0-9_]{2,}")
MODES: dict[str, tuple[SearchMode, models.FusionQuery]] = {
    "dense": ("dense", RRF),
    "sparse": ("sparse", RRF),
    "hybrid-rrf": ("hybrid", RRF),
    "hybrid-dbsf": ("hybrid", DBSF),
}


@dataclass(frozen=True)
class Chunk:
    """A stored chunk of a book, as the search returns it."""

    book: str
    index: int
    text: str
    page_start: int
    page_end: int


@dataclass
class Query:
    """One labelled query: a hit is right if it is one of the chunks, or lies on one of the pages, named."""

    kind: str
    book: str
    text: str
    chunks: set[int] = field(default_factory=set)
    pages: set[int] = field(default_factory=set)

    def matches(self, book: str, index: int, page_start: int, page_end: int) -> bool:
        """Whether a hit answers this query."""
        if book != self.book:
            return False
        if self.chunks:
            return index in self.chunks
        return any(page_start <= p <= page_end for p in self.pages)


def page_texts(path: Path) -> list[str]:
    """Each page's text (pypdf), for the words' page counts."""
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(path).pages]


def words_of(text: str) -> set[str]:
    """The distinct words of a text, lowercased (letters first; digits and underscores allowed)."""
    return set(WORD.findall(text.lower()))


def squash(text: str) -> str:
    """Whitespace collapsed, lowercased: how spans are compared."""
    return " ".join(text.split()).lower()


def span_queries(book: str, chunks: list[Chunk], rng: random.Random, count: int) -> list[Query]:
    """Known-item spans: SPAN_WORDS consecutive words of a random chunk; labelled by every chunk holding them."""
    squashed = [squash(c.text) for c in chunks]
    queries: list[Query] = []
    for chunk in rng.sample(chunks, len(chunks)):
        if len(queries) == count:
            break
        words = chunk.text.split()
        if len(words) < 2 * SPAN_WORDS:
            continue
        start = rng.randrange(len(words) - SPAN_WORDS)
        span = " ".join(words[start : start + SPAN_WORDS])
        holders = {c.index for c, text in zip(chunks, squashed, strict=True) if squash(span) in text}
        if 0 < len(holders) <= 2:
            queries.append(Query("span", book, span, chunks=holders))
    return queries


def rare_word_queries(book: str, pages: list[str], chunks: list[Chunk]) -> list[Query]:
    """For every page: its RARE_WORDS rarest words across the book (fewest pages, then fewest uses) that its stored
    chunks hold; labelled by every page holding all of them."""
    page_words = [words_of(text) for text in pages]
    pages_with: Counter[str] = Counter(w for words in page_words for w in words)
    uses: Counter[str] = Counter(w for text in pages for w in WORD.findall(text.lower()))
    stored: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks:
        for page in range(chunk.page_start, chunk.page_end + 1):
            stored[page] |= words_of(chunk.text)
    queries = []
    for number, words in enumerate(page_words, start=1):
        held = sorted(words & stored[number], key=lambda w: (pages_with[w], uses[w], w))
        if len(held) < RARE_WORDS:
            continue
        chosen = held[:RARE_WORDS]
        labels = {n for n, other in enumerate(page_words, start=1) if set(chosen) <= other}
        queries.append(Query("rare", book, " ".join(chosen), pages=labels))
    return queries


async def stored_chunks(cfg: Settings) -> tuple[dict[str, list[Chunk]], str, str]:
    """Every chunk in the stack's collection by book title, and the student and class that own them."""
    client = AsyncQdrantClient(url=cfg.qdrant_url)
    books: dict[str, list[Chunk]] = defaultdict(list)
    owner: tuple[str, str] = ("", "")
    offset: Any = None
    while True:
        page, offset = await client.scroll(cfg.qdrant_collection, limit=512, offset=offset, with_payload=True)
        for point in page:
            p = point.payload or {}
            owner = (str(p["user_id"]), str(p["class_id"]))
            books[str(p["title"])].append(
                Chunk(
                    str(p["title"]),
                    int(p["chunk_index"]),
                    str(p["text"]),
                    int(p.get("page_start") or 0),
                    int(p.get("page_end") or p.get("page_start") or 0),
                )
            )
        if offset is None:
            break
    await client.close()
    for chunks in books.values():
        chunks.sort(key=lambda c: c.index)
    return dict(books), *owner


async def evaluate(
    cfg: Settings, queries: list[Query], user_id: str, class_id: str
) -> tuple[dict[str, list[tuple[bool, bool]]], dict[str, float]]:
    """Per mode: (right at rank 1, right in the top 5) for each query; and the search latency p50 in ms."""
    from shared.embedder import SentenceEmbedder

    embedder = SentenceEmbedder.from_settings(cfg)
    vectors = embedder.embed_sync([q.text for q in queries])
    client = AsyncQdrantClient(url=cfg.qdrant_url, timeout=60)
    outcomes: dict[str, list[tuple[bool, bool]]] = {}
    latency: dict[str, float] = {}
    try:
        for name, (mode, fusion) in MODES.items():
            store = QdrantStore(
                client, collection=cfg.qdrant_collection, dimensions=cfg.embedding_dimensions, fusion=fusion
            )
            results, times = [], []
            for query, vector in zip(queries, vectors, strict=True):
                started = time.perf_counter()
                hits = await store.search(
                    vector.tolist(), query_text=query.text, mode=mode, user_id=user_id, class_id=class_id
                )
                times.append((time.perf_counter() - started) * 1000)
                right = [
                    query.matches(
                        str(h.metadata["title"]),
                        int(h.metadata["chunk_index"]),
                        int(h.metadata.get("page_start") or 0),
                        int(h.metadata.get("page_end") or h.metadata.get("page_start") or 0),
                    )
                    for h in hits
                ]
                results.append((bool(right[:1] and right[0]), any(right[:5])))
            outcomes[name] = results
            latency[name] = round(statistics.median(times), 2)
    finally:
        await client.close()
    return outcomes, latency


def table(
    queries: list[Query], outcomes: dict[str, list[tuple[bool, bool]]]
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """recall@1 and recall@5 by book, query kind and mode."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n, query in enumerate(queries):
        groups[(query.book, query.kind)].append(n)
        groups[("all", query.kind)].append(n)
    report: dict[str, dict[str, dict[str, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for (book, kind), members in sorted(groups.items()):
        for mode, results in outcomes.items():
            report[book][kind][mode] = {
                "queries": len(members),
                "recall_at_1": round(sum(results[n][0] for n in members) / len(members), 4),
                "recall_at_5": round(sum(results[n][1] for n in members) / len(members), 4),
            }
    return report


def main() -> None:
    """Ingest the books through the stack, build the queries, search in every mode; print and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-real", action="store_true", help="leave out the real manual (gnuplot-doc)")
    parser.add_argument("--pages", type=int, default=GENERATED_PAGES, help="pages of the generated book")
    parser.add_argument("--spans", type=int, default=SPANS_PER_BOOK, help="known-item spans per book")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    try:
        from tests.media import pdfs
    except ModuleNotFoundError as exc:
        raise SystemExit("run the benchmark from the root of a checkout (make bench-retrieval)") from exc
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible sample, not a secret
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-retrieval-") as tmp:
        folder = Path(tmp)
        generated = folder / "generated-textbook.pdf"
        pdfs.make_text_pdf(generated, pages=args.pages)
        books = [generated] + ([] if args.no_real else [real_pdf(Path("var/bench"))])
        texts = {path.stem: page_texts(path) for path in books}
        home = folder / "stack"
        with own_stack(home, search_api=False) as state:
            wall, per_source, _ = asyncio.run(run_pipeline(state, books, args.timeout))
            cfg = state.settings()
            chunks, user_id, class_id = asyncio.run(stored_chunks(cfg))
            queries: list[Query] = []
            for title, pages in texts.items():
                queries += span_queries(title, chunks[title], rng, args.spans)
                queries += rare_word_queries(title, pages, chunks[title])
            outcomes, latency = asyncio.run(evaluate(cfg, queries, user_id, class_id))
    report = table(queries, outcomes)
    cells = [(b, k) for b in report if b != "all" for k in report[b]]
    mean_at_1 = {
        mode: round(statistics.mean(report[b][k][mode]["recall_at_1"] for b, k in cells), 4) for mode in MODES
    }
    best = max(mean_at_1, key=lambda m: mean_at_1[m])
    described = [f"{t} ({len(p)} p., {per_source[t]['chunks']} chunks)" for t, p in texts.items()]
    print(f"books: {', '.join(described)}; ingested in {wall:.0f} s")
    print(f"{'book':<22} {'kind':<5} {'queries':>7}  " + "  ".join(f"{m + ' R@1/R@5':>22}" for m in MODES))
    for book, kinds in report.items():
        for kind, modes in kinds.items():
            n = next(iter(modes.values()))["queries"]
            cells_text = "  ".join(
                f"{modes[m]['recall_at_1']:>11.3f} / {modes[m]['recall_at_5']:<8.3f}" for m in MODES
            )
            print(f"{book[:22]:<22} {kind:<5} {n:>7}  {cells_text}")
    print("search p50 ms: " + ", ".join(f"{m} {latency[m]:.1f}" for m in MODES))
    print("mean recall@1 over books and kinds: " + ", ".join(f"{m} {v:.3f}" for m, v in mean_at_1.items()))
    print(f"best: {best}")
    examples = {
        kind: [{"book": q.book, "query": q.text} for q in queries if q.kind == kind][:5]
        for kind in ("span", "rare")
    }
    write_json(
        args.json,
        {
            "books": {t: {"pages": len(p), "chunks": per_source[t]["chunks"]} for t, p in texts.items()},
            "ingest_seconds": round(wall, 1),
            "recall": report,
            "search_p50_ms": latency,
            "mean_recall_at_1": mean_at_1,
            "best": best,
            "examples": examples,
        },
    )


if __name__ == "__main__":
    main()
