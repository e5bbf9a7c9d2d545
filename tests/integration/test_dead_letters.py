"""The dead-letter topic end to end: poison messages, a spent retry budget, and an operator's replay."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import pytest

from shared.cli.backend import read_dead_letters, replay_dead_letters
from shared.devstack import servers
from shared.devstack.servers import ServerProcess
from shared.events import topics
from tests.harness import Harness
from tests.integration.test_pipeline import note_event
from tests.servers import restart_chroma

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def wait_letter(pipeline: Harness, predicate: object, timeout: float = 60.0) -> list[object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = [d for d in await read_dead_letters(pipeline.settings) if predicate(d)]  # type: ignore[operator]
        if letters:
            return letters
        await asyncio.sleep(0.3)
    raise TimeoutError("no such dead letter")


async def test_an_undecodable_message_is_dead_lettered_with_its_bytes_and_committed(
    pipeline: Harness,
) -> None:
    key = str(uuid.uuid4())
    poison = b"\x00\xffnot an event at all"
    await pipeline.publish_raw(topics.TEXT_EXTRACTED, key.encode(), poison)
    [letter] = await wait_letter(pipeline, lambda d: d.original_key == key)
    assert letter.consumer == "embedding" and letter.error_code == "invalid_event"  # type: ignore[attr-defined]
    assert base64.b64decode(letter.original_value_b64) == poison  # type: ignore[attr-defined]
    await pipeline.drain()  # committed: not looped


async def test_a_spent_retry_budget_fails_the_source_and_a_replay_after_the_fix_completes_it(
    pipeline: Harness, chroma_server: ServerProcess, devstack_home: object
) -> None:
    user_id, class_id = await pipeline.new_owner()
    event = note_event(
        user_id, class_id, "Ohm's law: the current through a conductor is proportional to the voltage."
    )
    servers.stop_process(chroma_server)
    try:
        await pipeline.publish(event)
        job = await pipeline.wait_job(event.source_id, timeout=120)
        assert job.status == "failed" and job.error_code == "chroma_unavailable", (
            job.error_code,
            job.error_message,
        )
        assert "deliveries" in (job.error_message or "")
        letters = await wait_letter(pipeline, lambda d: d.original_key == str(event.source_id))
        assert letters[0].original_topic == topics.CHUNKS_EMBEDDED and letters[0].attempts == 3  # type: ignore[attr-defined]
    finally:
        restarted = restart_chroma(chroma_server, devstack_home)  # type: ignore[arg-type]
        assert restarted.port == chroma_server.port
    assert await replay_dead_letters(pipeline.settings, letters) == 1  # type: ignore[arg-type]
    job = await pipeline.wait_job(event.source_id)
    deadline = time.monotonic() + 60
    while job.status != "completed" and time.monotonic() < deadline:
        job = await pipeline.wait_job(event.source_id)
    assert job.status == "completed", job.error_message
    assert await pipeline.source_vectors(user_id, class_id, event.source_id) == (1, 1)
