"""Reuse of identical uploads, through the real pipeline: `python -m shared.bench.reuse` (make bench-reuse).

It starts an embedded stack of its own (every worker, in a temporary folder, as `make bench-corpus` does). Student
A uploads a 200+ page book into a class of theirs; once it is searchable (status `completed`: every chunk in Qdrant
and Chroma), student B uploads the same bytes (a copy of the file of their own) into a class of theirs. Printed:
both upload-to-searchable times, the ratio (second / first; the goal is 15% or less), both chunk counts, whether
the second was copied (`ingest_jobs.reused`), and that its vectors carry its own ids and payload. The book is
gnuplot's real 311-page manual (Debian's gnuplot-doc, fetched by `make bench-corpus`'s code into var/bench and
cached), or any PDF given. Writes JSON (default var/bench/reuse.json). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from shared.bench import own_stack, write_json
from shared.bench.corpus import page_count, real_pdf
from shared.devstack import stack

DEFAULT_JSON = Path("var/bench/reuse.json")
GOAL = 0.15


async def upload_and_wait(
    state: stack.StackState, pool: asyncpg.Pool, book: Path, title: str, wait_seconds: float
) -> dict[str, Any]:
    """One student uploads the book into a new class of theirs; returns the time to searchable and the job."""
    from shared.broker import make_broker, publish
    from shared.db import jobs, owners
    from shared.events.models import SourceUploaded

    cfg = state.settings()
    user, klass = uuid.uuid4(), uuid.uuid4()
    await owners.ensure_user(pool, user_id=user)
    await owners.ensure_class(pool, class_id=klass, user_id=user)
    target = Path(cfg.storage_root) / str(user) / f"{uuid.uuid4().hex[:8]}-{book.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(book, target)
    event_id = uuid.uuid4()
    event = SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="bench",
        kind="textbook",
        user_id=user,
        class_id=klass,
        title=title,
        storage_url=target.as_uri(),
        media_type="application/pdf",
    )
    broker = make_broker(cfg, service="bench")
    started = time.perf_counter()
    async with broker:
        await publish(broker, event)
    deadline = time.monotonic() + wait_seconds
    while True:
        row = await jobs.get_job(pool, source_id=event.source_id)
        if row is not None and row.status in ("completed", "failed"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{title} not searchable after {wait_seconds:.0f} s: {row}")
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    if row.status != "completed":
        raise SystemExit(f"{title} failed: {row.error_code}: {row.error_message}")
    return {
        "source_id": str(event.source_id),
        "user_id": str(user),
        "class_id": str(klass),
        "title": title,
        "seconds": round(seconds, 3),
        "chunks": int(row.chunk_count or 0),
        "reused": row.reused,
    }


async def own_payload(
    state: stack.StackState, second: dict[str, Any], first: dict[str, Any]
) -> dict[str, Any]:
    """How many of the second source's points are in each store, and whether any carries the first's fields."""
    from qdrant_client import AsyncQdrantClient

    from shared.vectors.chroma import ChromaStore
    from shared.vectors.qdrant import QdrantStore
    from shared.vectors.records import chroma_collection_name

    cfg = state.settings()
    client = AsyncQdrantClient(url=cfg.qdrant_url)
    try:
        qdrant = QdrantStore.from_settings(client, cfg)
        points = await qdrant.points_of_source(user_id=second["user_id"], source_id=second["source_id"])
    finally:
        await client.close()
    chroma = await ChromaStore.connect(cfg)
    docs = await chroma.documents_of_source(
        collection=chroma_collection_name(second["user_id"], second["class_id"], "textbooks"),
        source_id=second["source_id"],
    )
    forbidden = {first["source_id"], first["user_id"], first["class_id"], first["title"]}
    payloads = repr([p.payload for p in points]) + repr(docs["metadatas"]) + repr(docs["ids"])
    return {
        "qdrant_points": len(points),
        "chroma_documents": len(docs["ids"]),
        "first_uploaders_fields_found": sorted(f for f in forbidden if f in payloads),
    }


async def run(state: stack.StackState, book: Path, wait_seconds: float) -> dict[str, Any]:
    """Student A, then student B with the same bytes."""
    cfg = state.settings()
    pool = await asyncpg.create_pool(cfg.database_dsn(), min_size=1, max_size=2)
    try:
        first = await upload_and_wait(state, pool, book, "Student A's book", wait_seconds)
        second = await upload_and_wait(state, pool, book, "Student B's copy", wait_seconds)
    finally:
        await pool.close()
    return {"first": first, "second": second, "second_payload": await own_payload(state, second, first)}


def main() -> None:
    """Upload the book twice through the stack; print and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pdf", nargs="?", type=Path, help="the book (default: gnuplot's 311-page manual)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    book = args.pdf or real_pdf(Path("var/bench"))
    pages = page_count(book)
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-reuse-") as tmp:
        home = Path(tmp) / "stack"
        with own_stack(home, replicas=1, search_api=False) as state:
            result = asyncio.run(run(state, book, args.timeout))
    first, second = result["first"], result["second"]
    ratio = second["seconds"] / first["seconds"]
    report = {
        "book": str(book),
        "pages": pages,
        **result,
        "ratio": round(ratio, 4),
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }
    print(f"book: {book.name}, {pages} pages")
    print(f"student A (computed): {first['seconds']:.2f} s upload-to-searchable, {first['chunks']} chunks")
    print(
        f"student B (same bytes, another class; reused={second['reused']}): {second['seconds']:.2f} s, "
        f"{second['chunks']} chunks"
    )
    print(f"ratio B/A: {ratio:.1%} (goal <= {GOAL:.0%}: {'met' if ratio <= GOAL else 'NOT met'})")
    payload = result["second_payload"]
    print(
        f"B's vectors: {payload['qdrant_points']} in Qdrant, {payload['chroma_documents']} in Chroma; "
        f"A's ids/owner/class/title in them: {payload['first_uploaders_fields_found'] or 'none'}"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
