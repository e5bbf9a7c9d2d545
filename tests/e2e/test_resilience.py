"""Nothing lost, nothing duplicated, nobody let in: a corpus of hostile inputs while good work flows, then a
chaos run of 200+ sources through the embedded stack while workers are killed and servers stopped."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.broker import make_broker, publish
from shared.chunking import HfTokenCounter, Segment, chunk_segments
from shared.devstack import servers, stack
from shared.events import topics
from shared.events.models import SourceUploaded
from shared.settings import Settings
from tests.media import DATA
from tests.media.pdfs import (
    make_encrypted_pdf,
    make_jpeg_named_pdf,
    make_text_pdf,
    make_truncated_pdf,
    make_zero_page_pdf,
)
from tests.media.photos import blank_page, make_decompression_bomb, make_garbled, note_photo, save_image
from tests.media.speech import encode, speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

SHARED_BAD = DATA / "bad"
SUBJECTS = [
    "The derivative measures the instantaneous rate of change of a function.",
    "Mitochondria make most of the cell's ATP through oxidative phosphorylation.",
    "The Treaty of Versailles ended the First World War in 1919.",
    "Ohm's law relates the voltage across a resistor to the current through it.",
    "Supply and demand together set the market price of a good.",
    "Photosynthesis stores light energy as chemical energy in glucose.",
    "A prime number has exactly two divisors, one and itself.",
    "Plate tectonics explains earthquakes, volcanoes and mountain ranges.",
]


@dataclass
class Case:
    """One upload and what must become of it."""

    name: str
    event: SourceUploaded
    expect: str  # "completed" or an error code
    note_text: str | None = None


@dataclass
class Stack:
    home: Path
    state: stack.StackState
    settings: Settings
    dsn: str
    owner: tuple[uuid.UUID, uuid.UUID]
    stranger: tuple[uuid.UUID, uuid.UUID]
    cases: list[Case] = field(default_factory=list)


def upload(user: uuid.UUID, klass: uuid.UUID, kind: str, title: str, **extra: Any) -> SourceUploaded:
    event_id = uuid.uuid4()
    return SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind=kind,
        user_id=user,
        class_id=klass,  # type: ignore[arg-type]
        title=title,
        **extra,
    )


def stored(s: Stack, source: Path, name: str) -> str:
    target = Path(s.settings.storage_root) / "uploads" / f"{uuid.uuid4().hex[:8]}-{name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target.as_uri()


async def run_sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def publish_all(settings: Settings, events: list[SourceUploaded]) -> None:
    broker = make_broker(settings, service="tests")
    async with broker:
        for event in events:
            await publish(broker, event)


async def publish_raw(settings: Settings, value: bytes) -> None:
    broker = make_broker(settings, service="tests")
    async with broker:
        await broker.publish(value, topic=topics.SOURCE_UPLOADED, key=str(uuid.uuid4()).encode())


@pytest.fixture(scope="module")
def resilient_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("resilience")
    state = stack.up(home, replicas=2, stop_with_pid=os.getpid())
    env = state.env
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items()})
    settings = state.settings()
    owner, stranger = (uuid.uuid4(), uuid.uuid4()), (uuid.uuid4(), uuid.uuid4())
    from shared.db import owners

    async def seed() -> None:
        pool = await asyncpg.create_pool(env["LMGPA_DATABASE_URL"])
        for user, klass in (owner, stranger):
            await owners.ensure_user(pool, user_id=user)
            await owners.ensure_class(pool, class_id=klass, user_id=user)
        await pool.close()

    asyncio.run(seed())
    try:
        yield Stack(home, state, settings, env["LMGPA_DATABASE_URL"], owner, stranger)
    finally:
        stack.down(home, purge=True)
        os.environ.clear()  # the stack's settings must not leak into the tests that run after this module
        os.environ.update(saved)


def bad_corpus(s: Stack, tmp: Path) -> list[Case]:
    """At least 25 distinct malformed or hostile uploads, each with the reason it must fail with."""
    user, klass = s.owner
    other_user, other_class = s.stranger
    cases: list[Case] = []

    def media(name: str, kind: str, path: Path, expect: str) -> None:
        cases.append(
            Case(name, upload(user, klass, kind, name, storage_url=stored(s, path, path.name)), expect)
        )

    media("truncated mp3 (shared)", "audio", SHARED_BAD / "beets-check_truncated.mp3", "corrupt_audio")
    media(
        "flac with an absurd header (shared)",
        "audio",
        SHARED_BAD / "mutagen_ooming-header.flac",
        "corrupt_audio",
    )
    media("invalid pdf (shared)", "textbook", SHARED_BAD / "ocrmypdf_invalid.pdf", "corrupt_pdf")
    media("truncated png (shared)", "photo", SHARED_BAD / "pillow_truncated_image.png", "corrupt_image")
    for suffix, kind in ((".m4a", "audio"), (".jpg", "photo"), (".pdf", "textbook")):
        empty = tmp / f"empty{suffix}"
        empty.write_bytes(b"")
        media(f"zero bytes {suffix}", kind, empty, "empty_file")
    text_as_mp3 = tmp / "notes.mp3"
    text_as_mp3.write_text("these are not sound waves " * 50)
    media("text named .mp3", "audio", text_as_mp3, "unsupported_media")
    png = tmp / "diagram.png"
    save_image(note_photo("clean").image, png)
    png_as_m4a = tmp / "diagram.m4a"
    shutil.copyfile(png, png_as_m4a)
    media("png named .m4a", "audio", png_as_m4a, "unsupported_media")
    make_jpeg_named_pdf(tmp / "photo.pdf")
    media("jpeg named .pdf", "textbook", tmp / "photo.pdf", "unsupported_media")
    make_text_pdf(tmp / "real.pdf", pages=2)
    shutil.copyfile(tmp / "real.pdf", tmp / "real-as.jpg")
    media("pdf named .jpg", "photo", tmp / "real-as.jpg", "unsupported_media")
    media("decompression bomb", "photo", make_decompression_bomb(tmp / "bomb.png"), "image_too_large")
    make_encrypted_pdf(tmp / "locked.pdf", user_password="s3cret")
    media("pdf with a real password", "textbook", tmp / "locked.pdf", "pdf_encrypted")
    make_truncated_pdf(tmp / "cut.pdf")
    media("truncated pdf", "textbook", tmp / "cut.pdf", "corrupt_pdf")
    make_zero_page_pdf(tmp / "nopages.pdf")
    media("pdf without pages", "textbook", tmp / "nopages.pdf", "empty_pdf")
    media("garbled jpeg", "photo", make_garbled(png, tmp / "garbled.jpg"), "corrupt_image")
    save_image(blank_page(), tmp / "blank.png")
    media("photo of a blank page", "photo", tmp / "blank.png", "no_text")
    silence = tmp / "silence.wav"
    import numpy as np

    from tests.media.speech import write_wav

    write_wav(silence, np.zeros(16000 * 8, dtype=np.float32), 16000)
    media("eight seconds of silence", "audio", silence, "no_text")

    outside = tmp / "outside-secret.txt"
    outside.write_text("not yours")
    link = Path(s.settings.storage_root) / "uploads" / "sneaky-link.pdf"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    for name, url in (
        ("storage url with ..", f"{Path(s.settings.storage_root).as_uri()}/../../outside-secret.txt"),
        ("http storage url", "http://169.254.169.254/latest/meta-data"),
        ("s3 storage url", "s3://someone-elses-bucket/book.pdf"),
        ("file url on another host", "file://evil.example/etc/passwd"),
        ("symlink out of the root", link.as_uri()),
        ("missing file", f"{Path(s.settings.storage_root).as_uri()}/uploads/never-uploaded.pdf"),
    ):
        expect = "file_not_found" if name == "missing file" else "storage_url_refused"
        cases.append(Case(name, upload(user, klass, "textbook", name, storage_url=url), expect))

    cases.append(
        Case("whitespace-only note", upload(user, klass, "note", "blank", text=" \n\t "), "empty_text")
    )
    cases.append(
        Case(
            "note in a classmate's class",
            upload(user, other_class, "note", "x", text="mine"),
            "class_not_owned",
        )
    )
    cases.append(
        Case(
            "note in an unknown class", upload(user, uuid.uuid4(), "note", "x", text="lost"), "unknown_class"
        )
    )
    cases.append(
        Case(
            "row id that does not exist", upload(user, klass, "note", "x", row_id=uuid.uuid4()), "unknown_row"
        )
    )
    del other_user
    return cases


def note_cases(s: Stack, count: int, rng: random.Random) -> list[Case]:
    user, klass = s.owner
    out = []
    for n in range(count):
        sentences = [SUBJECTS[(n + k) % len(SUBJECTS)] for k in range(rng.randint(1, 40))]
        text = f"Note {n}. " + " ".join(sentences)
        out.append(
            Case(
                f"note {n}", upload(user, klass, "note", f"Note {n}", text=text), "completed", note_text=text
            )
        )
    return out


def with_new_student(s: Stack) -> Stack:
    """The stack with a student and class of their own, so a test's counts are its own alone."""
    owner, klass = uuid.uuid4(), uuid.uuid4()

    async def seed() -> None:
        from shared.db import owners

        pool = await asyncpg.create_pool(s.dsn)
        await owners.ensure_user(pool, user_id=owner)
        await owners.ensure_class(pool, class_id=klass, user_id=owner)
        await pool.close()

    asyncio.run(seed())
    return Stack(s.home, s.state, s.settings, s.dsn, (owner, klass), s.stranger)


def photo_cases(s: Stack, count: int, tmp: Path) -> list[Case]:
    """Photos of notes (clean, unevenly lit, rotated) that must complete."""
    cases = []
    for n in range(count):
        photo = tmp / f"photo{n}.jpg"
        save_image(note_photo(("clean", "uneven_light", "rotated")[n % 3]).image, photo)
        event = upload(*s.owner, "photo", f"Photo {n}", storage_url=stored(s, photo, photo.name))
        cases.append(Case(f"photo {n}", event, "completed"))
    return cases


def expected_chunks(text: str) -> int:
    """What the embedding worker must make of a note: the same chunker, the same model tokenizer."""
    return len(chunk_segments([Segment(text=text)], HfTokenCounter(), target_tokens=200, overlap_tokens=32))


async def outcomes(dsn: str, cases: list[Case]) -> dict[str, tuple[str, str | None]]:
    """name -> (status, error code) from the job table, or from the rejections for refused uploads."""
    ids = {c.event.source_id: c.name for c in cases}
    events = {c.event.event_id: c.name for c in cases}
    result: dict[str, tuple[str, str | None]] = {}
    for row in await run_sql(
        dsn,
        "SELECT source_id, status, error_code FROM ingest_jobs WHERE source_id = ANY($1::uuid[])",
        list(ids),
    ):
        result[ids[row["source_id"]]] = (row["status"], row["error_code"])
    for row in await run_sql(
        dsn,
        "SELECT event_id, error_code FROM rejected_messages WHERE event_id = ANY($1::uuid[])",
        list(events),
    ):
        result.setdefault(events[row["event_id"]], ("failed", row["error_code"]))
    return result


async def why(dsn: str, cases: list[Case]) -> list[dict[str, Any]]:
    """What the job table says of these cases' failures: stage, code and the stored reason."""
    rows = await run_sql(
        dsn,
        "SELECT source_id, stage, error_code, error_message FROM ingest_jobs WHERE source_id = ANY($1::uuid[])",
        [c.event.source_id for c in cases],
    )
    return [dict(r) for r in rows]


def wait_for(
    s: Stack, cases: list[Case], *, timeout: float, during: Any = None
) -> dict[str, tuple[str, str | None]]:
    """Wait until every case is finished; `during(fraction_finished)` runs between looks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = asyncio.run(outcomes(s.dsn, cases))
        finished = sum(status in ("completed", "failed") for status, _ in got.values())
        if finished == len(cases):
            return got
        if during is not None:
            during(finished / len(cases))
        time.sleep(0.5)
    got = asyncio.run(outcomes(s.dsn, cases))
    pending = [c.name for c in cases if got.get(c.name, ("missing", None))[0] not in ("completed", "failed")]
    raise AssertionError(f"not finished after {timeout} s: {pending[:20]}")


@dataclass
class Census:
    """Every vector of one student's class in both stores."""

    per_source: Counter[str]
    keys: Counter[tuple[str, int]]
    chroma_documents: int


def vector_census(s: Stack, owner: uuid.UUID, klass: uuid.UUID) -> Census:
    """Count every vector of the class in both stores, read from the running servers: Qdrant points per source
    and per (source, chunk index), and Chroma documents."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=s.state.env["LMGPA_QDRANT_URL"])
    per_source: Counter[str] = Counter()
    keys: Counter[tuple[str, int]] = Counter()
    offset = None
    while True:
        page, offset = client.scroll(
            "lmgpa_chunks", limit=1000, offset=offset, with_payload=["source_id", "chunk_index", "user_id"]
        )
        for point in page:
            payload = point.payload or {}
            if payload.get("user_id") == str(owner):
                per_source[payload["source_id"]] += 1
                keys[(payload["source_id"], payload["chunk_index"])] += 1
        if offset is None:
            break
    client.close()

    import chromadb

    chroma = chromadb.HttpClient(host="127.0.0.1", port=s.state.server("chroma").port)
    existing = {c.name for c in chroma.list_collections()}
    docs = sum(
        chroma.get_collection(name).count()
        for name in (f"{owner}_{klass}_{t}" for t in ("notes", "photos", "textbooks", "transcripts"))
        if name in existing
    )
    return Census(per_source, keys, docs)


def restart_dead_workers(s: Stack) -> None:
    """Start again every worker of the stack that is not running, and wait until each is ready."""
    started = []
    for i, worker in enumerate(s.state.workers):
        if not servers.is_running(worker.pid):
            s.state.workers[i] = stack.start_worker(s.state, worker.service, worker.replica)
            started.append(s.state.workers[i])
    s.state.save()  # the stack's teardown stops what the state file names
    for worker in started:
        stack.wait_ready(worker)


def alive_workers(s: Stack) -> list[stack.WorkerProcess]:
    return [w for w in s.state.workers if servers.is_running(w.pid)]


def test_a_corpus_of_bad_inputs_fails_cleanly_while_good_work_flows(
    resilient_stack: Stack, tmp_path: Path, report: Any
) -> None:
    s = resilient_stack
    bad = bad_corpus(s, tmp_path)
    good = note_cases(s, 12, random.Random(1))
    photo = tmp_path / "whiteboard.jpg"
    save_image(note_photo("clean").image, photo)
    good.append(
        Case(
            "a good photo",
            upload(*s.owner, "photo", "whiteboard", storage_url=stored(s, photo, "w.jpg")),
            "completed",
        )
    )
    speech = encode(
        speak("Vectors add tip to tail, and the dot product measures alignment.", tmp_path / "v.wav"),
        tmp_path / "v.mp3",
        "mp3",
    )
    good.append(
        Case(
            "a good recording",
            upload(*s.owner, "audio", "vectors", storage_url=stored(s, speech, "v.mp3")),
            "completed",
        )
    )
    assert len({c.name for c in bad}) >= 25

    mixed = bad + good
    random.Random(2).shuffle(mixed)
    asyncio.run(publish_all(s.settings, [c.event for c in mixed]))
    asyncio.run(publish_raw(s.settings, b'{"event_type": "SourceUploaded", "kind": "spreadsh'))
    got = wait_for(s, mixed, timeout=600)

    table = []
    for case in bad + good:
        status, code = got[case.name]
        table.append(f"  {case.name:<38} {status:<10} {code or ''}")
        if case.expect == "completed":
            assert status == "completed", (case.name, code)
        else:
            assert (status, code) == ("failed", case.expect), case.name
    report(f"\n{len(bad)} bad and {len(good)} good uploads:\n" + "\n".join(table))
    assert len(alive_workers(s)) == len(s.state.workers), "every worker is still up"
    reasons = asyncio.run(
        run_sql(
            s.dsn,
            "SELECT error_message FROM ingest_jobs WHERE status = 'failed' UNION ALL SELECT error_message FROM rejected_messages",
        )
    )
    assert all(r["error_message"] and len(r["error_message"]) > 10 for r in reasons), "every failure says why"


def test_chaos_nothing_lost_nothing_duplicated(resilient_stack: Stack, tmp_path: Path, report: Any) -> None:
    s = resilient_stack
    rng = random.Random(42)
    # A student of its own, so the counts below are this run's alone.
    s = with_new_student(s)
    owner, klass = s.owner
    cases = note_cases(s, 170, rng)
    cases += photo_cases(s, 12, tmp_path)
    for n in range(10):
        make_text_pdf(tmp_path / f"book{n}.pdf", pages=3 + n % 3)
        cases.append(
            Case(
                f"book {n}",
                upload(
                    owner,
                    klass,
                    "textbook",
                    f"Book {n}",
                    storage_url=stored(s, tmp_path / f"book{n}.pdf", f"b{n}.pdf"),
                ),
                "completed",
            )
        )
    for n in range(8):
        clip = encode(
            speak(f"Clip {n}. {SUBJECTS[n]} {SUBJECTS[(n + 3) % 8]}", tmp_path / f"c{n}.wav"),
            tmp_path / f"c{n}.ogg",
            "ogg",
        )
        cases.append(
            Case(
                f"clip {n}",
                upload(owner, klass, "audio", f"Clip {n}", storage_url=stored(s, clip, clip.name)),
                "completed",
            )
        )
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for n in range(6):
        broken = bad_dir / f"broken{n}.pdf"
        broken.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
        cases.append(
            Case(
                f"broken pdf {n}",
                upload(owner, klass, "textbook", "broken", storage_url=stored(s, broken, broken.name)),
                "corrupt_pdf",
            )
        )
    for n in range(4):
        cases.append(
            Case(
                f"foreign class {n}",
                upload(owner, s.stranger[1], "note", "x", text="not mine"),
                "class_not_owned",
            )
        )
    assert len(cases) >= 200
    rng.shuffle(cases)

    kills: Counter[str] = Counter()
    outages: list[str] = []
    started = time.monotonic()

    milestones = [n / 20 for n in range(1, 19)]  # a kill at every 5% of the work done, wherever it stands
    # Published in four waves (30%, 25%, 25%, 20% of the cases): the first now, each other one as an outage
    # begins. Each outage's fraction is below the share published before it, so none waits on another.
    cuts = [0, round(0.30 * len(cases)), round(0.55 * len(cases)), round(0.80 * len(cases)), len(cases)]
    waves = [[c.event for c in cases[a:b]] for a, b in itertools.pairwise(cuts)]

    def publish_wave() -> None:
        asyncio.run(publish_all(s.settings, waves.pop(0)))

    def chaos(fraction: float) -> None:
        """Restart what died; kill -9 a random worker at every milestone and at random; stop PostgreSQL
        at 15%, the Chroma server at 40% and the Qdrant server at 60% of the work, each for a few seconds,
        each just after the next wave of uploads is published: work is in flight during every outage, however
        fast the rest went (a fast stack once finished everything during the Chroma outage, and the Qdrant
        outage never came)."""
        for i, worker in enumerate(s.state.workers):
            if not servers.is_running(worker.pid):
                s.state.workers[i] = stack.start_worker(s.state, worker.service, worker.replica)
        s.state.save()  # the stack's teardown stops what the state file names
        due = 0  # one kill per milestone passed since the last look: a fast stack passes several at once
        while milestones and fraction >= milestones[0]:
            milestones.pop(0)
            due += 1
        if rng.random() < 0.2:
            due += 1
        alive = alive_workers(s)
        for victim in rng.sample(alive, min(due, len(alive))):
            os.killpg(victim.pid, signal.SIGKILL)
            kills[victim.service] += 1
        if fraction >= 0.15 and "postgres" not in outages:
            publish_wave()
            pg = s.state.server("postgres")
            servers.stop_postgres(pg, mode="immediate")
            time.sleep(4)
            servers.start_postgres(s.home, port=pg.port)
            outages.append("postgres")
        if fraction >= 0.4 and "chroma" not in outages:
            publish_wave()
            chroma = s.state.server("chroma")
            servers.stop_process(chroma)
            time.sleep(4)
            s.state.chroma = {**s.state.chroma, "pid": servers.start_chroma(s.home, port=chroma.port).pid}
            s.state.save()
            outages.append("chroma")
        if fraction >= 0.6 and "qdrant" not in outages:
            publish_wave()
            qdrant = s.state.server("qdrant")
            servers.stop_process(qdrant)
            time.sleep(4)
            restarted = servers.start_qdrant(s.home, port=qdrant.port, grpc_port=qdrant.grpc_port)
            s.state.qdrant = {**s.state.qdrant, "pid": restarted.pid}
            s.state.save()
            outages.append("qdrant")

    publish_wave()
    got = wait_for(s, cases, timeout=1200, during=chaos)
    for i, worker in enumerate(s.state.workers):  # leave everything running for the checks
        if not servers.is_running(worker.pid):
            s.state.workers[i] = stack.start_worker(s.state, worker.service, worker.replica)
    s.state.save()

    wrong = {
        c.name: (got[c.name], c.expect)
        for c in cases
        if (got[c.name][0] if c.expect == "completed" else got[c.name][1]) != c.expect
    }
    assert not wrong, (wrong, asyncio.run(why(s.dsn, [c for c in cases if c.name in wrong])))

    chunk_counts = {
        r["source_id"]: r["chunk_count"]
        for r in asyncio.run(
            run_sql(
                s.dsn,
                "SELECT source_id, chunk_count FROM ingest_jobs WHERE user_id = $1 AND status = 'completed'",
                owner,
            )
        )
    }
    completed = [c for c in cases if c.expect == "completed"]
    for case in completed:
        if case.note_text is not None:
            assert chunk_counts[case.event.source_id] == expected_chunks(case.note_text), case.name

    census = vector_census(s, owner, klass)
    per_source, keys, docs = census.per_source, census.keys, census.chroma_documents
    expected_total = sum(chunk_counts[c.event.source_id] for c in completed)
    missing = [
        c.name
        for c in completed
        if per_source.get(str(c.event.source_id), 0) != chunk_counts[c.event.source_id]
    ]
    duplicates = [k for k, n in keys.items() if n > 1]
    orphans = set(per_source) - {str(c.event.source_id) for c in completed}
    report(
        f"\nchaos: {len(cases)} sources ({len(completed)} good, {len(cases) - len(completed)} bad) in "
        f"{time.monotonic() - started:.0f} s; kill -9: {dict(kills)} ({sum(kills.values())} in all); outages: {outages}\n"
        f"expected chunks {expected_total}; qdrant points {sum(per_source.values())}; chroma documents {docs}; "
        f"sources with a wrong count {len(missing)}; duplicate chunks {len(duplicates)}; orphan sources {len(orphans)}"
    )
    assert sum(kills.values()) >= 15 and outages == ["postgres", "chroma", "qdrant"] and not waves
    assert sum(w.service == "indexing" for w in s.state.workers) == 2, "two indexing replicas, one Qdrant"
    assert not missing and not duplicates and not orphans
    assert sum(per_source.values()) == expected_total == docs


def test_sigterm_lets_in_flight_work_finish_or_be_redelivered(
    resilient_stack: Stack, tmp_path: Path, report: Any
) -> None:
    """SIGTERM every worker while a batch is in flight: each stops within its grace period through its own
    shutdown path, and after a restart every source completes with exactly its chunks in both stores."""
    s = resilient_stack
    restart_dead_workers(s)  # whatever the chaos run left dead
    s = with_new_student(s)
    owner, klass = s.owner
    cases = note_cases(s, 60, random.Random(7))
    cases += photo_cases(s, 16, tmp_path)  # a second or more of OCR each: plenty is queued at the SIGTERM
    for n in range(4):
        make_text_pdf(tmp_path / f"book{n}.pdf", pages=4 + n)
        book = stored(s, tmp_path / f"book{n}.pdf", f"book{n}.pdf")
        cases.append(
            Case(f"book {n}", upload(owner, klass, "textbook", f"Book {n}", storage_url=book), "completed")
        )

    asyncio.run(publish_all(s.settings, [c.event for c in cases]))
    deadline = time.monotonic() + 300
    finished = 0
    while time.monotonic() < deadline:  # stop everything once work is under way, most of it not done
        got = asyncio.run(outcomes(s.dsn, cases))
        finished = sum(status in ("completed", "failed") for status, _ in got.values())
        if finished >= len(cases) // 10:
            break
        time.sleep(0.2)
    assert finished < len(cases), "the SIGTERM must land while work is in flight"

    workers = list(s.state.workers)
    log_offsets = {w.pid: Path(w.log_path).stat().st_size for w in workers}
    sent = time.monotonic()
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
    stopped_after: dict[str, float] = {}
    while time.monotonic() < sent + 45:  # FastStream's graceful timeout is 30 s
        for worker in workers:
            name = f"{worker.service}-{worker.replica}"
            if name not in stopped_after and not servers.is_running(worker.pid):
                stopped_after[name] = time.monotonic() - sent
        if len(stopped_after) == len(workers):
            break
        time.sleep(0.1)
    stubborn = [w for w in workers if servers.is_running(w.pid)]
    for worker in stubborn:
        os.killpg(worker.pid, signal.SIGKILL)
    assert not stubborn, [f"{w.service}-{w.replica}" for w in stubborn]
    for worker in workers:
        with Path(worker.log_path).open("rb") as log:
            log.seek(log_offsets[worker.pid])
            tail = log.read().decode("utf-8", "replace")
        assert "worker_stopped" in tail, (
            f"{worker.service}-{worker.replica} did not shut down cleanly:\n{tail[-2000:]}"
        )
        assert "handler_crashed" not in tail and "internal_error" not in tail, tail[-2000:]
    after_stop = asyncio.run(outcomes(s.dsn, cases))
    left_over = len(cases) - sum(status in ("completed", "failed") for status, _ in after_stop.values())
    assert left_over > 0, "the workers stopped with work left, for their successors to take over"

    restart_dead_workers(s)
    got = wait_for(s, cases, timeout=600)
    assert all(got[c.name][0] == "completed" for c in cases), {
        c.name: got[c.name] for c in cases if got[c.name][0] != "completed"
    }
    chunk_counts = {
        r["source_id"]: r["chunk_count"]
        for r in asyncio.run(
            run_sql(s.dsn, "SELECT source_id, chunk_count FROM ingest_jobs WHERE user_id = $1", owner)
        )
    }
    for case in cases:
        if case.note_text is not None:
            assert chunk_counts[case.event.source_id] == expected_chunks(case.note_text), case.name
    census = vector_census(s, owner, klass)
    restart_dead_workers(s)  # leave the stack as the module found it
    expected_total = sum(chunk_counts[c.event.source_id] for c in cases)
    wrong = [
        c.name for c in cases if census.per_source[str(c.event.source_id)] != chunk_counts[c.event.source_id]
    ]
    duplicates = [k for k, n in census.keys.items() if n > 1]
    report(
        f"\nSIGTERM to {len(workers)} workers with {len(cases) - finished} of {len(cases)} sources unfinished; "
        f"stopped within {max(stopped_after.values()):.1f} s (slowest), all through their shutdown path, "
        f"leaving {left_over} unfinished; "
        f"after a restart: {sum(g[0] == 'completed' for g in got.values())} completed, expected chunks "
        f"{expected_total}, qdrant points {sum(census.per_source.values())}, chroma documents "
        f"{census.chroma_documents}, wrong counts {len(wrong)}, duplicates {len(duplicates)}"
    )
    assert not wrong and not duplicates
    assert sum(census.per_source.values()) == expected_total == census.chroma_documents
