"""Notes through the real pipeline: broker, PostgreSQL, Chroma server, local Qdrant, the real model."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from shared.chunking import HfTokenCounter
from shared.embedder import SentenceEmbedder
from shared.events import topics
from shared.events.models import SourceUploaded
from shared.text import decode_note
from shared.vectors.qdrant import dense_vector
from shared.vectors.records import chroma_collection_name, point_id
from tests.harness import Harness
from tests.media.documents import docx, png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LECTURE = [
    "The derivative of a function at a point is the slope of the tangent line to its graph at that point.",
    "We computed it as the limit of the difference quotient as the step size shrinks towards zero.",
    "The power rule says the derivative of x to the n is n times x to the n minus one.",
    "The product rule and the quotient rule handle products and ratios of differentiable functions.",
    "The chain rule differentiates a composition: the outer derivative evaluated at the inner function, "
    "times the inner derivative.",
    "Implicit differentiation finds slopes on curves such as circles that are not graphs of one function.",
    "Related rates problems connect how fast two quantities change, like a ladder sliding down a wall.",
    "Linear approximation uses the tangent line to estimate values of a function near a known point.",
    "The mean value theorem guarantees a point where the instantaneous rate equals the average rate.",
    "Critical points, where the derivative is zero or undefined, are candidates for local extrema.",
]


def long_note(paragraphs: int = 12) -> str:
    """A realistic multi-chunk lecture note (several hundred words)."""
    out = []
    for n in range(paragraphs):
        sentences = [LECTURE[(n + k) % len(LECTURE)] for k in range(5)]
        out.append(f"Section {n + 1}. " + " ".join(sentences))
    return "\n\n".join(out)


def note_event(user_id: uuid.UUID, class_id: uuid.UUID, text: str, **extra: object) -> SourceUploaded:
    event_id = uuid.uuid4()
    return SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind="note",
        user_id=user_id,
        class_id=class_id,
        title="Lecture 4: Derivatives",
        text=text,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(name="all-MiniLM-L6-v2")


async def test_note_ends_in_both_stores_with_the_designs_ids_and_metadata(
    pipeline: Harness, embedder: SentenceEmbedder
) -> None:
    user_id, class_id = await pipeline.new_owner()
    text = long_note()
    event = note_event(user_id, class_id, text, note_type="lecture")
    await pipeline.publish(event)
    job = await pipeline.wait_job(event.source_id)

    assert job.status == "completed", job.error_message
    n = job.chunk_count
    assert n is not None and n >= 3, "a note of several hundred words makes several chunks"
    assert [s.stage for s in job.stages] == ["upload", "embedding", "indexing"]
    assert all(s.status == "completed" for s in job.stages)

    # Qdrant: deterministic point ids, tenant payload, the right vectors.
    points = await pipeline.qdrant.points_of_source(user_id=user_id, source_id=event.source_id)
    assert sorted(str(p.id) for p in points) == sorted(point_id(event.source_id, i) for i in range(n))
    counter = HfTokenCounter()
    for p in points:
        payload = p.payload or {}
        assert payload["user_id"] == str(user_id)
        assert payload["class_id"] == str(class_id)
        assert payload["content_type"] == "notes"
        assert payload["source_id"] == str(event.source_id)
        assert payload["title"] == "Lecture 4: Derivatives"
        assert payload["date"] == job.created_at.date().isoformat()
        assert payload["document_id"] == f"note_{event.source_id}_{payload['chunk_index']}"
        assert counter.count(payload["text"]) <= counter.max_tokens, "no chunk may exceed the model's input"
        expected = embedder.embed_sync([payload["text"]])[0]
        assert float(np.dot(np.asarray(dense_vector(p)), expected)) > 0.999

    # Chroma: the design's collection name, document ids and metadata, the same vectors.
    collection = chroma_collection_name(user_id, class_id, "notes")
    docs = await pipeline.chroma.documents_of_source(collection=collection, source_id=event.source_id)
    assert sorted(docs["ids"]) == sorted(f"note_{event.source_id}_{i}" for i in range(n))
    for meta in docs["metadatas"]:
        assert {"user_id", "class_id", "content_type", "source_id", "title", "date", "chunk_index"} <= set(
            meta
        )
        assert meta["user_id"] == str(user_id) and meta["content_type"] == "notes"
    by_id = {str(p.id): np.asarray(dense_vector(p)) for p in points}
    for doc_id, vector, meta in zip(docs["ids"], docs["embeddings"], docs["metadatas"], strict=True):
        assert doc_id.endswith(f"_{meta['chunk_index']}")
        qdrant_vector = by_id[point_id(event.source_id, int(meta["chunk_index"]))]
        assert float(np.dot(np.asarray(vector), qdrant_vector)) > 0.999

    # The chunks together hold every word of the note.
    words = set(text.split())
    assert words <= {w for doc in docs["documents"] for w in doc.split()}

    # The row: vector_id set, content stored.
    row = await pipeline.pool.fetchrow(
        "SELECT content, vector_id, note_type FROM notes WHERE id = $1", event.source_id
    )
    assert row["vector_id"] == f"note_{event.source_id}"
    assert row["content"] == text and row["note_type"] == "lecture"


async def test_replaying_the_same_upload_twice_changes_nothing(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    event = note_event(user_id, class_id, long_note(6))
    await pipeline.publish(event)
    job = await pipeline.wait_job(event.source_id)
    assert job.status == "completed"

    async def snapshot() -> tuple[object, ...]:
        points = await pipeline.qdrant.points_of_source(user_id=user_id, source_id=event.source_id)
        docs = await pipeline.chroma.documents_of_source(
            collection=chroma_collection_name(user_id, class_id, "notes"), source_id=event.source_id
        )
        rows = await pipeline.pool.fetchval("SELECT count(*) FROM notes WHERE user_id = $1", user_id)
        jobs_ = await pipeline.pool.fetchval("SELECT count(*) FROM ingest_jobs WHERE user_id = $1", user_id)
        return (
            sorted(str(p.id) for p in points),
            sorted(docs["ids"]),
            rows,
            jobs_,
            await pipeline.qdrant.count(user_id=user_id),
        )

    before = await snapshot()
    for _ in range(2):
        await pipeline.publish(event)
    await pipeline.drain()
    assert await snapshot() == before
    assert before[2] == 1 and before[3] == 1
    assert len(before[0]) == job.chunk_count == before[4]


async def test_a_new_event_for_an_existing_row_reuses_it_and_overwrites_its_vectors(
    pipeline: Harness,
) -> None:
    user_id, class_id = await pipeline.new_owner()
    first = note_event(user_id, class_id, long_note(5))
    await pipeline.publish(first)
    assert (await pipeline.wait_job(first.source_id)).status == "completed"
    count = await pipeline.qdrant.count(user_id=user_id)

    again = note_event(user_id, class_id, long_note(5), row_id=first.source_id)
    assert again.event_id != first.event_id and again.source_id == first.source_id
    await pipeline.publish(again)
    await pipeline.drain()
    assert await pipeline.qdrant.count(user_id=user_id) == count
    assert await pipeline.pool.fetchval("SELECT count(*) FROM notes WHERE user_id = $1", user_id) == 1


async def test_another_user_never_finds_it(pipeline: Harness, embedder: SentenceEmbedder) -> None:
    owner, class_id = await pipeline.new_owner()
    event = note_event(
        owner, class_id, "Mitochondria are the powerhouse of the cell; they make ATP by respiration."
    )
    await pipeline.publish(event)
    assert (await pipeline.wait_job(event.source_id)).status == "completed"
    query = embedder.embed_sync(["what makes ATP in the cell?"])[0].tolist()

    mine = await pipeline.qdrant.search(query, user_id=owner, class_id=class_id)
    assert mine and mine[0].metadata["source_id"] == str(event.source_id)
    # The indexing worker wrote the BM25 vector too: the words find it, in every mode.
    for mode in ("sparse", "hybrid"):
        by_words = await pipeline.qdrant.search(
            query, query_text="mitochondria ATP", mode=mode, user_id=owner, class_id=class_id
        )
        assert by_words and by_words[0].metadata["source_id"] == str(event.source_id), mode
    mine_chroma = await pipeline.chroma.search(
        query, user_id=owner, class_id=class_id, content_types=["notes"]
    )
    assert mine_chroma and mine_chroma[0].metadata["source_id"] == str(event.source_id)

    stranger, their_class = await pipeline.new_owner()
    for class_ in (class_id, their_class, None):
        hits = await pipeline.qdrant.search(query, user_id=stranger, class_id=class_, limit=50)
        hits += await pipeline.qdrant.search(
            query, query_text="mitochondria ATP", mode="hybrid", user_id=stranger, class_id=class_, limit=50
        )
        assert all(h.metadata["user_id"] == str(stranger) for h in hits)
        assert str(event.source_id) not in {h.metadata["source_id"] for h in hits}
    for class_ in (class_id, their_class):
        hits = await pipeline.chroma.search(
            query, user_id=stranger, class_id=class_, content_types=["notes"], limit=50
        )
        assert str(event.source_id) not in {h.metadata["source_id"] for h in hits}


async def test_refused_uploads_are_stored_with_a_reason_and_the_workers_go_on(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    other_user, other_class = await pipeline.new_owner()

    foreign = note_event(user_id, other_class, "Notes filed under somebody else's class.")
    await pipeline.publish(foreign)
    rejected = await pipeline.wait_rejection(event_id=foreign.event_id)
    assert rejected.error_code == "class_not_owned"
    assert str(other_class) in rejected.error_message
    assert await pipeline.pool.fetchval("SELECT count(*) FROM notes WHERE id = $1", foreign.source_id) == 0

    # A row that exists but belongs to another student.
    theirs = note_event(other_user, other_class, "Their own note.")
    await pipeline.publish(theirs)
    assert (await pipeline.wait_job(theirs.source_id)).status == "completed"
    hijack = note_event(user_id, class_id, "Trying to take over their row.", row_id=theirs.source_id)
    await pipeline.publish(hijack)
    assert (await pipeline.wait_rejection(event_id=hijack.event_id)).error_code == "row_not_owned"
    assert (
        await pipeline.pool.fetchval("SELECT content FROM notes WHERE id = $1", theirs.source_id)
        == "Their own note."
    )

    unknown_kind_id = uuid.uuid4()
    body = note_event(user_id, class_id, "x").model_dump(mode="json") | {
        "kind": "spreadsheet",
        "event_id": str(unknown_kind_id),
    }
    import json

    await pipeline.publish_raw(topics.SOURCE_UPLOADED, str(uuid.uuid4()).encode(), json.dumps(body).encode())
    rejected = await pipeline.wait_rejection(event_id=unknown_kind_id)
    assert rejected.error_code == "invalid_event" and "kind" in rejected.error_message

    malformed_key = str(uuid.uuid4())
    await pipeline.publish_raw(
        topics.SOURCE_UPLOADED, malformed_key.encode(), b'{"event_type": "SourceUploaded", "kind": '
    )
    rejected = await pipeline.wait_rejection(key=malformed_key)
    assert rejected.error_code == "invalid_event" and "json" in rejected.error_message.lower()

    # The workers are still up: a good note behind the bad ones goes through.
    good = note_event(user_id, class_id, "Integration by parts undoes the product rule.")
    await pipeline.publish(good)
    assert (await pipeline.wait_job(good.source_id)).status == "completed"


async def test_a_note_that_is_not_text_fails_as_not_text_and_the_workers_go_on(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()

    # What a backend publishes when it reads a Word file as if it were a note, and a PNG the same way.
    for binary, looks_like in ((docx(), "ZIP archive"), (png(), "PNG image")):
        event = note_event(user_id, class_id, decode_note(binary))
        await pipeline.publish(event)
        rejected = await pipeline.wait_rejection(event_id=event.event_id)
        assert rejected.error_code == "not_text"
        assert "not text" in rejected.error_message and looks_like in rejected.error_message
        assert rejected.message_key == str(event.source_id)  # `lmgpa status <source>` shows it
        assert await pipeline.pool.fetchval("SELECT count(*) FROM notes WHERE id = $1", event.source_id) == 0

    # A UTF-16 note file, decoded as the CLI does, is text; and the workers went on.
    good = note_event(user_id, class_id, decode_note(long_note(2).encode("utf-16")))
    await pipeline.publish(good)
    job = await pipeline.wait_job(good.source_id)
    assert job.status == "completed" and job.chunk_count
