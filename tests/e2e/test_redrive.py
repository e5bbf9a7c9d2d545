"""No source is ever stuck: work in flight when the embedded stack (or its broker alone) stops is re-driven from
PostgreSQL when it comes back, and every source completes with exactly its chunks in both stores.

The embedded broker keeps its log in memory, so a restart loses every event in flight; the outbox in PostgreSQL
(`event_outbox`) still has every stage input no worker has applied, and the reconciler publishes them again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.cli.backend import ingest_source
from shared.devstack import servers, stack
from shared.settings import Settings
from tests.e2e.cli import lmgpa, purge
from tests.media import pdfs
from tests.media.photos import note_photo, save_image
from tests.media.speech import make_lecture

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

NOTES = (
    "Entropy of an isolated system never decreases over time.",
    "The mitochondrion is where the Krebs cycle takes place.",
    "A derivative measures the instantaneous rate of change.",
    "The French Revolution began in 1789 with the Estates-General.",
    "Ohm's law: the voltage equals the current times the resistance.",
)


COMPUTE_EVERYTHING = {"LMGPA_REUSE_IDENTICAL_UPLOADS": "false"}
"""Both tests upload the same media: without this the second would copy the first's results (reuse of identical
uploads) and have no work in flight to lose."""


def state_of(home: Path) -> stack.StackState:
    state = stack.load_state(home)
    assert state is not None
    return state


def env_of(home: Path) -> dict[str, str]:
    return dict(state_of(home).env)


async def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("redrive")
    lmgpa(folder, "dev", "up", settings=COMPUTE_EVERYTHING)
    try:
        yield folder
    finally:
        purge(folder)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("redrive-media")
    pdfs.make_text_pdf(folder / "book.pdf", pages=80)
    pdfs.make_text_pdf(folder / "reader.pdf", pages=30)
    make_lecture(folder / "lecture.wav", seconds=45)
    save_image(note_photo("clean").image, folder / "photo.jpg")
    return {
        "textbook": folder / "book.pdf",
        "second pdf": folder / "reader.pdf",
        "recording": folder / "lecture.wav",
        "photo": folder / "photo.jpg",
    }


async def put_in_flight(cfg: Settings, media: dict[str, Path]) -> dict[uuid.UUID, str]:
    """A textbook, a second PDF, a recording, a photo and five notes, published at once as the backend does."""
    user, klass = uuid.uuid4(), uuid.uuid4()
    kinds = {"textbook": "textbook", "second pdf": "textbook", "recording": "audio", "photo": "photo"}
    jobs = [
        ingest_source(
            cfg,
            path=path,
            note=None,
            kind=kinds[name],
            user_id=user,
            class_id=klass,
            title=name,
            create_owner=True,
            wait=False,
            wait_seconds=0,
        )
        for name, path in media.items()
    ]
    jobs += [
        ingest_source(
            cfg,
            path=None,
            note=text,
            kind="note",
            user_id=user,
            class_id=klass,
            title=f"note {n}",
            create_owner=True,
            wait=False,
            wait_seconds=0,
        )
        for n, text in enumerate(NOTES)
    ]
    results = [await job for job in jobs]  # one after the other: the owner is created once
    return {uuid.UUID(r["source_id"]): r["kind"] for r in results}


async def in_flight(dsn: str, ids: list[uuid.UUID]) -> list[str]:
    """The stages waiting or working now, as 'kind/stage'."""
    rows = await sql(
        dsn,
        "SELECT j.kind, s.stage FROM ingest_stages s JOIN ingest_jobs j USING (source_id) "
        "WHERE s.source_id = ANY($1::uuid[]) AND s.status IN ('pending', 'processing') ORDER BY 1, 2",
        ids,
    )
    return [f"{r['kind']}/{r['stage']}" for r in rows]


async def wait_for_stages(
    dsn: str, ids: list[uuid.UUID], *, at_least: int, timeout: float = 120
) -> list[str]:
    """Wait until several stages are at work at once (so the stop cuts real work short)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = await in_flight(dsn, ids)
        if len({s.split("/")[1] for s in stages}) >= at_least:
            return stages
        await asyncio.sleep(0.2)
    raise AssertionError(f"never {at_least} stages at once: {await in_flight(dsn, ids)}")


async def wait_completed(dsn: str, ids: list[uuid.UUID], timeout: float = 900) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await sql(
            dsn,
            "SELECT source_id, kind, status, error_code, error_message, chunk_count, redrives "
            "FROM ingest_jobs WHERE source_id = ANY($1::uuid[])",
            ids,
        )
        if len(rows) == len(ids) and all(r["status"] in ("completed", "failed") for r in rows):
            return rows
        assert time.monotonic() < deadline, [dict(r) for r in rows]
        await asyncio.sleep(0.5)


def census(env: dict[str, str], ids: list[uuid.UUID]) -> tuple[Counter[str], Counter[tuple[str, int]], int]:
    """Qdrant points per source and per (source, chunk), and Chroma documents of these sources."""
    import chromadb
    from qdrant_client import QdrantClient, models

    wanted = {str(i) for i in ids}
    client = QdrantClient(url=env["LMGPA_QDRANT_URL"])
    per_source: Counter[str] = Counter()
    keys: Counter[tuple[str, int]] = Counter()
    offset = None
    flt = models.Filter(
        must=[models.FieldCondition(key="source_id", match=models.MatchAny(any=sorted(wanted)))]
    )
    while True:
        page, offset = client.scroll(
            "lmgpa_chunks",
            scroll_filter=flt,
            limit=1000,
            offset=offset,
            with_payload=["source_id", "chunk_index"],
        )
        for point in page:
            payload = point.payload or {}
            per_source[payload["source_id"]] += 1
            keys[(payload["source_id"], payload["chunk_index"])] += 1
        if offset is None:
            break
    client.close()
    chroma = chromadb.HttpClient(host="127.0.0.1", port=int(env["LMGPA_CHROMA_URL"].rsplit(":", 1)[1]))
    docs = 0
    for collection in chroma.list_collections():
        found = chroma.get_collection(collection.name).get(
            where={"source_id": {"$in": sorted(wanted)}}, include=[]
        )
        docs += len(found["ids"])
    return per_source, keys, docs


def wait_detections(home: Path, seen: int, timeout: float = 60) -> list[int]:
    """The detections after the first `seen`, waiting for one: the sources may complete from what the workers had
    fetched before the reconciler's next pass (every LMGPA_RECONCILE_INTERVAL_SECONDS) notices the loss."""
    deadline = time.monotonic() + timeout
    while not (found := lost_log_detections(home)[seen:]) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def lost_log_detections(home: Path) -> list[int]:
    """The reconciler's detections of a broker that lost its log: how many pending inputs each re-drove."""
    found = []
    for line in (home / "logs" / "reconciler-0.log").read_text(errors="replace").splitlines():
        if '"broker_log_lost"' in line:
            found.append(int(json.loads(line)["pending_inputs"]))
    return found


def check_everything_complete(env: dict[str, str], rows: list[asyncpg.Record]) -> tuple[int, int]:
    """Every source completed with exactly its chunks in both stores, none twice; returns (chunks, re-drives)."""
    failed = [dict(r) for r in rows if r["status"] != "completed"]
    assert not failed, failed
    ids = [r["source_id"] for r in rows]
    per_source, keys, docs = census(env, ids)
    expected = {str(r["source_id"]): r["chunk_count"] for r in rows}
    assert dict(per_source) == expected, (dict(per_source), expected)
    assert not [k for k, n in keys.items() if n > 1], "a chunk is in Qdrant twice"
    assert docs == sum(expected.values()), (docs, expected)
    return sum(expected.values()), sum(r["redrives"] for r in rows)


def test_a_whole_stack_restart_loses_no_work(home: Path, media: dict[str, Path], report: Any) -> None:
    env = env_of(home)
    cfg, dsn = state_of(home).settings(), env["LMGPA_DATABASE_URL"]
    sources = asyncio.run(put_in_flight(cfg, media))
    ids = list(sources)
    stopped_in = asyncio.run(wait_for_stages(dsn, ids, at_least=3))
    detections = len(lost_log_detections(home))
    lmgpa(home, "dev", "down")
    started = time.monotonic()
    lmgpa(home, "dev", "up", settings=COMPUTE_EVERYTHING)
    env = env_of(home)
    rows = asyncio.run(wait_completed(env["LMGPA_DATABASE_URL"], ids))
    recovered = time.monotonic() - started
    chunks, redrives = check_everything_complete(env, rows)
    after = wait_detections(home, detections)
    report(
        f"\nwhole-stack restart: in flight at the stop {stopped_in}; after `dev up` the reconciler found the broker's "
        f"log lost and published {after} pending inputs again; every one of {len(ids)} sources completed in "
        f"{recovered:.1f} s, {chunks} chunks in both stores, 0 duplicates; re-drives counted on the jobs {redrives}"
    )
    assert after, "the reconciler did not notice that the restarted broker had lost its log"


def test_a_broker_restart_alone_loses_no_work(home: Path, media: dict[str, Path], report: Any) -> None:
    env = env_of(home)
    cfg, dsn = state_of(home).settings(), env["LMGPA_DATABASE_URL"]
    sources = asyncio.run(put_in_flight(cfg, media))
    ids = list(sources)
    stopped_in = asyncio.run(wait_for_stages(dsn, ids, at_least=3))
    state = stack.load_state(home)
    assert state is not None
    detections = len(lost_log_detections(home))
    broker = state.server("broker")
    servers.stop_process(broker)  # workers, PostgreSQL, Chroma, Qdrant and the reconciler stay up
    time.sleep(2)
    restarted = servers.start_broker(home, port=broker.port)
    state.broker = {**state.broker, "pid": restarted.pid}
    state.save()
    started = time.monotonic()
    rows = asyncio.run(wait_completed(dsn, ids))
    recovered = time.monotonic() - started
    chunks, redrives = check_everything_complete(env, rows)
    dead = [w.service for w in state.workers if not servers.is_running(w.pid)]
    after = wait_detections(home, detections)
    report(
        f"\nbroker-only restart: in flight at the stop {stopped_in}; the reconciler found the log lost and published "
        f"{after} pending inputs again; every one of {len(ids)} sources completed {recovered:.1f} s after the "
        f"broker came back, {chunks} chunks, 0 duplicates; re-drives counted on the jobs {redrives}"
    )
    assert not dead, f"workers died with the broker: {dead}"
    assert after, "the reconciler did not notice that the restarted broker had lost its log"
