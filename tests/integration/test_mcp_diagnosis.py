"""The diagnosis tools through a real MCP client: ``lmgpa mcp`` over stdio against the running pipeline's
PostgreSQL, Qdrant and Chroma, for a completed, a failed and a stuck source of one student, and the refusal of a
classmate's source (even one shared with the student) exactly as a source that does not exist.

- completed: a note through the real pipeline (upload, embedding, indexing workers);
- failed: a photo through the real upload worker, then the real OCR handler on its stage input (the stored
  PhotoUploaded), which refuses the corrupt file, recorded as the worker records a permanent failure;
- stuck: a recording through the real upload worker; no transcription worker runs, and the tracker reports the
  stage started with some progress, then nothing: with LMGPA_STALL_SECONDS=1 the tools call it stuck.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from services.ocr.adapters import PostgresPhotoRows, TesseractPhotos
from services.ocr.handlers import extract_text
from shared.db import jobs, outbox, sources
from shared.errors import PermanentError
from shared.events.models import AudioUploaded, PhotoUploaded, SourceUploaded
from shared.storage import LocalStorage
from shared.tracking import PostgresTracker
from tests.harness import Harness
from tests.integration.test_mcp import call, text_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
NOTE_TEXT = (
    "Photosynthesis in the chloroplast: the light reactions split water and make ATP and NADPH. "
    "The Calvin cycle then fixes carbon dioxide with the enzyme rubisco into three-carbon sugars. "
    "Stomata open to let carbon dioxide in and close to save water on hot afternoons."
)
OTHER_NOTE_TEXT = "Mitosis has four phases: prophase, metaphase, anaphase and telophase, then cytokinesis."
B_NOTE_TEXT = "B's private notes: rubisco fixes carbon dioxide in the Calvin cycle of the chloroplast."
QUERY = "rubisco fixes carbon dioxide in the Calvin cycle"
STALL_SECONDS = 1.0


@dataclass(frozen=True)
class Sources:
    """One student's completed, failed and stuck sources, and a classmate's completed note."""

    user_a: uuid.UUID
    class_a: uuid.UUID
    completed: uuid.UUID
    other_note: uuid.UUID
    failed: uuid.UUID
    stuck: uuid.UUID
    user_b: uuid.UUID
    class_b: uuid.UUID
    b_note: uuid.UUID


def upload(user: uuid.UUID, klass: uuid.UUID, kind: str, title: str, **payload: Any) -> SourceUploaded:
    """What the backend publishes for a new source."""
    event_id = uuid.uuid4()
    return SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind=kind,
        user_id=user,
        class_id=klass,
        title=title,
        **payload,
    )


async def stage_input(pipeline: Harness, source_id: uuid.UUID, topic: str) -> str:
    """The stage input the upload worker published for a source (kept in the outbox until applied)."""
    for _ in range(300):
        found = [
            p for p in await outbox.pending(pipeline.pool, source_id=source_id) if p.event.topic == topic
        ]
        if found:
            return found[0].event.payload.decode()
        await asyncio.sleep(0.2)
    raise TimeoutError(
        f"no {topic} input for {source_id}: {await jobs.get_job(pipeline.pool, source_id=source_id)}"
    )


@pytest.fixture(scope="module")
async def made(pipeline: Harness) -> Sources:
    """The sources, each made by the pipeline's own code."""
    a, class_a = await pipeline.new_owner()
    b, class_b = await pipeline.new_owner()
    storage = Path(pipeline.settings.storage_root)

    completed = upload(a, class_a, "note", "Photosynthesis notes", text=NOTE_TEXT)
    other = upload(a, class_a, "note", "Cell division", text=OTHER_NOTE_TEXT)
    theirs = upload(b, class_b, "note", "B's photosynthesis", text=B_NOTE_TEXT)

    (storage / str(a)).mkdir(parents=True, exist_ok=True)
    corrupt = storage / str(a) / "whiteboard.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG, the upload was cut short")
    photo = upload(a, class_a, "photo", "Whiteboard photo", storage_url=f"{a}/whiteboard.jpg")
    recording = storage / str(a) / "lecture.wav"
    recording.write_bytes(b"RIFF" + bytes(4096))  # the upload worker only checks that it is not empty
    audio = upload(a, class_a, "audio", "Lecture recording", storage_url=f"{a}/lecture.wav")

    for event in (completed, other, theirs, photo, audio):
        await pipeline.publish(event)
    for event in (completed, other, theirs):
        job = await pipeline.wait_job(event.source_id)
        assert job.status == "completed" and job.chunk_count, job

    # The failed photo: the OCR handler itself reads the corrupt file, and its refusal is recorded as the
    # worker records a permanent error (shared.worker.Worker._fail).
    photo_input = PhotoUploaded.model_validate_json(
        await stage_input(pipeline, photo.source_id, PhotoUploaded.TOPIC)
    )
    with pytest.raises(PermanentError) as refused:
        await extract_text(
            photo_input,
            photos=TesseractPhotos(LocalStorage(storage), max_pixels=pipeline.settings.max_image_pixels),
            rows=PostgresPhotoRows(pipeline.pool),
            tracker=PostgresTracker(pipeline.pool),
        )
    async with pipeline.pool.acquire() as conn, conn.transaction():
        await jobs.fail_job(
            conn,
            source_id=photo.source_id,
            stage="ocr",
            code=refused.value.code,
            reason=refused.value.reason,
        )
        await sources.set_status(conn, kind="photo", source_id=photo.source_id, status="failed")

    # The stuck recording: its transcription began and reported a first piece, then nothing more came.
    AudioUploaded.model_validate_json(await stage_input(pipeline, audio.source_id, AudioUploaded.TOPIC))
    tracker = PostgresTracker(pipeline.pool)
    await tracker.started(audio.source_id, "transcription", units_total=1800, unit="seconds")
    await tracker.progressed(audio.source_id, "transcription", units_done=600)
    await asyncio.sleep(STALL_SECONDS * 1.5)  # past the stall bound the MCP server is given

    # B shares the note with A over an accepted connection: the diagnosis still answers as for a missing one.
    await pipeline.pool.execute(
        "INSERT INTO classmate_connections (user_id, classmate_user_id, status) VALUES ($1, $2, 'accepted')",
        b,
        a,
    )
    await pipeline.pool.execute(
        "INSERT INTO shared_content (content_type, content_id, shared_by_user_id, shared_with_user_id) "
        "VALUES ('note', $1, $2, $3)",
        theirs.source_id,
        b,
        a,
    )
    return Sources(
        a,
        class_a,
        completed.source_id,
        other.source_id,
        photo.source_id,
        audio.source_id,
        b,
        class_b,
        theirs.source_id,
    )


@asynccontextmanager
async def mcp_client(pipeline: Harness, user: uuid.UUID, tmp_path: Path) -> AsyncIterator[Client]:
    """``python -m shared.cli.main mcp --user U`` against the pipeline's servers, and a client over stdio."""
    cfg = pipeline.settings
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "shared.cli.main", "mcp", "--user", str(user)],
        env={
            "LMGPA_CHROMA_URL": cfg.chroma_url,
            "LMGPA_DATABASE_URL": cfg.database_dsn(),
            "LMGPA_QDRANT_URL": str(cfg.qdrant_url),
            "LMGPA_QDRANT_GRPC_PORT": str(cfg.qdrant_grpc_port),
            "LMGPA_QDRANT_COLLECTION": cfg.qdrant_collection,
            "LMGPA_STALL_SECONDS": str(STALL_SECONDS),
            "LMGPA_SEARCH_MODE": "sparse",  # the service's default, pinned: the ranks below depend on it
            "LMGPA_DEV_HOME": str(tmp_path / "no-stack"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
        cwd=REPO,
    )
    with (tmp_path / "mcp-server.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=180) as client:
            yield client


def capture(name: str, answer: Any) -> None:
    """Keep an answer for the examples file (written at the end of the module)."""
    CAPTURED[name] = answer


CAPTURED: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def write_examples(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Write what the tools answered to the session's temporary folder, for a reader (not an assertion)."""
    yield
    if CAPTURED:
        path = tmp_path_factory.mktemp("mcp-diagnosis") / "answers.json"
        path.write_text(json.dumps(CAPTURED, indent=2) + "\n")
        print(f"\nthe diagnosis tools' answers: {path}")


async def test_diagnose_source_for_a_completed_a_failed_and_a_stuck_source(
    pipeline: Harness, made: Sources, tmp_path: Path
) -> None:
    async with mcp_client(pipeline, made.user_a, tmp_path) as as_a:
        assert {"diagnose_source", "why_not_found", "qdrant_search"} <= {
            t.name for t in (await as_a.list_tools()).tools
        }

        done = await call(as_a, "diagnose_source", source_id=str(made.completed))
        capture("diagnose_source completed", done)
        job = await jobs.get_job(pipeline.pool, source_id=made.completed)
        assert job is not None and job.chunk_count
        n = job.chunk_count
        assert (done["status"], done["state"], done["kind"], done["title"]) == (
            "completed",
            "completed",
            "note",
            "Photosynthesis notes",
        )
        assert [s["stage"] for s in done["stages"]] == ["upload", "embedding", "indexing"]
        assert all(s["state"] == "done" and s["attempts"] == 1 for s in done["stages"])
        assert done["vector_id"] == f"note_{made.completed}"
        chunks = done["chunks"]
        assert chunks["postgres_job"] == chunks["postgres_indexed"] == n
        q, c = await pipeline.source_vectors(made.user_a, made.class_a, made.completed)
        assert chunks["qdrant_total"] == chunks["qdrant_visible"] == q == n
        assert chunks["chroma_total"] == chunks["chroma_visible"] == c == n
        assert done["verdict"].startswith("completed and searchable")

        by_title = await call(as_a, "diagnose_source", title="photosynthesis")
        assert by_title["source_id"] == str(made.completed), "a part of the title, any case, finds it"

        failed = await call(as_a, "diagnose_source", source_id=str(made.failed))
        capture("diagnose_source failed", failed)
        assert (failed["status"], failed["stage"], failed["error_code"]) == ("failed", "ocr", "corrupt_image")
        assert failed["verdict"].startswith("failed at ocr: corrupt_image: ")
        assert failed["row_status_column"] == "extraction_status" and failed["row_status"] == "failed"
        ocr = {s["stage"]: s for s in failed["stages"]}["ocr"]
        assert (ocr["status"], ocr["attempts"], ocr["error_code"]) == ("failed", 1, "corrupt_image")
        assert failed["chunks"]["qdrant_total"] == failed["chunks"]["chroma_total"] == 0
        assert failed["vector_id"] is None

        stuck = await call(as_a, "diagnose_source", title="Lecture recording")
        capture("diagnose_source stuck", stuck)
        assert (stuck["status"], stuck["state"], stuck["stage"]) == ("processing", "stalled", "transcription")
        transcription = {s["stage"]: s for s in stuck["stages"]}["transcription"]
        assert (transcription["state"], transcription["units_done"], transcription["units_total"]) == (
            "stalled",
            600,
            1800,
        )
        assert stuck["verdict"].startswith("stuck in transcription (working, 600/1800 seconds done) since ")
        assert "no progress for" in stuck["verdict"] and stuck["idle_seconds"] >= STALL_SECONDS
        assert stuck["pending_inputs"] == [AudioUploaded.TOPIC]


async def test_why_not_found_ranks_the_source_in_both_stores_and_says_why(
    pipeline: Harness, made: Sources, tmp_path: Path
) -> None:
    async with mcp_client(pipeline, made.user_a, tmp_path) as as_a:
        klass = str(made.class_a)
        found = await call(as_a, "why_not_found", class_id=klass, query=QUERY, source_id=str(made.completed))
        capture("why_not_found completed", found)
        ranks = {r["store"]: r for r in found["ranks"]}
        assert set(ranks) == {"qdrant", "chroma"}
        assert ranks["qdrant"]["ranking"] == "sparse (bm25)"
        for rank in ranks.values():
            assert (rank["chunk_rank"], rank["source_rank"]) == (1, 1), rank
            assert "rubisco" in rank["excerpt"] and rank["best_score"] > 0
        assert found["reasons"] == ["nothing stops it: its best chunk ranks first in both stores"]
        assert found["best_sources"]["qdrant"][0]["source_id"] == str(made.completed)
        assert found["best_sources"]["chroma"][0]["source_id"] == str(made.completed)
        assert str(made.b_note) not in json.dumps(found), "B's note is never a candidate"

        # A query about the other note: the photosynthesis note ranks below it in Chroma (dense).
        below = await call(
            as_a,
            "why_not_found",
            class_id=klass,
            query="phases of mitosis and cytokinesis",
            source_id=str(made.completed),
        )
        capture("why_not_found completed, a query about another note", below)
        ranks = {r["store"]: r for r in below["ranks"]}
        assert ranks["chroma"]["source_rank"] == 2 and ranks["chroma"]["sources_above"] == ["Cell division"]
        assert ranks["qdrant"]["chunk_rank"] != 1 and any(r.startswith("in qdrant") for r in below["reasons"])

        failed = await call(as_a, "why_not_found", class_id=klass, query=QUERY, source_id=str(made.failed))
        capture("why_not_found failed", failed)
        assert any(
            r.startswith("it is not completed: failed at ocr: corrupt_image") for r in failed["reasons"]
        )
        assert "it has no chunks in either store: nothing of it can be found" in failed["reasons"]
        assert all(r["chunk_rank"] is None and r["chunks"] == 0 for r in failed["ranks"])

        stuck = await call(as_a, "why_not_found", class_id=klass, query=QUERY, title="lecture recording")
        assert stuck["source_id"] == str(made.stuck)
        capture("why_not_found stuck", stuck)
        assert any(r.startswith("it is not completed: stuck in transcription") for r in stuck["reasons"])
        assert "it has no chunks in either store yet" in stuck["reasons"]

        wrong_class = await call(
            as_a, "why_not_found", class_id=str(uuid.uuid4()), query=QUERY, source_id=str(made.completed)
        )
        assert any(r.startswith(f"it is in class {made.class_a}") for r in wrong_class["reasons"])

        anywhere = await call(as_a, "why_not_found", class_id=klass, query=QUERY)
        capture("why_not_found without a source", anywhere)
        assert anywhere["ranks"] == [] and anywhere["source_id"] is None
        assert [s["title"] for s in anywhere["best_sources"]["chroma"]][:2] == [
            "Photosynthesis notes",
            "Cell division",
        ]


async def test_qdrant_search_reads_qdrant_as_the_search_api_does(
    pipeline: Harness, made: Sources, tmp_path: Path
) -> None:
    async with mcp_client(pipeline, made.user_a, tmp_path) as as_a:
        found = await call(as_a, "qdrant_search", class_id=str(made.class_a), query=QUERY, limit=3)
        capture("qdrant_search", found)
        assert found["mode"] == "sparse" and {h["score_kind"] for h in found["hits"]} == {"bm25"}
        hits = found["hits"]
        assert hits and hits[0]["metadata"]["source_id"] == str(made.completed)
        assert {h["metadata"]["user_id"] for h in hits} == {str(made.user_a)}
        assert all(h["collection"] == pipeline.settings.qdrant_collection for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        dense = await call(
            as_a, "qdrant_search", class_id=str(made.class_a), query=QUERY, mode="dense", limit=3
        )
        assert dense["mode"] == "dense" and {h["score_kind"] for h in dense["hits"]} == {"cosine"}
        assert dense["hits"][0]["metadata"]["source_id"] == str(made.completed)
        # The same search in Chroma agrees on the best chunk.
        chroma = await call(as_a, "chroma_search", class_id=str(made.class_a), query=QUERY, limit=1)
        assert chroma["hits"][0]["document_id"] == dense["hits"][0]["document_id"]

        theirs = await call(as_a, "qdrant_search", class_id=str(made.class_b), query=QUERY)
        nobodys = await call(as_a, "qdrant_search", class_id=str(uuid.uuid4()), query=QUERY)
        assert theirs["hits"] == nobodys["hits"] == []


async def test_a_classmates_source_is_refused_exactly_like_a_missing_one(
    pipeline: Harness, made: Sources, tmp_path: Path
) -> None:
    async with mcp_client(pipeline, made.user_a, tmp_path) as as_a:
        calls = {
            "diagnose_source by id": (
                "diagnose_source",
                {"source_id": str(made.b_note)},
                {"source_id": str(uuid.uuid4())},
            ),
            "diagnose_source by title": (
                "diagnose_source",
                {"title": "B's photosynthesis"},
                {"title": "No such title"},
            ),
            "why_not_found": (
                "why_not_found",
                {"class_id": str(made.class_b), "query": QUERY, "source_id": str(made.b_note)},
                {"class_id": str(made.class_b), "query": QUERY, "source_id": str(uuid.uuid4())},
            ),
            "why_not_found by title": (
                "why_not_found",
                {"class_id": str(made.class_a), "query": QUERY, "title": "B's photosynthesis"},
                {"class_id": str(made.class_a), "query": QUERY, "title": "No such title"},
            ),
        }
        for what, (tool, theirs, missing) in calls.items():
            refused = await as_a.call_tool(tool, theirs)
            absent = await as_a.call_tool(tool, missing)
            assert refused.is_error and absent.is_error, what
            assert refused.structured_content is None and absent.structured_content is None, what
            assert text_of(refused) == text_of(absent), what
            assert str(made.b_note) not in text_of(refused) and str(made.user_b) not in text_of(refused)
        capture("refusal", text_of(refused))

    # B's own server answers for it.
    async with mcp_client(pipeline, made.user_b, tmp_path) as as_b:
        own = await call(as_b, "diagnose_source", source_id=str(made.b_note))
        assert own["status"] == "completed" and own["verdict"].startswith("completed and searchable")


async def test_a_completed_source_missing_from_one_store_is_called_out(
    pipeline: Harness, made: Sources, tmp_path: Path
) -> None:
    # Its Chroma documents go (as a Chroma outage with lost data would leave it): Qdrant still has the chunk.
    assert (
        await pipeline.chroma.delete(user_id=made.user_a, class_id=made.class_a, source_id=made.other_note)
        == 1
    )
    async with mcp_client(pipeline, made.user_a, tmp_path) as as_a:
        diagnosis = await call(as_a, "diagnose_source", source_id=str(made.other_note))
        capture("diagnose_source completed, gone from Chroma", diagnosis)
        assert diagnosis["chunks"]["qdrant_visible"] == 1 and diagnosis["chunks"]["chroma_total"] == 0
        assert diagnosis["verdict"].startswith("completed, but Chroma has 0 of 1 visible chunks")
        why = await call(
            as_a,
            "why_not_found",
            class_id=str(made.class_a),
            query="mitosis phases",
            source_id=str(made.other_note),
        )
        capture("why_not_found completed, gone from Chroma", why)
        assert why["reasons"][0] == "its chunks are only in qdrant: chroma has none"
