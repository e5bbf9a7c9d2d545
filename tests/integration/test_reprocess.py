"""Reprocessing through the real pipeline: a new generation replaces the old vectors in one step for readers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from shared.events.models import SourceReprocessRequested
from tests.harness import Harness
from tests.integration.test_pipeline import long_note, note_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def reprocess(user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID) -> SourceReprocessRequested:
    event_id = uuid.uuid4()
    return SourceReprocessRequested(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        source_id=source_id,
        kind="note",
        user_id=user_id,
        class_id=class_id,
        from_stage="embedding",
    )


async def generation_of(pipeline: Harness, source_id: uuid.UUID) -> tuple[str, int]:
    row = await pipeline.pool.fetchrow(
        "SELECT status, generation FROM ingest_jobs WHERE source_id = $1", source_id
    )
    return row["status"], row["generation"]


async def test_a_reprocess_replaces_the_vectors_atomically_for_readers(
    pipeline: Harness, report: Any
) -> None:
    user_id, class_id = await pipeline.new_owner()
    first = note_event(user_id, class_id, long_note(4))
    await pipeline.publish(first)
    old = await pipeline.wait_job(first.source_id)
    assert old.status == "completed"

    # The backend edits the note (now much longer), then asks for it to be processed again.
    await pipeline.pool.execute("UPDATE notes SET content = $2 WHERE id = $1", first.source_id, long_note(14))
    query = [0.0] * 383 + [1.0]
    seen: dict[str, list[tuple[int, ...]]] = {"qdrant": [], "chroma": []}
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            hits = await pipeline.qdrant.search(query, user_id=user_id, class_id=class_id, limit=200)
            docs = await pipeline.chroma.search(
                query, user_id=user_id, class_id=class_id, content_types=["notes"], limit=200
            )
            for store, found in (("qdrant", hits), ("chroma", docs)):
                seen[store].append(tuple(sorted({int(h.metadata["generation"]) for h in found})))
            await asyncio.sleep(0.02)

    watching = asyncio.create_task(reader())
    await asyncio.sleep(0.3)
    await pipeline.publish(reprocess(user_id, class_id, first.source_id))
    for _ in range(600):
        status, generation = await generation_of(pipeline, first.source_id)
        if generation == 1 and status in ("completed", "failed"):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    stop.set()
    await watching

    assert (status, generation) == ("completed", 1)
    new = await pipeline.wait_job(first.source_id)
    assert new.chunk_count is not None and old.chunk_count is not None and new.chunk_count > old.chunk_count
    # In each store, readers saw one generation at a time, never both and never none, old before new.
    for store, polls in seen.items():
        assert all(len(g) == 1 for g in polls), (store, sorted(set(polls)))
        order = [g[0] for g in polls]
        assert order[0] == 0 and order[-1] == 1 and order == sorted(order), store
    report(
        f"\nreaders' polls during the reprocess: { {k: len(v) for k, v in seen.items()} }, all single-generation"
    )
    # Only the new generation is left, all of it, in both stores.
    points = await pipeline.qdrant.points_of_source(user_id=user_id, source_id=first.source_id)
    assert len(points) == new.chunk_count
    assert {(p.payload or {})["generation"] for p in points} == {1} and all(
        (p.payload or {})["visible"] for p in points
    )
    assert await pipeline.source_vectors(user_id, class_id, first.source_id) == (
        new.chunk_count,
        new.chunk_count,
    )
    row = await pipeline.pool.fetchrow("SELECT vector_id FROM notes WHERE id = $1", first.source_id)
    assert row["vector_id"] == f"note_{first.source_id}"


async def test_a_reprocess_is_refused_for_a_running_or_foreign_source(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    stranger, their_class = await pipeline.new_owner()
    event = note_event(user_id, class_id, long_note(3))
    await pipeline.publish(event)
    assert (await pipeline.wait_job(event.source_id)).status == "completed"

    foreign = reprocess(stranger, their_class, event.source_id)
    await pipeline.publish(foreign)
    assert (await pipeline.wait_rejection(event_id=foreign.event_id)).error_code == "row_not_owned"

    busy_source = note_event(user_id, class_id, long_note(30))
    await pipeline.publish(busy_source)
    await pipeline.wait_job(busy_source.source_id)
    await pipeline.pool.execute(
        "UPDATE ingest_jobs SET status = 'processing' WHERE source_id = $1", busy_source.source_id
    )
    busy = reprocess(user_id, class_id, busy_source.source_id)
    await pipeline.publish(busy)
    assert (await pipeline.wait_rejection(event_id=busy.event_id)).error_code == "source_busy"
    assert await generation_of(pipeline, event.source_id) == ("completed", 0)
