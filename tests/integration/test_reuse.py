"""Reuse of identical uploads through the real pipeline (chunking, embedding and indexing workers, PostgreSQL,
Qdrant and Chroma servers): a second upload of the same book copies the first one's vectors under its own ids,
owner, class and title, with the same rows and status trail; deletes never cross; other settings never reuse."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from shared.events.models import SourceDeleted, SourceReprocessRequested, SourceUploaded
from shared.vectors.qdrant import BM25, DENSE
from shared.vectors.records import chroma_collection_name
from tests.harness import Harness
from tests.media.pdfs import make_edition_pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PAGES = 30  # two page ranges of 25: two parts, several batches
AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS reuse_status_audit (id UUID, old_status TEXT, new_status TEXT, at TIMESTAMPTZ
  DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION reuse_audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR OLD.embedding_status IS DISTINCT FROM NEW.embedding_status THEN
    INSERT INTO reuse_status_audit (id, old_status, new_status)
    VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.embedding_status END, NEW.embedding_status);
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS reuse_audit_books ON textbook_downloads;
CREATE TRIGGER reuse_audit_books AFTER INSERT OR UPDATE ON textbook_downloads
  FOR EACH ROW EXECUTE FUNCTION reuse_audit_status();
"""


@pytest.fixture(scope="module")
async def books(pipeline: Harness) -> AsyncIterator[Harness]:
    """The session's pipeline plus the chunking worker (books go through it), and the status audit."""
    chunking = importlib.import_module("services.chunking.app")
    await pipeline.pool.execute(AUDIT_SQL)
    async with chunking.app.lifespan_context():
        await chunking.app.start()
        try:
            yield pipeline
        finally:
            await chunking.app.stop()


def book_file(pipeline: Harness, edition: str) -> Path:
    """A fresh book of its own bytes, in a folder outside storage (each upload stores its own copy)."""
    path = Path(pipeline.settings.storage_root).parent / "books" / f"{edition}.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    make_edition_pdf(path, pages=PAGES, edition=edition)
    return path


def upload(pipeline: Harness, book: Path, user: uuid.UUID, klass: uuid.UUID, title: str) -> SourceUploaded:
    """A textbook upload of a copy of the book, as the backend sends it."""
    stored = Path(pipeline.settings.storage_root) / str(user) / f"{uuid.uuid4().hex[:8]}-{book.name}"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(book.read_bytes())
    event_id = uuid.uuid4()
    return SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind="textbook",
        user_id=user,
        class_id=klass,
        title=title,
        storage_url=stored.as_uri(),
        media_type="application/pdf",
    )


async def uploaded(pipeline: Harness, event: SourceUploaded) -> dict[str, Any]:
    """Publish an upload, wait until it finished, and return its job row (with the reuse columns)."""
    await pipeline.publish(event)
    job = await pipeline.wait_job(event.source_id, timeout=180)
    assert job.status == "completed", (job.error_code, job.error_message)
    row = await pipeline.pool.fetchrow("SELECT * FROM ingest_jobs WHERE source_id = $1", event.source_id)
    return dict(row)


async def vectors(pipeline: Harness, event: SourceUploaded) -> tuple[list[Any], dict[str, Any]]:
    """A source's Qdrant points and Chroma documents (with vectors)."""
    points = await pipeline.qdrant.points_of_source(user_id=event.user_id, source_id=event.source_id)
    docs = await pipeline.chroma.documents_of_source(
        collection=chroma_collection_name(event.user_id, event.class_id, "textbooks"),
        source_id=event.source_id,
    )
    return points, docs


async def trail(pipeline: Harness, source_id: uuid.UUID) -> dict[str, Any]:
    """Everything the pipeline writes about a source in PostgreSQL, with nothing that names it."""
    stages = await pipeline.pool.fetch(
        "SELECT stage, status, attempts, units_done, units_total, unit FROM ingest_stages WHERE source_id = $1 "
        "ORDER BY stage",
        source_id,
    )
    pieces = await pipeline.pool.fetch(
        "SELECT stage, piece_index, piece_count, units, result FROM ingest_pieces WHERE source_id = $1 "
        "ORDER BY stage, piece_index",
        source_id,
    )
    batches = await pipeline.pool.fetch(
        "SELECT generation, part_index, part_count, batch_index, batch_count, chunk_count FROM ingest_batches "
        "WHERE source_id = $1 ORDER BY part_index, batch_index",
        source_id,
    )
    book = await pipeline.pool.fetchrow(
        "SELECT page_count, total_chunks, embedding_status FROM textbook_downloads WHERE id = $1", source_id
    )
    statuses = await pipeline.pool.fetch(
        "SELECT old_status, new_status FROM reuse_status_audit WHERE id = $1 ORDER BY at", source_id
    )
    return {
        "stages": [dict(s) for s in stages],
        "pieces": [dict(p) for p in pieces],
        "batches": [dict(b) for b in batches],
        "book": dict(book) if book else None,
        "status_trail": [(s["old_status"], s["new_status"]) for s in statuses],
    }


async def first_and_second(books: Harness, edition: str) -> tuple[SourceUploaded, SourceUploaded]:
    """Student A uploads a book, then student B the same bytes into a class of theirs; both completed."""
    book = book_file(books, edition)
    user_a, class_a = await books.new_owner()
    user_b, class_b = await books.new_owner()
    first = upload(books, book, user_a, class_a, "Thermodynamics (A's scan)")
    job_a = await uploaded(books, first)
    assert job_a["reused"] is False and job_a["content_sha256"] is not None
    second = upload(books, book, user_b, class_b, "Heat engines for B")
    job_b = await uploaded(books, second)
    assert job_b["reused"] is True, "the second upload of the same bytes copies the first's results"
    assert (job_b["content_sha256"], job_b["pipeline_version"]) == (
        job_a["content_sha256"],
        job_a["pipeline_version"],
    )
    assert job_b["chunk_count"] == job_a["chunk_count"] > PAGES // 2
    return first, second


def donor_strings(event: SourceUploaded) -> set[str]:
    return {str(event.source_id), str(event.user_id), str(event.class_id), event.title}


def leaks(value: Any, forbidden: set[str]) -> list[str]:
    """Every forbidden string found in a value (nested), as substrings of its text."""
    text = repr(value)
    return [f for f in forbidden if f in text]


async def test_a_second_upload_copies_vectors_rows_and_trail_under_its_own_ids(books: Harness) -> None:
    first, second = await first_and_second(books, "copy")
    points_a, docs_a = await vectors(books, first)
    points_b, docs_b = await vectors(books, second)
    count = len(points_a)
    assert len(points_b) == count and len(docs_a["ids"]) == len(docs_b["ids"]) == count

    # Qdrant: the same dense and BM25 vectors and text per chunk, under B's ids and payload only.
    by_chunk_a = {p.payload["chunk_index"]: p for p in points_a}  # type: ignore[index]
    assert not {str(p.id) for p in points_a} & {str(p.id) for p in points_b}
    for point in points_b:
        payload = dict(point.payload or {})
        twin = by_chunk_a[payload["chunk_index"]]
        assert (payload["user_id"], payload["class_id"], payload["source_id"], payload["title"]) == (
            str(second.user_id),
            str(second.class_id),
            str(second.source_id),
            second.title,
        )
        assert payload["visible"] is True and payload["generation"] == 0
        assert payload["document_id"] == f"textbook_{second.source_id}_{payload['chunk_index']}"
        assert not leaks(payload, donor_strings(first)), payload
        assert isinstance(point.vector, dict) and isinstance(twin.vector, dict)
        assert point.vector[DENSE] == twin.vector[DENSE]
        assert point.vector[BM25] == twin.vector[BM25], "the BM25 vector is copied too"
        assert payload["text"] == (twin.payload or {})["text"]
    # Chroma: B's collection, B's ids and metadata, the same embeddings.
    assert all(i.startswith(f"textbook_{second.source_id}_") for i in docs_b["ids"])
    assert not leaks(docs_b["metadatas"], donor_strings(first))
    embedding_a = dict(zip(docs_a["ids"], docs_a["embeddings"], strict=True))
    for doc_id, embedding in zip(docs_b["ids"], docs_b["embeddings"], strict=True):
        twin_id = doc_id.replace(str(second.source_id), str(first.source_id))
        # Chroma's cosine space keeps vectors normalised: a copy matches to float32 rounding.
        assert np.allclose(embedding, embedding_a[twin_id], atol=1e-6)

    # PostgreSQL: the same stages (units and all), pieces, batches, book row and status trail.
    trail_a, trail_b = await trail(books, first.source_id), await trail(books, second.source_id)
    assert [s["stage"] for s in trail_b["stages"]] == ["chunking", "embedding", "indexing", "upload"]
    assert all(s["status"] == "completed" for s in trail_b["stages"])
    assert trail_b == trail_a
    assert trail_b["book"] == {"page_count": PAGES, "total_chunks": count, "embedding_status": "completed"}
    assert trail_b["status_trail"] == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "completed"),
    ]
    job_b = dict(
        await books.pool.fetchrow("SELECT * FROM ingest_jobs WHERE source_id = $1", second.source_id)
    )
    assert not leaks(job_b, donor_strings(first))

    # B finds its own copy; A's search never returns B's, nor B's A's.
    for asker, other in ((second, first), (first, second)):
        hits = await books.qdrant.search(
            query_text="Carnot isothermal expansion", user_id=asker.user_id, class_id=asker.class_id, limit=5
        )
        assert hits and {h.metadata["source_id"] for h in hits} == {str(asker.source_id)}
        assert str(other.source_id) not in repr(hits)


async def test_deleting_the_first_upload_leaves_the_second_searchable(books: Harness) -> None:
    first, second = await first_and_second(books, "delete-first")
    count = len((await vectors(books, second))[0])
    await delete(books, first)
    assert await books.source_vectors(first.user_id, first.class_id, first.source_id, "textbook") == (0, 0)
    assert await books.source_vectors(second.user_id, second.class_id, second.source_id, "textbook") == (
        count,
        count,
    )
    hits = await books.qdrant.search(
        query_text="adiabatic compression", user_id=second.user_id, class_id=second.class_id, limit=3
    )
    assert hits and all(h.metadata["source_id"] == str(second.source_id) for h in hits)

    # With the first gone, a third upload of the same bytes copies the second.
    user_c, class_c = await books.new_owner()
    third = upload(books, book_file(books, "delete-first"), user_c, class_c, "C's book")
    assert (await uploaded(books, third))["reused"] is True
    assert await books.source_vectors(user_c, class_c, third.source_id, "textbook") == (count, count)


async def test_deleting_the_second_upload_leaves_the_first(books: Harness) -> None:
    first, second = await first_and_second(books, "delete-second")
    count = len((await vectors(books, first))[0])
    await delete(books, second)
    assert await books.source_vectors(second.user_id, second.class_id, second.source_id, "textbook") == (0, 0)
    assert await books.source_vectors(first.user_id, first.class_id, first.source_id, "textbook") == (
        count,
        count,
    )
    hits = await books.qdrant.search(
        query_text="piston reservoir", user_id=first.user_id, class_id=first.class_id, limit=3
    )
    assert hits and all(h.metadata["source_id"] == str(first.source_id) for h in hits)


async def test_other_settings_never_reuse_and_a_reprocess_after_a_model_change_recomputes(
    books: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_app = importlib.import_module("services.upload.app")  # imported once the pipeline set its env
    book = book_file(books, "settings")
    user_a, class_a = await books.new_owner()
    first = upload(books, book, user_a, class_a, "A")
    job_a = await uploaded(books, first)

    # The upload worker now runs under other chunker settings: the same bytes are not served A's result.
    changed = books.settings.model_copy(update={"chunk_tokens": books.settings.chunk_tokens + 8})
    monkeypatch.setattr(upload_app.fingerprints, "settings", changed)
    user_b, class_b = await books.new_owner()
    second = upload(books, book, user_b, class_b, "B")
    job_b = await uploaded(books, second)
    assert job_b["reused"] is False
    assert job_b["pipeline_version"] != job_a["pipeline_version"]
    assert job_b["content_sha256"] == job_a["content_sha256"]

    # Back to the first settings, then a model change: a reprocess of a reused source recomputes.
    monkeypatch.setattr(upload_app.fingerprints, "settings", books.settings)
    user_c, class_c = await books.new_owner()
    third = upload(books, book, user_c, class_c, "C")
    assert (await uploaded(books, third))["reused"] is True
    new_model = books.settings.model_copy(update={"embedding_model_name": "all-MiniLM-L6-v2-retrained"})
    monkeypatch.setattr(upload_app.fingerprints, "settings", new_model)
    event_id = uuid.uuid4()
    await books.publish(
        SourceReprocessRequested(
            event_id=event_id,
            correlation_id=event_id,
            producer="backend",
            source_id=third.source_id,
            kind="textbook",
            user_id=user_c,
            class_id=class_c,
        )
    )
    for _ in range(900):
        row = await books.pool.fetchrow("SELECT * FROM ingest_jobs WHERE source_id = $1", third.source_id)
        if row["generation"] == 1 and row["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.2)
    assert (row["generation"], row["status"]) == (1, "completed"), row["error_message"]
    assert row["reused"] is False, "a reprocess computes; it never copies"
    assert row["pipeline_version"] not in (job_a["pipeline_version"], job_b["pipeline_version"])
    points, docs = await vectors(books, third)
    assert len(points) == len(docs["ids"]) == row["chunk_count"]
    assert {p.payload["generation"] for p in points} == {1}  # type: ignore[index]


async def test_a_copy_that_comes_out_short_falls_back_to_computing(books: Harness) -> None:
    """The donor's vectors vanish (a delete racing the copy): the new upload is computed, not half-copied."""
    book = book_file(books, "short")
    user_a, class_a = await books.new_owner()
    first = upload(books, book, user_a, class_a, "A")
    job_a = await uploaded(books, first)
    # Half the donor's points go without a tombstone, as if a delete were under way in the stores.
    points, _ = await vectors(books, first)
    await books.qdrant.client.delete(
        books.qdrant.collection,
        points_selector=models.PointIdsList(points=[p.id for p in points[: len(points) // 2]]),
        wait=True,
    )
    user_b, class_b = await books.new_owner()
    second = upload(books, book, user_b, class_b, "B")
    job_b = await uploaded(books, second)
    assert job_b["reused"] is False
    assert job_b["chunk_count"] == job_a["chunk_count"]
    assert await books.source_vectors(user_b, class_b, second.source_id, "textbook") == (
        job_a["chunk_count"],
        job_a["chunk_count"],
    )
    stages = await books.pool.fetch(
        "SELECT stage, status FROM ingest_stages WHERE source_id = $1 ORDER BY stage", second.source_id
    )
    assert [(s["stage"], s["status"]) for s in stages] == [
        ("chunking", "completed"),
        ("embedding", "completed"),
        ("indexing", "completed"),
        ("upload", "completed"),
    ]


async def delete(pipeline: Harness, event: SourceUploaded) -> None:
    """Delete one source, as the backend does, and wait until both stores have it gone."""
    event_id = uuid.uuid4()
    deletion = SourceDeleted(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        user_id=event.user_id,
        class_id=event.class_id,
        source_id=event.source_id,
        kind="textbook",
    )
    await pipeline.publish(deletion)
    await pipeline.wait_deletion(deletion.event_id)
