"""The job tables' rules on the real PostgreSQL: what counts as an attempt."""

from __future__ import annotations

import uuid

import pytest

from shared.db import jobs
from tests.harness import Harness

pytestmark = [pytest.mark.integration]


async def test_an_attempt_is_a_start_not_every_event_of_a_working_stage(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    source_id = uuid.uuid4()
    await jobs.open_job(
        pipeline.pool,
        source_id=source_id,
        kind="textbook",
        user_id=user_id,
        class_id=class_id,
        title="Book",
        correlation_id=source_id,
        upload_event_id=source_id,
    )
    await jobs.enqueue_stage(pipeline.pool, source_id=source_id, stage="embedding")
    for _ in range(3):  # three parts of one book reach the embedding stage
        await jobs.start_stage(pipeline.pool, source_id=source_id, stage="embedding", unit="parts")
    job = await jobs.get_job(pipeline.pool, source_id=source_id)
    assert job is not None
    [stage] = [s for s in job.stages if s.stage == "embedding"]
    assert (stage.attempts, job.attempts) == (1, 1)
    await jobs.start_stage(pipeline.pool, source_id=source_id, stage="indexing")  # the next stage: no retry
    job = await jobs.get_job(pipeline.pool, source_id=source_id)
    assert job is not None and job.attempts == 1

    await jobs.fail_job(
        pipeline.pool, source_id=source_id, stage="embedding", code="chroma_unavailable", reason="down"
    )
    assert await jobs.reopen_job(pipeline.pool, source_id=source_id)  # an operator's replay
    await jobs.start_stage(pipeline.pool, source_id=source_id, stage="embedding")
    job = await jobs.get_job(pipeline.pool, source_id=source_id)
    assert job is not None
    [stage] = [s for s in job.stages if s.stage == "embedding"]
    assert stage.attempts == 2 and stage.status == "processing"
    assert job.attempts == 2, "the job counts the retried stage's attempts"


async def test_a_stage_that_failed_before_it_could_start_was_still_attempted(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    source_id = uuid.uuid4()
    await jobs.open_job(
        pipeline.pool,
        source_id=source_id,
        kind="audio",
        user_id=user_id,
        class_id=class_id,
        title="Lecture",
        correlation_id=source_id,
        upload_event_id=source_id,
    )
    await jobs.enqueue_stage(pipeline.pool, source_id=source_id, stage="transcription")
    # The recording is refused before the worker could report the stage started (too long, unreadable).
    assert await jobs.fail_job(
        pipeline.pool, source_id=source_id, stage="transcription", code="too_long", reason="5 h of audio"
    )
    job = await jobs.get_job(pipeline.pool, source_id=source_id)
    assert job is not None and job.status == "failed"
    [stage] = [s for s in job.stages if s.stage == "transcription"]
    assert (stage.status, stage.attempts, job.attempts) == ("failed", 1, 1)
    assert stage.started_at is not None

    # A broken event for a stage that has no row yet: the failure inserts it, attempted once too.
    other = uuid.uuid4()
    await jobs.open_job(
        pipeline.pool,
        source_id=other,
        kind="note",
        user_id=user_id,
        class_id=class_id,
        title="Note",
        correlation_id=other,
        upload_event_id=other,
    )
    await jobs.fail_job(pipeline.pool, source_id=other, stage="indexing", code="invalid_event", reason="bad")
    job = await jobs.get_job(pipeline.pool, source_id=other)
    assert job is not None
    assert [(s.stage, s.status, s.attempts) for s in job.stages] == [("indexing", "failed", 1)]
    assert job.attempts == 1

    # The demo's table: exactly the sources asked for, whatever else is newer.
    both = await jobs.list_jobs(pipeline.pool, source_ids=[source_id, other], limit=10)
    assert {j.source_id for j in both} == {source_id, other}
    assert [j.source_id for j in await jobs.list_jobs(pipeline.pool, source_ids=[source_id])] == [source_id]
    assert await jobs.list_jobs(pipeline.pool, source_ids=[]) == []
