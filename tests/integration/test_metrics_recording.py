"""The runner records what happens to real messages on the real servers: failures by error code, dead letters
and stage counters, in the registry the workers' /metrics serves (the pipeline runs in this process)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from shared.events import topics
from tests.harness import Harness
from tests.integration.test_pipeline import note_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.2)
    assert check(), "the metric never moved"  # type: ignore[operator]


async def test_a_refused_note_counts_as_failed_by_its_code(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    failed = sample("lmgpa_sources_failed_total", stage="upload", error_code="empty_text")
    handled = sample("lmgpa_stage_duration_seconds_count", stage="upload", outcome="failed")
    event = note_event(user_id, class_id, "   \n\t  ")
    await pipeline.publish(event)  # refused at upload: no job, a rejection and a SourceFailed
    await until(
        lambda: sample("lmgpa_sources_failed_total", stage="upload", error_code="empty_text") == failed + 1
    )
    assert sample("lmgpa_stage_duration_seconds_count", stage="upload", outcome="failed") == handled + 1


async def test_an_undecodable_message_counts_as_a_dead_letter(pipeline: Harness) -> None:
    letters = sample("lmgpa_dead_letters_total", service="embedding", error_code="invalid_event")
    failed = sample("lmgpa_sources_failed_total", stage="embedding", error_code="invalid_event")
    await pipeline.publish_raw(topics.TEXT_EXTRACTED, str(uuid.uuid4()).encode(), b"{not json")
    await until(
        lambda: (
            sample("lmgpa_dead_letters_total", service="embedding", error_code="invalid_event") == letters + 1
        )
    )
    # Its key names a source: that source fails too, counted once.
    await until(
        lambda: (
            sample("lmgpa_sources_failed_total", stage="embedding", error_code="invalid_event") == failed + 1
        )
    )


async def test_a_note_moves_each_stage_once(pipeline: Harness) -> None:
    user_id, class_id = await pipeline.new_owner()
    completed = sample("lmgpa_sources_completed_total")
    embedded = sample("lmgpa_stage_completed_total", stage="embedding")
    waits = sample("lmgpa_queue_wait_seconds_count", stage="indexing")
    event = note_event(user_id, class_id, "The mitochondrion makes ATP by oxidative phosphorylation.")
    await pipeline.publish(event)
    job = await pipeline.wait_job(event.source_id)
    assert job.status == "completed", job.error_message
    await until(lambda: sample("lmgpa_sources_completed_total") >= completed + 1)
    assert sample("lmgpa_stage_completed_total", stage="embedding") >= embedded + 1
    assert sample("lmgpa_queue_wait_seconds_count", stage="indexing") >= waits + 1
