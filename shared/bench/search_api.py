"""Load test of the search API on the embedded stack: `python -m shared.bench.search_api` (make bench-search).

It starts an embedded stack of its own (servers and the search API only, in a temporary folder), puts a class of
10,000 chunks into the stack's Qdrant collection (random unit vectors with the indexing worker's payload, plus
other students' chunks around it: the API's latency does not depend on what the vectors mean), then sends
POST /v1/search with real query texts from 1, 8 and 32 concurrent clients over loopback, each level bounded in
requests and in time. It prints p50/p99 latency and requests/s per level, and the time of a cold `lmgpa search`
through the API (a new process, as a user runs it). Writes JSON with --json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient

from shared.bench import own_stack, write_json
from shared.settings import Settings
from shared.vectors.qdrant import QdrantStore
from shared.vectors.records import VectorRecord

QUERIES = (
    "what is the derivative of a composition of functions",
    "how do mitochondria make ATP",
    "causes of the French Revolution",
    "define thermal efficiency of an engine",
    "why do rivers meander",
    "what does the second law of thermodynamics say",
    "how does a transistor work",
    "explain supply and demand",
)


async def seed(settings: Settings, user: uuid.UUID, klass: uuid.UUID, chunks: int) -> None:
    """The class's chunks and as many of other students', in the stack's collection."""
    rng = np.random.default_rng(3)
    client = AsyncQdrantClient(url=settings.qdrant_url)
    store = QdrantStore.from_settings(client, settings)
    await store.ensure_collection()
    owners = [(user, klass)] + [(uuid.uuid4(), uuid.uuid4()) for _ in range(9)]
    for o, (owner, owner_class) in enumerate(owners):
        count = chunks if o == 0 else chunks // 9
        vectors = rng.standard_normal((count, settings.embedding_dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = []
        for n in range(count):
            source = uuid.UUID(int=(o << 64) + n // 40)
            records.append(
                VectorRecord(
                    point_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{owner}:{n}")),
                    document_id=f"textbook_{source}_{n % 40}",
                    vector=vectors[n].tolist(),
                    # Each chunk holds two queries' words, so every ranking (BM25 too) has work to do.
                    document=f"chunk {n}: {QUERIES[n % len(QUERIES)]}; {QUERIES[(n * 7 + 3) % len(QUERIES)]}",
                    metadata={
                        "user_id": str(owner),
                        "class_id": str(owner_class),
                        "content_type": "textbooks",
                        "source_id": str(source),
                        "title": f"Book {n // 40}",
                        "chunk_index": n % 40,
                        "page_start": 1 + n % 300,
                        "page_end": 1 + n % 300,
                        "generation": 0,
                        "visible": True,
                    },
                )
            )
        await store.upsert(records)
    await client.close()


async def level(
    url: str, body: dict[str, Any], clients: int, requests: int, seconds: float
) -> dict[str, Any]:
    """`clients` concurrent loops sending searches until `requests` are done or `seconds` have passed."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def loop(n: int) -> None:
            nonlocal sent, errors
            while sent < requests and time.monotonic() < deadline:
                sent += 1
                started = time.perf_counter()
                response = await client.post(
                    "/v1/search", json={**body, "query": QUERIES[(sent + n) % len(QUERIES)]}
                )
                if response.status_code == 200 and len(response.json()["hits"]) == body["limit"]:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(n) for n in range(clients)))
        wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "requests_per_second": round(len(latencies) / wall, 1),
    }


def cold_cli_search(home: Path, user: uuid.UUID, klass: uuid.UUID) -> tuple[float, str]:
    """Wall time of a new `lmgpa search` process against the running stack (through the API), and its header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGPA_")} | {"LMGPA_DEV_HOME": str(home)}
    argv = [
        sys.executable,
        "-m",
        "shared.cli.main",
        "search",
        QUERIES[0],
        "--user",
        str(user),
        "--class",
        str(klass),
    ]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=120)
    return time.perf_counter() - started, result.stdout.splitlines()[0]


def main() -> None:
    """Run the levels and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in the searched class")
    parser.add_argument("--requests", type=int, default=400, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per level at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--mode", choices=("sparse", "dense", "hybrid"), help="LMGPA_SEARCH_MODE for the API")
    args = parser.parse_args()
    if args.mode:
        os.environ["LMGPA_SEARCH_MODE"] = args.mode  # the stack's processes inherit it
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-search-") as tmp:
        home = Path(tmp) / "stack"
        with own_stack(home, services=()) as state:
            cfg = state.settings()
            user, klass = uuid.uuid4(), uuid.uuid4()
            asyncio.run(seed(cfg, user, klass, args.chunks))
            body = {"user_id": str(user), "class_id": str(klass), "limit": 5}
            assert cfg.search_url
            asyncio.run(level(cfg.search_url, body, 4, 40, 10))  # warm-up, not reported
            results = [
                asyncio.run(level(cfg.search_url, body, c, args.requests, args.seconds)) for c in (1, 8, 32)
            ]
            cold = [cold_cli_search(home, user, klass) for _ in range(3)]
    print(
        f"search API: a class of {args.chunks} chunks (+{args.chunks // 9 * 9} of other students), limit 5, loopback, "
        f"mode {os.environ.get('LMGPA_SEARCH_MODE', 'default (sparse)')}"
    )
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7}")
    for r in results:
        print(
            f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['requests_per_second']:>7}"
        )
    print(
        f"cold `lmgpa search` through the API: {', '.join(f'{t:.2f} s' for t, _ in cold)} wall ({cold[0][1]!r})"
    )
    if args.json:
        write_json(args.json, {"levels": results, "cold_cli_seconds": [t for t, _ in cold]})


if __name__ == "__main__":
    main()
