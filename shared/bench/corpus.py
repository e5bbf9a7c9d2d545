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

Then, on the same stack (--no-alone skips it), each stage alone on the machine, fed by the real pipeline: the
embedding and indexing workers are stopped and the corpus is uploaded again (new sources); the chunking worker
(PDF extraction) runs alone until every source's chunking stage has finished; then the embedding worker is started
again and drains that backlog alone; then indexing, until all are searchable. Reuse of identical uploads is off in
the bench's stack (LMGPA_REUSE_IDENTICAL_UPLOADS=false for its workers): otherwise this second upload of the same
files would be copied, not computed. On two cores the first run's stages share the cores (chunking and embedding
work at the same time), so its busy times measure that contention as much as a stage's own cost; alone, they do
not.

Printed, for the concurrent run: pages, chunks, the upload-to-searchable wall time, pages/s and chunks/s; chunks
over the model's window (counted again with the model's tokenizer from the stored text); per stage, its busy time
(the sum of its workers' handling times, from their logs) and the wait of its messages in their topic (p50 / max);
beside each stage its bare engine on the same input, with the ratio: extraction (pypdf alone over the same pages,
one process) and embedding (the worker's kernel alone over the same chunk texts); the CPU seconds of every process
of the stack, and of a stage's process against its engine's. For each stage alone: its busy, process CPU and wall
seconds in its own window (extraction: from publishing to the last chunking finished; embedding: from its first
batch to the last embedding finished; CPU from its start, after its model loaded), beside the same engines (the
kernel on this phase's chunk texts; their count and whether they are the first run's is printed), the ratios
engine/stage of busy, CPU and wall time (issue 10 asks for at least 0.9), and how the embedding worker drained its
backlog (batches, messages per batch, idle time between batches, and how much of its busy time the model's calls
took, from the worker's /metrics). The bare engines run last, after the stack is stopped, so nothing else of the
bench runs beside them (their figures leave out loading the model and its warm-up, as a worker's do); the same
engines also run once beside the stack left idle after the alone phase, whose servers and idle workers load the
machine in a stage's window too (the broker answers every consumer's polls), and the alone ratios are printed
against those as well: the stage's own overhead under the same background load. Every window
also prints the CPU seconds that processes outside the bench and its stack used meanwhile (the machine's other
users): a figure measured beside a large one is unfair; run it again. Writes JSON (default var/bench/corpus.json,
the alone phase under "alone"; `make bench-peer` reads it). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from qdrant_client import AsyncQdrantClient

from shared.bench import NO_REUSE, own_stack, write_json
from shared.db import jobs
from shared.devstack import stack
from shared.events.models import SourceKind, SourceUploaded
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


def own_cpu_seconds() -> float:
    """CPU seconds (user + system, every thread) this process has used so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) this process's ended and waited-for children have used so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_extraction(paths: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds pypdf alone takes to extract every page's text of every PDF, one process."""
    from pypdf import PdfReader

    cpu, started = own_cpu_seconds(), time.perf_counter()
    for path in paths:
        for page in PdfReader(path).pages:
            page.extract_text()
    return time.perf_counter() - started, own_cpu_seconds() - cpu


def bare_embedding(settings: Settings, texts: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds the worker's embedding kernel alone takes on these texts, and its name: all of them in
    one call, which the kernel cuts into its batches (and runs side by side on its streams), as the worker's calls
    do. Loading the model and the warm-up are not counted (nor are they in a worker's figures)."""
    from shared.embedder import SentenceEmbedder

    embedder = SentenceEmbedder.from_settings(settings)
    embedder.embed_sync(texts[:64])  # warm-up
    cpu, started = own_cpu_seconds(), time.perf_counter()
    embedder.embed_sync(texts)
    wall = time.perf_counter() - started
    return wall, own_cpu_seconds() - cpu, f"{type(embedder).__name__} {embedder.backend}"


def process_cpu_seconds(state: stack.StackState, *, waited_children: bool = False) -> dict[str, float]:
    """CPU seconds (user + system) each process of the stack has used so far, its children included
    (PostgreSQL's backends); per worker service (replicas summed) and per server. With waited_children, also
    the children that already ended and were waited for (the OCR worker's Tesseract runs): a running
    process's children list no longer holds them."""
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
                    if waited_children:
                        total += times.children_user + times.children_system
            except psutil.NoSuchProcess:
                continue
        used[name] = total
    return used


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far: by each process of the stack (see `process_cpu_seconds`), by this bench's own
    process, and by the whole machine (every core's busy time since boot)."""

    processes: dict[str, float]
    bench: float
    machine: float


def cpu_mark(state: stack.StackState | None = None, *, waited_children: bool = False) -> CpuMark:
    """The CPU counters now (without a stack: this process and the machine only). With waited_children, every
    process's ended and waited-for children count as its own (the bench's too: Tesseract run by the bench)."""
    import psutil

    times = psutil.cpu_times()
    return CpuMark(
        processes=process_cpu_seconds(state, waited_children=waited_children) if state is not None else {},
        bench=own_cpu_seconds() + (children_cpu_seconds() if waited_children else 0.0),
        machine=times.user + times.nice + times.system + times.irq + times.softirq + times.steal,
    )


def other_cpu(before: CpuMark, after: CpuMark) -> float:
    """CPU seconds processes outside this bench and its stack used between two marks: the machine's other users,
    whose load makes a figure of that window unfair (the machine's busy time less the stack's and the bench's)."""
    ours = (
        after.bench
        - before.bench
        + sum(max(0.0, used - before.processes.get(name, 0.0)) for name, used in after.processes.items())
    )
    return round(max(0.0, after.machine - before.machine - ours), 2)


PROCESSED_EVENTS = ("event_processed", "batch_processed")
"""The log events of a handled message or batch; each carries busy_ms (its handling time)."""


def handled_entries(text: str) -> list[dict[str, Any]]:
    """The handled-message lines (event_processed / batch_processed, with busy_ms) of a worker's JSON log text."""
    entries = []
    for line in text.splitlines():
        if '"busy_ms"' not in line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") in PROCESSED_EVENTS:
            entries.append(entry)
    return entries


def log_offsets(logs: Path) -> dict[str, int]:
    """Each worker log's size now, by file name: where the lines of what happens next begin."""
    return {path.name: path.stat().st_size for path in logs.glob("*.log")}


def worker_entries(logs: Path, since: dict[str, int] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per worker service (replicas together): its handled-message lines, each log read from the byte offset
    ``since`` gives it (a phase's own lines; a file not in ``since`` is read whole)."""
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(logs.glob("*.log")):
        service = path.stem.rsplit("-", 1)[0]
        with path.open("rb") as log:
            log.seek((since or {}).get(path.name, 0))
            entries[service].extend(handled_entries(log.read().decode(errors="replace")))
    return entries


def handling_figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Busy seconds (sum of handling times), messages, and topic wait p50/max of one worker's handled lines."""
    waits = [float(e["waited_ms"]) / 1000 for e in entries if e.get("waited_ms") is not None]
    return {
        "busy_seconds": round(sum(float(e["busy_ms"]) for e in entries) / 1000, 2),
        "messages": sum(int(e.get("events", 1)) for e in entries),
        "wait_p50_seconds": round(statistics.median(waits), 2) if waits else None,
        "wait_max_seconds": round(max(waits), 2) if waits else None,
    }


def handling_timeline(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """When a worker's handlings ran, from their log lines (each logged at its end, busy_ms long): the first
    start, the last end, and the idle time between them (gaps where no handling ran; overlapping ones merged)."""
    spans = sorted(
        (end - timedelta(milliseconds=float(e["busy_ms"])), end)
        for e in entries
        for end in [datetime.fromisoformat(str(e["timestamp"]))]
    )
    if not spans:
        return {"first_start": None, "last_end": None, "idle_seconds": 0.0, "longest_gap_seconds": 0.0}
    gaps: list[float] = []
    reached = spans[0][1]
    for start, end in spans[1:]:
        if start > reached:
            gaps.append((start - reached).total_seconds())
        reached = max(reached, end)
    return {
        "first_start": spans[0][0],
        "last_end": reached,
        "idle_seconds": round(sum(gaps), 2),
        "longest_gap_seconds": round(max(gaps, default=0.0), 2),
    }


def stage_log_figures(logs: Path, since: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Per worker: busy seconds (sum of handling times), messages, and topic wait p50/max, from its JSON logs
    (from the offsets ``since`` gives, see `worker_entries`)."""
    return {
        service: handling_figures(entries)
        for service, entries in worker_entries(logs, since).items()
        if entries
    }


async def publish_corpus(
    cfg: Settings, pool: asyncpg.Pool, paths: list[Path], *, kind: SourceKind = "textbook"
) -> tuple[list[SourceUploaded], float, datetime]:
    """Upload every file at once as new sources of one kind (textbooks unless told) of a new student and class,
    as the backend would (each file copied into the stack's uploads folder, one SourceUploaded each).
    Returns the events and when publishing began (time.perf_counter() and UTC, taken before the broker's
    connection, as every figure of this bench counts)."""
    from shared.broker import make_broker, publish
    from shared.db import owners

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
                kind=kind,
                user_id=user,
                class_id=klass,
                title=path.stem,
                storage_url=target.as_uri(),
            )
        )
    broker = make_broker(cfg, service="bench")
    started, published_at = time.perf_counter(), datetime.now(UTC)
    async with broker:
        for event in events:
            await publish(broker, event)
    return events, started, published_at


async def source_jobs(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[jobs.JobRow]:
    """These sources' jobs with their stages (shared.db.jobs)."""
    return await jobs.list_jobs(pool, source_ids=ids, limit=len(ids))


async def wait_searchable(pool: asyncpg.Pool, ids: list[uuid.UUID], deadline: float) -> list[jobs.JobRow]:
    """Wait until every source is completed (searchable) and return their jobs; exit if one failed or time ran
    out (deadline: time.monotonic())."""
    while True:
        rows = await source_jobs(pool, ids)
        done = [r for r in rows if r.status in ("completed", "failed")]
        if len(done) == len(ids):
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"not searchable in time: {[(str(r.source_id), r.status, r.stage) for r in rows]}"
            )
        await asyncio.sleep(0.1)
    failed = [(str(r.source_id), r.error_code) for r in rows if r.status != "completed"]
    if failed:
        raise SystemExit(f"sources failed: {failed}")
    return rows


async def wait_stage(pool: asyncpg.Pool, ids: list[uuid.UUID], stage: str, deadline: float) -> datetime:
    """Wait until every source's stage has finished (ingest_stages.finished_at set); returns the last finish.
    Exits if a source failed, skipped the stage (an identical upload reused: its next stage is indexing), or
    time ran out (deadline: time.monotonic())."""
    while True:
        rows = await source_jobs(pool, ids)
        failed = [(str(r.source_id), r.error_code) for r in rows if r.status == "failed"]
        if failed:
            raise SystemExit(f"sources failed: {failed}")
        stages = {r.source_id: {s.stage: s.finished_at for s in r.stages} for r in rows}
        skipped = [str(s) for s in ids if stage not in stages.get(s, {}) and "indexing" in stages.get(s, {})]
        if skipped:
            raise SystemExit(f"sources {skipped} skipped the {stage} stage (reused identical uploads?)")
        finished = [stages.get(s, {}).get(stage) for s in ids]
        if all(f is not None for f in finished):
            return max(f for f in finished if f is not None)
        if time.monotonic() > deadline:
            raise SystemExit(f"the {stage} stage did not finish in time: {stages}")
        await asyncio.sleep(0.1)


async def chunk_texts(cfg: Settings, ids: list[uuid.UUID]) -> list[str]:
    """The stored text of every chunk of these sources, from Qdrant."""
    from qdrant_client import models

    client = AsyncQdrantClient(url=cfg.qdrant_url)
    texts: list[str] = []
    for source_id in ids:
        offset: Any = None
        while True:
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
    return texts


async def run_pipeline(
    state: stack.StackState, paths: list[Path], wait_seconds: float
) -> tuple[float, dict[str, Any], list[str]]:
    """Upload every PDF at once; wait until all are searchable. Returns (wall seconds, per-source rows, texts)."""
    cfg = state.settings()
    pool = await asyncpg.create_pool(cfg.database_dsn(), min_size=1, max_size=2)
    events, started, _ = await publish_corpus(cfg, pool, paths)
    ids = [e.source_id for e in events]
    rows = {r.source_id: r for r in await wait_searchable(pool, ids, time.monotonic() + wait_seconds)}
    wall = time.perf_counter() - started
    await pool.close()
    texts = await chunk_texts(cfg, ids)
    per_source = {
        str(e.title): {
            "chunks": rows[e.source_id].chunk_count,
            "stages": {
                s.stage: round((s.finished_at - s.started_at).total_seconds(), 2)
                for s in rows[e.source_id].stages
                if s.started_at and s.finished_at
            },
        }
        for e in events
    }
    return wall, per_source, texts


def metric_sum(exposition: str, name: str) -> float:
    """The sum of one metric's samples (every label set) in a Prometheus text exposition; 0 if absent."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name:
            total += float(value)
    return total


def model_call_figures(workers: list[stack.WorkerProcess]) -> dict[str, float]:
    """The embedding model's calls in these worker processes since they started, from their /metrics: calls,
    chunks and seconds (MeteredEmbedder times each call), to tell the kernel's share of the stage's busy time."""
    from shared.metrics import PREFIX

    figures = {"model_calls": 0.0, "model_chunks": 0.0, "model_seconds": 0.0}
    for worker in workers:
        if worker.http_port is None:
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        figures["model_calls"] += metric_sum(text, f"{PREFIX}_embedding_batch_seconds_count")
        figures["model_chunks"] += metric_sum(text, f"{PREFIX}_embedding_batch_chunks_sum")
        figures["model_seconds"] += metric_sum(text, f"{PREFIX}_embedding_batch_seconds_sum")
    return {key: round(value, 2) for key, value in figures.items()}


HELD_BACK = ("embedding", "indexing")
"""The workers stopped while the chunking worker runs alone; embedding then drains its backlog alone."""


def stop_service(state: stack.StackState, service: str) -> None:
    """Stop every replica of a worker service (its entries stay in the state until `restart_service`)."""
    for worker in state.workers:
        if worker.service == service:
            stack.stop_worker(worker)


def restart_service(
    state: stack.StackState, service: str, timeout: float = 180.0
) -> list[stack.WorkerProcess]:
    """Start a stopped worker service's replicas again, saved in the state (so `stack.down` stops them), and
    return as soon as each logs that it started (its model is loaded; it has not consumed anything yet: the
    broker's group join comes after). `stack.wait_ready` then waits for the join."""
    replicas = sorted(w.replica for w in state.workers if w.service == service)
    started = [stack.start_worker(state, service, r) for r in replicas]
    state.workers = [w for w in state.workers if w.service != service] + started
    state.save()
    deadline = time.monotonic() + timeout
    for worker in started:
        while True:
            with Path(worker.log_path).open("rb") as log:
                log.seek(worker.log_offset)
                if stack.WORKER_READY_LINE.encode() in log.read():
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{service} did not start again in {timeout:.0f} s: see {worker.log_path}")
            time.sleep(0.05)
    return started


async def run_alone(state: stack.StackState, paths: list[Path], wait_seconds: float) -> dict[str, Any]:
    """Each stage alone on the machine, fed by the real pipeline: with the embedding and indexing workers stopped,
    upload the corpus again (new sources) and time the chunking worker until every source's chunking stage has
    finished; then start the embedding worker, which drains that backlog alone; then indexing, until searchable.
    Returns per stage its busy seconds, process CPU seconds and wall seconds in its own window, and the texts."""
    cfg = state.settings()
    logs = Path(state.home) / "logs"
    deadline = time.monotonic() + wait_seconds
    pool = await asyncpg.create_pool(cfg.database_dsn(), min_size=1, max_size=2)
    for service in HELD_BACK:
        await asyncio.to_thread(stop_service, state, service)
    since = log_offsets(logs)
    mark_start = cpu_mark(state)
    events, _, published_at = await publish_corpus(cfg, pool, paths)
    ids = [e.source_id for e in events]
    chunked_at = await wait_stage(pool, ids, "chunking", deadline)
    mark_chunked = cpu_mark(state)

    embedders = await asyncio.to_thread(restart_service, state, "embedding")
    # Its CPU is counted from its start line on: loading the model is not the stage's work on these chunks.
    mark_embedding = cpu_mark(state)
    embedding_started_at = datetime.now(UTC)
    embedded_at = await wait_stage(pool, ids, "embedding", deadline)
    mark_embedded = cpu_mark(state)
    model_calls = await asyncio.to_thread(model_call_figures, embedders)

    await asyncio.to_thread(restart_service, state, "indexing")
    indexing_started_at = datetime.now(UTC)
    await wait_searchable(pool, ids, deadline)
    indexed_at = datetime.now(UTC)
    await pool.close()
    texts = await chunk_texts(cfg, ids)

    entries = worker_entries(logs, since)
    chunking = entries.get("chunking", [])
    embedding = entries.get("embedding", [])
    chunking_line = handling_timeline(chunking)
    embedding_line = handling_timeline(embedding)
    first_batch = embedding_line["first_start"] or embedded_at

    def cpu(service: str, before: CpuMark, after: CpuMark) -> float:
        return round(after.processes.get(service, 0.0) - before.processes.get(service, 0.0), 2)

    return {
        "extraction": {
            **handling_figures(chunking),
            "cpu_seconds": cpu("chunking", mark_start, mark_chunked),
            "other_cpu_seconds": other_cpu(mark_start, mark_chunked),
            "wall_seconds": round((chunked_at - published_at).total_seconds(), 2),
            "idle_seconds": chunking_line["idle_seconds"],
            "longest_gap_seconds": chunking_line["longest_gap_seconds"],
        },
        "embedding": {
            **handling_figures(embedding),
            "cpu_seconds": cpu("embedding", mark_embedding, mark_embedded),
            "other_cpu_seconds": other_cpu(mark_embedding, mark_embedded),
            "wall_seconds": round((embedded_at - first_batch).total_seconds(), 2),
            "start_to_first_batch_seconds": round((first_batch - embedding_started_at).total_seconds(), 2),
            "idle_seconds": embedding_line["idle_seconds"],
            "longest_gap_seconds": embedding_line["longest_gap_seconds"],
            "batches": len(embedding),
            "messages_per_batch": [int(e.get("events", 1)) for e in embedding],
            **model_calls,
        },
        "indexing_wall_seconds": round((indexed_at - indexing_started_at).total_seconds(), 2),
        "texts": texts,
    }


def over_window(texts: list[str]) -> tuple[int, int]:
    """Chunks whose word pieces (with the special tokens) exceed the model's window, and that window."""
    from tokenizers import Tokenizer

    from shared.embedder import default_model_path

    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    window = 256
    return sum(len(tokenizer.encode(t).ids) > window for t in texts), window


def alone_comparison(
    alone: dict[str, Any], *, engine_seconds: float, engine_cpu_seconds: float
) -> dict[str, Any]:
    """One stage alone beside its bare engine on the same input: engine time over the stage's busy and wall
    time, engine CPU over the stage process's CPU (1.0: no overhead; 0.9 is issue 10's floor)."""
    return {
        **alone,
        "engine_seconds": round(engine_seconds, 2),
        "engine_cpu_seconds": round(engine_cpu_seconds, 2),
        "ratio_busy": round(engine_seconds / alone["busy_seconds"], 3) if alone["busy_seconds"] else None,
        "ratio_cpu": round(engine_cpu_seconds / alone["cpu_seconds"], 3) if alone["cpu_seconds"] else None,
        "ratio_wall": round(engine_seconds / alone["wall_seconds"], 3) if alone["wall_seconds"] else None,
    }


def main() -> None:
    """Run the corpus through the stack, then each stage alone, then the bare engines; print and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pdfs", nargs="*", type=Path, help="more PDFs to add to the corpus")
    parser.add_argument("--no-real", action="store_true", help="leave out the real manual (gnuplot-doc)")
    parser.add_argument("--no-alone", action="store_true", help="skip the phase that runs each stage alone")
    parser.add_argument("--replicas", type=int, default=1, help="processes per worker")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-corpus-") as tmp:
        folder = Path(tmp)
        corpus = ([] if args.no_real else [real_pdf(Path("var/bench"))]) + generated_pdfs(folder) + args.pdfs
        pages = {p.name: page_count(p) for p in corpus}
        home = folder / "stack"
        alone: dict[str, Any] | None = None
        beside: dict[str, tuple[float, float]] = {}
        # Reuse off in the bench's stack: the second phase uploads the same files again, and reuse would copy
        # their results instead of computing them (the first phase's files all differ, so it never reuses anyway).
        with own_stack(home, env=NO_REUSE, replicas=args.replicas, search_api=False) as state:
            mark_before = cpu_mark(state)
            wall, per_source, texts = asyncio.run(run_pipeline(state, corpus, args.timeout))
            mark_after = cpu_mark(state)
            figures = stage_log_figures(home / "logs")  # before the second phase writes to the same logs
            cfg = state.settings()
            if not args.no_alone:
                alone = asyncio.run(run_alone(state, corpus, args.timeout))
                # The engines again, now beside the stack left idle: its servers and idle workers (the broker
                # answering every consumer's polls) load the machine during a stage's window too, so this
                # compares a stage with its engine under the same background load, isolating its own overhead.
                beside = {
                    "extraction": bare_extraction(corpus),
                    "embedding": bare_embedding(cfg, alone["texts"])[:2],
                }
        # The bare engines only now, with the stack gone: nothing else of this bench runs beside them.
        before, after = mark_before.processes, mark_after.processes
        cpu_used = {name: round(after[name] - before.get(name, 0.0), 2) for name in sorted(after)}
        marks = [cpu_mark()]
        extraction_bare, extraction_bare_cpu = bare_extraction(corpus)
        marks.append(cpu_mark())
        embedding_bare, embedding_bare_cpu, kernel = bare_embedding(cfg, texts)
        marks.append(cpu_mark())
        alone_texts: list[str] = alone.pop("texts") if alone else []
        same_texts = sorted(alone_texts) == sorted(texts)
        alone_embedding_bare, alone_embedding_bare_cpu = embedding_bare, embedding_bare_cpu
        if alone and not same_texts:  # the kernel alone on exactly the chunks the stage embedded alone
            alone_embedding_bare, alone_embedding_bare_cpu, _ = bare_embedding(cfg, alone_texts)
            marks.append(cpu_mark())
        # Other users of the machine meanwhile (their load is not this bench's; a large figure: run it again).
        bare_others = round(sum(other_cpu(a, b) for a, b in itertools.pairwise(marks)), 2)
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
    report: dict[str, Any] = {
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
            "other_processes_cpu_seconds": bare_others,
        },
        "ratios": {
            "extraction_vs_pypdf": round(extraction_bare / chunking_busy, 3),
            "embedding_vs_kernel": round(embedding_bare / embedding_busy, 3),
        },
        "cpu_seconds": {
            "processes": cpu_used,
            "total": round(sum(cpu_used.values()), 2),
            "other_processes": other_cpu(mark_before, mark_after),
            "bare_extraction": round(extraction_bare_cpu, 2),
            "bare_embedding": round(embedding_bare_cpu, 2),
            "extraction_vs_pypdf": round(extraction_bare_cpu / cpu_used.get("chunking", float("nan")), 3),
            "embedding_vs_kernel": round(embedding_bare_cpu / cpu_used.get("embedding", float("nan")), 3),
        },
    }
    if alone:
        report["alone"] = {
            "reuse_identical_uploads": False,
            "chunks": len(alone_texts),
            "same_texts_as_concurrent_run": same_texts,
            "extraction": alone_comparison(
                alone["extraction"], engine_seconds=extraction_bare, engine_cpu_seconds=extraction_bare_cpu
            ),
            "embedding": alone_comparison(
                alone["embedding"],
                engine_seconds=alone_embedding_bare,
                engine_cpu_seconds=alone_embedding_bare_cpu,
            ),
            "indexing_wall_seconds": alone["indexing_wall_seconds"],
        }
        for name, (engine_seconds, engine_cpu) in beside.items():
            stage = report["alone"][name]
            compared = alone_comparison(
                alone[name], engine_seconds=engine_seconds, engine_cpu_seconds=engine_cpu
            )
            stage["engine_beside_idle_stack"] = {
                key: value for key, value in compared.items() if key.startswith(("engine_", "ratio_"))
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
        + f"; processes outside the bench {cpu['other_processes']:.1f}"
    )
    print(
        f"CPU of a stage's process vs its engine alone: extraction {cpu['extraction_vs_pypdf']:.2f}x "
        f"(pypdf {cpu['bare_extraction']:.1f} s), embedding {cpu['embedding_vs_kernel']:.2f}x "
        f"(kernel {cpu['bare_embedding']:.1f} s)"
    )
    if "alone" in report:
        print_alone(report["alone"], concurrent_chunks=chunks)
    print(
        f"the bare engines ran after the stack stopped; processes outside the bench used "
        f"{bare_others:.1f} CPU-s meanwhile"
    )
    write_json(args.json, report)


def ratio_text(value: float | None) -> str:
    """A ratio as printed (2 decimals and x), '-' when there is none."""
    return f"{value:.2f}x" if value is not None else "-"


def table_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The stage-beside-engine table: busy, CPU and wall seconds, the engine's, the ratios, others' CPU."""
    lines = [
        f"{'stage':<14} {'busy s':>7} {'CPU s':>7} {'wall s':>7} {'engine s':>9} {'engine CPU s':>12} "
        f"{'ratio busy':>10} {'ratio CPU':>9} {'ratio wall':>10} {'others CPU s':>12}"
    ]
    for name, f in rows.items():
        lines.append(
            f"{name:<14} {f['busy_seconds']:>7.1f} {f['cpu_seconds']:>7.1f} {f['wall_seconds']:>7.1f} "
            f"{f['engine_seconds']:>9.1f} {f['engine_cpu_seconds']:>12.1f} {ratio_text(f['ratio_busy']):>10} "
            f"{ratio_text(f['ratio_cpu']):>9} {ratio_text(f['ratio_wall']):>10} {f['other_cpu_seconds']:>12.1f}"
        )
    return lines


def print_alone(alone: dict[str, Any], *, concurrent_chunks: int) -> None:
    """The each-stage-alone table: a stage's busy, CPU and wall seconds in its own window beside its engine."""
    same = "the same texts" if alone["same_texts_as_concurrent_run"] else "NOT the same texts"
    print(
        f"each stage alone (the corpus uploaded again, reuse off; {alone['chunks']} chunks, {same} as the "
        f"concurrent run's {concurrent_chunks}):"
    )
    print("\n".join(table_lines({name: alone[name] for name in ("extraction", "embedding")})))
    for name in ("extraction", "embedding"):
        b = alone[name].get("engine_beside_idle_stack")
        if b:
            print(
                f"{name} alone vs its engine run beside the idle stack (the same background load): engine "
                f"{b['engine_seconds']:.1f} s / {b['engine_cpu_seconds']:.1f} CPU-s; ratio busy {ratio_text(b['ratio_busy'])}, "
                f"CPU {ratio_text(b['ratio_cpu'])}, wall {ratio_text(b['ratio_wall'])}"
            )
    extraction, embedding = alone["extraction"], alone["embedding"]
    sizes = embedding["messages_per_batch"]
    print(
        f"extraction alone: {extraction['messages']} messages, idle between them {extraction['idle_seconds']:.1f} s "
        f"(longest gap {extraction['longest_gap_seconds']:.2f} s); wall from publishing to the last chunking done"
    )
    print(
        f"embedding alone: {embedding['batches']} batches of {min(sizes, default=0)}-{max(sizes, default=0)} "
        f"messages (median {statistics.median(sizes) if sizes else 0:g}), idle between them "
        f"{embedding['idle_seconds']:.1f} s (longest gap {embedding['longest_gap_seconds']:.2f} s); wall from its "
        f"first batch (joined {embedding['start_to_first_batch_seconds']:.1f} s after its start) to the last "
        f"embedding done; then indexing drained in {alone['indexing_wall_seconds']:.1f} s"
    )
    print(
        f"embedding alone, the model's calls inside the worker: {embedding['model_calls']:g} calls, "
        f"{embedding['model_chunks']:g} chunks, {embedding['model_seconds']:.1f} s of its "
        f"{embedding['busy_seconds']:.1f} s busy (the rest: cutting texts into chunks, messages, PostgreSQL)"
    )


if __name__ == "__main__":
    main()
