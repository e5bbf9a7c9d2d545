"""Upload-to-searchable on a corpus of PDFs, through the real pipeline: `python -m shared.bench.corpus`
(make bench-corpus).

It starts an embedded stack of its own (every worker, in a temporary folder), uploads every PDF of the corpus at
once, as the backend would, and waits until each is searchable (status `completed`: every chunk in Qdrant and
Chroma). The default corpus:
- a real, not machine-generated book: gnuplot's 311-page manual (pdfTeX, from Debian's `gnuplot-doc` package,
  fetched with `apt-get download` into var/bench and cached; --no-real leaves it out);
- the project's generated stand-ins: a 100-page textbook, an 8-page two-column paper and an 18-page summary
  (tests.media.pdfs);
plus any PDFs given on the command line.

Printed: pages, chunks, the upload-to-searchable wall time, pages/s and chunks/s; chunks over the model's window
(counted again with the model's tokenizer from the stored text); per stage, its busy time (the sum of its
workers' handling times, from their logs) and the wait of its messages in their topic (p50 / max); and beside
each stage its bare engine on the same input in the same run, with the ratio: extraction (pypdf alone over the
same pages, one process) and embedding (the worker's kernel alone over the same chunk texts). Writes JSON
(default var/bench/corpus.json; `make bench-peer` reads it). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
from qdrant_client import AsyncQdrantClient

from shared.devstack import stack
from shared.settings import Settings

DEFAULT_JSON = Path("var/bench/corpus.json")
REAL_PDF_PACKAGE = "gnuplot-doc"
REAL_PDF_MEMBER = "usr/share/doc/gnuplot/gnuplot.pdf"


def real_pdf(cache: Path) -> Path:
    """gnuplot's manual from Debian's gnuplot-doc (downloaded once with apt-get, unpacked with dpkg-deb)."""
    target = cache / "gnuplot.pdf"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", REAL_PDF_PACKAGE], cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob("*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
        shutil.copyfile(Path(tmp) / "x" / REAL_PDF_MEMBER, target)
    return target


def generated_pdfs(folder: Path) -> list[Path]:
    """The project's generated stand-ins (tests.media.pdfs), written into folder."""
    from shared.bench import sample_pdfs

    try:
        from tests.media import pdfs
    except ModuleNotFoundError as exc:
        raise SystemExit("run the benchmark from the root of a checkout (make bench-corpus)") from exc
    book = folder / "generated-textbook.pdf"
    pdfs.make_text_pdf(book, pages=100)
    return [book, *sample_pdfs(folder)]


def page_count(path: Path) -> int:
    """Pages of a PDF."""
    from pypdf import PdfReader

    return len(PdfReader(path).pages)


def bare_extraction(paths: list[Path]) -> float:
    """Seconds pypdf alone takes to extract every page's text of every PDF, one process."""
    from pypdf import PdfReader

    started = time.perf_counter()
    for path in paths:
        for page in PdfReader(path).pages:
            page.extract_text()
    return time.perf_counter() - started


def bare_embedding(settings: Settings, texts: list[str]) -> tuple[float, str]:
    """Seconds the worker's embedding kernel alone takes on these texts, and its name: all of them in one call,
    which the kernel cuts into its batches (and runs side by side on its streams), as the worker's calls do."""
    from shared.embedder import SentenceEmbedder

    embedder = SentenceEmbedder.from_settings(settings)
    embedder.embed_sync(texts[:64])  # warm-up
    started = time.perf_counter()
    embedder.embed_sync(texts)
    return time.perf_counter() - started, f"{type(embedder).__name__} {embedder.backend}"


def process_cpu_seconds(state: stack.StackState) -> dict[str, float]:
    """CPU seconds (user + system) each process of the stack has used so far, its children included
    (PostgreSQL's backends); per worker service (replicas summed) and per server."""
    import psutil

    pids: dict[str, list[int]] = defaultdict(list)
    for worker in state.workers:
        pids[worker.service].append(worker.pid)
    for name in ("postgres", "broker", "chroma", "qdrant"):
        pid = getattr(state, name, {}).get("pid")
        if pid:
            pids[f"server:{name}"].append(int(pid))
    used: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                process = psutil.Process(pid)
                for each in (process, *process.children(recursive=True)):
                    times = each.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        used[name] = total
    return used


def bare_cpu(call: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_before, started = cpu(), time.perf_counter()
    call()
    return time.perf_counter() - started, cpu() - cpu_before


def stage_log_figures(logs: Path) -> dict[str, dict[str, Any]]:
    """Per worker: busy seconds (sum of handling times), messages, and topic wait p50/max, from its JSON logs."""
    busy: dict[str, float] = defaultdict(float)
    waits: dict[str, list[float]] = defaultdict(list)
    handled: dict[str, int] = defaultdict(int)
    for path in sorted(logs.glob("*.log")):
        service = path.stem.rsplit("-", 1)[0]
        for line in path.read_text(errors="replace").splitlines():
            if '"busy_ms"' not in line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("event") not in ("event_processed", "batch_processed"):
                continue
            busy[service] += float(entry["busy_ms"]) / 1000
            handled[service] += int(entry.get("events", 1))
            if entry.get("waited_ms") is not None:
                waits[service].append(float(entry["waited_ms"]) / 1000)
    return {
        service: {
            "busy_seconds": round(busy[service], 2),
            "messages": handled[service],
            "wait_p50_seconds": round(statistics.median(waits[service]), 2) if waits[service] else None,
            "wait_max_seconds": round(max(waits[service]), 2) if waits[service] else None,
        }
        for service in busy
    }


async def run_pipeline(
    state: stack.StackState, paths: list[Path], wait_seconds: float
) -> tuple[float, dict[str, Any], list[str]]:
    """Upload every PDF at once; wait until all are searchable. Returns (wall seconds, per-source rows, texts)."""
    from shared.broker import make_broker, publish
    from shared.db import owners
    from shared.events.models import SourceUploaded

    cfg = state.settings()
    pool = await asyncpg.create_pool(cfg.database_dsn(), min_size=1, max_size=2)
    user, klass = uuid.uuid4(), uuid.uuid4()
    await owners.ensure_user(pool, user_id=user)
    await owners.ensure_class(pool, class_id=klass, user_id=user)
    uploads = Path(cfg.storage_root) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    events = []
    for path in paths:
        target = uploads / f"{uuid.uuid4().hex[:8]}-{path.name}"
        shutil.copyfile(path, target)
        event_id = uuid.uuid4()
        events.append(
            SourceUploaded(
                event_id=event_id,
                correlation_id=event_id,
                producer="bench",
                kind="textbook",
                user_id=user,
                class_id=klass,
                title=path.stem,
                storage_url=target.as_uri(),
            )
        )
    broker = make_broker(cfg, service="bench")
    started = time.perf_counter()
    async with broker:
        for event in events:
            await publish(broker, event)
    ids = [e.source_id for e in events]
    deadline = time.monotonic() + wait_seconds
    while True:
        rows = await pool.fetch(
            "SELECT source_id, status, error_code, chunk_count FROM ingest_jobs WHERE source_id = ANY($1::uuid[])",
            ids,
        )
        done = [r for r in rows if r["status"] in ("completed", "failed")]
        if len(done) == len(ids):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"not searchable after {wait_seconds:.0f} s: {[dict(r) for r in rows]}")
        await asyncio.sleep(0.1)
    wall = time.perf_counter() - started
    failed = [dict(r) for r in rows if r["status"] != "completed"]
    if failed:
        raise SystemExit(f"sources failed: {failed}")
    stages = await pool.fetch(
        "SELECT source_id, stage, started_at, finished_at FROM ingest_stages WHERE source_id = ANY($1::uuid[])",
        ids,
    )
    await pool.close()
    client = AsyncQdrantClient(url=cfg.qdrant_url)
    texts: list[str] = []
    for source_id in ids:
        offset: Any = None
        while True:
            from qdrant_client import models

            page, offset = await client.scroll(
                cfg.qdrant_collection,
                scroll_filter=models.Filter(
                    must=[
                        models.FieldCondition(key="source_id", match=models.MatchValue(value=str(source_id)))
                    ]
                ),
                limit=512,
                offset=offset,
                with_payload=["text"],
            )
            texts.extend(str((p.payload or {}).get("text", "")) for p in page)
            if offset is None:
                break
    await client.close()
    per_source = {
        str(e.title): {
            "chunks": next(int(r["chunk_count"]) for r in rows if r["source_id"] == e.source_id),
            "stages": {
                s["stage"]: round((s["finished_at"] - s["started_at"]).total_seconds(), 2)
                for s in stages
                if s["source_id"] == e.source_id and s["started_at"] and s["finished_at"]
            },
        }
        for e in events
    }
    return wall, per_source, texts


def over_window(texts: list[str]) -> tuple[int, int]:
    """Chunks whose word pieces (with the special tokens) exceed the model's window, and that window."""
    from tokenizers import Tokenizer

    from shared.embedder import default_model_path

    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    window = 256
    return sum(len(tokenizer.encode(t).ids) > window for t in texts), window


def main() -> None:
    """Run the corpus through the stack, then the bare engines; print and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pdfs", nargs="*", type=Path, help="more PDFs to add to the corpus")
    parser.add_argument("--no-real", action="store_true", help="leave out the real manual (gnuplot-doc)")
    parser.add_argument("--replicas", type=int, default=1, help="processes per worker")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-corpus-") as tmp:
        folder = Path(tmp)
        corpus = ([] if args.no_real else [real_pdf(Path("var/bench"))]) + generated_pdfs(folder) + args.pdfs
        pages = {p.name: page_count(p) for p in corpus}
        home = folder / "stack"
        saved = dict(os.environ)
        try:
            state = stack.up(home, replicas=args.replicas, search_api=False)
            cpu_before = process_cpu_seconds(state)
            wall, per_source, texts = asyncio.run(run_pipeline(state, corpus, args.timeout))
            cpu_after = process_cpu_seconds(state)
            figures = stage_log_figures(home / "logs")
            cfg = state.settings()
        finally:
            stack.down(home, purge=True)
            os.environ.clear()
            os.environ.update(saved)
        cpu_used = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in sorted(cpu_after)}
        extraction_bare, extraction_bare_cpu = bare_cpu(lambda: bare_extraction(corpus))
        kernel_box: list[str] = []
        embedding_bare, embedding_bare_cpu = bare_cpu(
            lambda: kernel_box.append(bare_embedding(cfg, texts)[1])
        )
        kernel = kernel_box[0]
        kept = []  # the peer reads the same files after this folder is gone: keep copies in var/bench/corpus
        keep = args.json.parent / "corpus"
        keep.mkdir(parents=True, exist_ok=True)
        for path in corpus:
            if path.resolve().parent != keep.resolve():
                shutil.copyfile(path, keep / path.name)
            kept.append(keep / path.name)
    total_pages, chunks = sum(pages.values()), len(texts)
    over, window = over_window(texts)
    chunking_busy = figures.get("chunking", {}).get("busy_seconds") or float("nan")
    embedding_busy = figures.get("embedding", {}).get("busy_seconds") or float("nan")
    report = {
        "corpus": pages,
        "corpus_paths": [str(p.resolve()) for p in kept],
        "pages": total_pages,
        "chunks": chunks,
        "chunks_over_window": over,
        "wall_seconds": round(wall, 2),
        "pages_per_second": round(total_pages / wall, 2),
        "chunks_per_second": round(chunks / wall, 2),
        "replicas": args.replicas,
        "stages": figures,
        "per_source": per_source,
        "bare": {
            "extraction_pypdf_seconds": round(extraction_bare, 2),
            "embedding_kernel_seconds": round(embedding_bare, 2),
            "embedding_kernel": kernel,
        },
        "ratios": {
            "extraction_vs_pypdf": round(extraction_bare / chunking_busy, 3),
            "embedding_vs_kernel": round(embedding_bare / embedding_busy, 3),
        },
        "cpu_seconds": {
            "processes": cpu_used,
            "total": round(sum(cpu_used.values()), 2),
            "bare_extraction": round(extraction_bare_cpu, 2),
            "bare_embedding": round(embedding_bare_cpu, 2),
            "extraction_vs_pypdf": round(extraction_bare_cpu / cpu_used.get("chunking", float("nan")), 3),
            "embedding_vs_kernel": round(embedding_bare_cpu / cpu_used.get("embedding", float("nan")), 3),
        },
    }
    print(f"corpus: {', '.join(f'{n} ({p} p.)' for n, p in pages.items())}")
    print(
        f"upload-to-searchable: {wall:.1f} s for {total_pages} pages and {chunks} chunks "
        f"({total_pages / wall:.1f} pages/s, {chunks / wall:.1f} chunks/s); chunks over the {window}-piece window: {over}"
    )
    print(f"{'stage':<14} {'busy s':>8} {'messages':>8} {'wait p50 s':>10} {'wait max s':>10}")
    for service, f in sorted(figures.items()):
        print(
            f"{service:<14} {f['busy_seconds']:>8.1f} {f['messages']:>8} {f['wait_p50_seconds'] or 0:>10.2f} "
            f"{f['wait_max_seconds'] or 0:>10.2f}"
        )
    print(
        f"extraction: ours {chunking_busy:.1f} s busy vs pypdf alone {extraction_bare:.1f} s on the same pages: "
        f"{report['ratios']['extraction_vs_pypdf']:.2f}x"
    )
    print(
        f"embedding: ours {embedding_busy:.1f} s busy vs the kernel alone ({kernel}) {embedding_bare:.1f} s on the "
        f"same {chunks} chunks: {report['ratios']['embedding_vs_kernel']:.2f}x"
    )
    cpu = report["cpu_seconds"]
    print(
        f"CPU seconds during the run ({cpu['total']:.1f} on 2 cores' {2 * wall:.1f}): "
        + ", ".join(f"{name} {used:.1f}" for name, used in cpu["processes"].items())
    )
    print(
        f"CPU of a stage's process vs its engine alone: extraction {cpu['extraction_vs_pypdf']:.2f}x "
        f"(pypdf {cpu['bare_extraction']:.1f} s), embedding {cpu['embedding_vs_kernel']:.2f}x "
        f"(kernel {cpu['bare_embedding']:.1f} s)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
