"""Deletes through the real pipeline: before, during and after indexing, and of whole classes and users."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from shared.events.models import SourceDeleted, SourceUploaded
from tests.harness import Harness
from tests.integration.test_pipeline import long_note, note_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def deletion(
    user_id: uuid.UUID, class_id: uuid.UUID | None = None, source_id: uuid.UUID | None = None
) -> SourceDeleted:
    event_id = uuid.uuid4()
    return SourceDeleted(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        user_id=user_id,
        class_id=class_id,
        source_id=source_id,
        kind="note" if source_id else None,
    )


async def test_delete_after_indexing_leaves_no_vector(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    event = note_event(user_id, class_id, long_note(8))
    await pipeline.publish(event)
    job = await pipeline.wait_job(event.source_id)
    assert job.status == "completed"
    assert await pipeline.source_vectors(user_id, class_id, event.source_id) == (
        job.chunk_count,
        job.chunk_count,
    )

    delete = deletion(user_id, class_id, event.source_id)
    await pipeline.publish(delete)
    removed = await pipeline.wait_deletion(delete.event_id)
    assert removed == 2 * (job.chunk_count or 0), "every vector, from both stores"
    assert await pipeline.source_vectors(user_id, class_id, event.source_id) == (0, 0)


async def test_delete_before_indexing_refuses_the_upload_and_leaves_no_vector(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    event = note_event(user_id, class_id, long_note(4))
    delete = deletion(user_id, class_id, event.source_id)
    await pipeline.publish(delete)
    await pipeline.wait_deletion(delete.event_id)
    await pipeline.publish(event)
    rejection = await pipeline.wait_rejection(event_id=event.event_id)
    assert rejection.error_code == "deleted"
    await pipeline.drain()
    assert await pipeline.source_vectors(user_id, class_id, event.source_id) == (0, 0)


async def test_deletes_racing_indexing_leave_no_zombie_vectors(pipeline: Harness) -> None:
    rng = random.Random(7)
    user_id, class_id = await pipeline.new_owner()
    events = [note_event(user_id, class_id, long_note(rng.randint(3, 10))) for _ in range(12)]
    for event in events:
        await pipeline.publish(event)
    deletes = []
    for event in events:
        await asyncio.sleep(rng.uniform(0.0, 0.6))  # some land before, some during, some after indexing
        deletes.append(deletion(user_id, class_id, event.source_id))
        await pipeline.publish(deletes[-1])
    for delete in deletes:
        await pipeline.wait_deletion(delete.event_id)
    await pipeline.drain()
    for event in events:
        assert await pipeline.source_vectors(user_id, class_id, event.source_id) == (0, 0), event.source_id
        job = await pipeline.pool.fetchrow(
            "SELECT status, error_code FROM ingest_jobs WHERE source_id = $1", event.source_id
        )
        assert job is None or job["status"] in ("completed", "failed"), "nothing may stay stuck in processing"
    assert await pipeline.qdrant.count(user_id=user_id) == 0


async def test_deleting_a_class_then_the_user_touches_nobody_else(pipeline: Harness) -> None:
    user_id, class_a = await pipeline.new_owner()
    class_b = uuid.uuid4()
    from shared.db import owners

    await owners.ensure_class(pipeline.pool, class_id=class_b, user_id=user_id, name="Second class")
    neighbour, their_class = await pipeline.new_owner()
    uploads: list[SourceUploaded] = [
        note_event(user_id, class_a, "Class A: the mean value theorem."),
        note_event(user_id, class_a, "Class A: Rolle's theorem is its special case."),
        note_event(user_id, class_b, "Class B: Newton's laws of motion."),
        note_event(neighbour, their_class, "Another student's note about torque."),
    ]
    for event in uploads:
        await pipeline.publish(event)
    for event in uploads:
        assert (await pipeline.wait_job(event.source_id)).status == "completed"

    drop_class = deletion(user_id, class_a)
    await pipeline.publish(drop_class)
    await pipeline.wait_deletion(drop_class.event_id)
    assert [await pipeline.source_vectors(user_id, class_a, e.source_id) for e in uploads[:2]] == [
        (0, 0),
        (0, 0),
    ]
    assert (await pipeline.source_vectors(user_id, class_b, uploads[2].source_id))[0] > 0

    drop_user = deletion(user_id)
    await pipeline.publish(drop_user)
    await pipeline.wait_deletion(drop_user.event_id)
    assert await pipeline.qdrant.count(user_id=user_id) == 0
    assert await pipeline.source_vectors(user_id, class_b, uploads[2].source_id) == (0, 0)
    assert (await pipeline.source_vectors(neighbour, their_class, uploads[3].source_id)) == (1, 1)
