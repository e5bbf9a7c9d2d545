"""Benchmark of the Qdrant the stack runs against local mode: `python -m shared.bench.qdrant` (make bench-qdrant).

The same 10,000 points (384-d unit vectors; 20 students x 5 classes x 4 content types, the payload the indexing
worker writes) are upserted in the worker's batches and then searched the way a student's search is (tenant +
class + visible filter, 5 results), into:
- the Qdrant server over REST (the stack's default) and over gRPC (`LMGPA_QDRANT_PREFER_GRPC`), each on a fresh
  collection with the stack's payload indexes;
- qdrant-client's local mode on a folder (what `LMGPA_QDRANT_PATH` gives: brute force, no payload index, and no
  BM25 vector: only a server computes it, so local mode stores the embedding alone).
It prints the upsert time, points/s and search latency p50/p99 of each, the ratios to the server over REST,
and whether each search returned the same top-5 as an exact numpy ranking (recall@5). Writes JSON with --json.
Asserts nothing: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient

from shared.bench import write_json
from shared.devstack.servers import start_qdrant, stop_process
from shared.vectors.qdrant import UPSERT_BATCH, QdrantStore
from shared.vectors.records import VectorRecord

DIMENSIONS = 384
USERS, CLASSES, TYPES = 20, 5, ("notes", "photos", "textbooks", "transcripts")


def corpus(points: int, seed: int = 7) -> tuple[list[VectorRecord], np.ndarray[Any, Any]]:
    """Random unit vectors with the indexing worker's payload, spread over students, classes and types."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((points, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users = [uuid.UUID(int=1000 + n) for n in range(USERS)]
    classes = [uuid.UUID(int=5000 + n) for n in range(USERS * CLASSES)]
    records = []
    for n in range(points):
        user = n % USERS
        klass = classes[user * CLASSES + (n // USERS) % CLASSES]
        source = uuid.UUID(int=10_000_000 + n // 8)
        records.append(
            VectorRecord(
                point_id=str(uuid.UUID(int=n + 1)),
                document_id=f"note_{source}_{n % 8}",
                vector=vectors[n].tolist(),
                document=f"chunk {n}",
                metadata={
                    "user_id": str(users[user]),
                    "class_id": str(klass),
                    "content_type": TYPES[n % len(TYPES)],
                    "source_id": str(source),
                    "chunk_index": n % 8,
                    "generation": 0,
                    "visible": True,
                },
            )
        )
    return records, vectors


async def measure(
    client: AsyncQdrantClient,
    records: list[VectorRecord],
    vectors: np.ndarray[Any, Any],
    queries: int,
    *,
    bm25: bool = True,
) -> dict[str, Any]:
    """Upsert every record, then run filtered searches by vector; times and recall against an exact ranking."""
    point_of = {r.document_id: r.point_id for r in records}
    store = QdrantStore(client, collection=f"bench_{uuid.uuid4().hex[:8]}", dimensions=DIMENSIONS, bm25=bm25)
    await store.ensure_collection()
    started = time.perf_counter()
    await store.upsert(records)
    upsert_seconds = time.perf_counter() - started
    rng = np.random.default_rng(11)
    latencies, found = [], 0
    for q in range(queries):
        target = records[int(rng.integers(len(records)))].metadata
        query = vectors[int(rng.integers(len(records)))] + 0.05 * rng.standard_normal(DIMENSIONS)
        query = (query / np.linalg.norm(query)).astype(np.float32)
        started = time.perf_counter()
        hits = await store.search(
            query.tolist(), user_id=str(target["user_id"]), class_id=str(target["class_id"]), limit=5
        )
        latencies.append((time.perf_counter() - started) * 1000)
        mask = [
            r.metadata["user_id"] == target["user_id"] and r.metadata["class_id"] == target["class_id"]
            for r in records
        ]
        candidates = np.flatnonzero(mask)
        best = candidates[np.argsort(-(vectors[candidates] @ query))[:5]]
        expected = {records[i].point_id for i in best}
        found += len(expected & {point_of[h.document_id] for h in hits})
        if q == 0:
            latencies.pop()  # the first search pays for connection set-up
    await client.delete_collection(store.collection)
    return {
        "points": len(records),
        "upsert_seconds": round(upsert_seconds, 3),
        "points_per_second": round(len(records) / upsert_seconds),
        "search_p50_ms": round(statistics.median(latencies), 2),
        "search_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "recall_at_5": round(found / (5 * queries), 4),
    }


async def run(points: int, queries: int, home: Path) -> dict[str, Any]:
    """Every engine on the same points and queries; the server is started here and stopped after."""
    records, vectors = corpus(points)
    server = start_qdrant(home)
    results: dict[str, Any] = {}
    try:
        for name, prefer_grpc in (("server (REST)", False), ("server (gRPC)", True)):
            client = AsyncQdrantClient(
                url=server.url, grpc_port=server.grpc_port or 6334, prefer_grpc=prefer_grpc, timeout=60
            )
            try:
                results[name] = await measure(client, records, vectors, queries)
            finally:
                await client.close()
    finally:
        stop_process(server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local mode warns that payload indexes do nothing there
        client = AsyncQdrantClient(path=str(home / "local"))
        try:
            results["local mode"] = await measure(client, records, vectors, queries, bm25=False)
        finally:
            await client.close()
    return results


def main() -> None:
    """Print the table (and write JSON with --json)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-qdrant-") as tmp:
        results = asyncio.run(run(args.points, args.queries, Path(tmp)))
    base = results["server (REST)"]
    print(
        f"Qdrant: {args.points} points of {DIMENSIONS} floats in batches of {UPSERT_BATCH}, {args.queries} filtered searches"
    )
    print(
        f"{'engine':<15} {'upsert s':>9} {'points/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'recall@5':>9}  vs server (REST): upsert, p50"
    )
    for name, r in results.items():
        print(
            f"{name:<15} {r['upsert_seconds']:>9.2f} {r['points_per_second']:>9} {r['search_p50_ms']:>8.2f} "
            f"{r['search_p99_ms']:>8.2f} {r['recall_at_5']:>9.3f}  "
            f"{r['upsert_seconds'] / base['upsert_seconds']:.2f}x, {r['search_p50_ms'] / base['search_p50_ms']:.2f}x"
        )
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
