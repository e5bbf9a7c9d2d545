"""tests/fixtures/events replayed through the running pipeline, as `lmgpa replay` publishes them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from shared.cli.backend import load_fixtures, publish_raw
from shared.db import owners
from shared.embedder import SentenceEmbedder
from tests.harness import Harness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPECTED: dict[str, dict[str, str]] = json.loads((FIXTURES / "events" / "expected.json").read_text())


async def seed_owners(harness: Harness) -> None:
    seed = json.loads((FIXTURES / "owners.json").read_text())
    for user in seed["users"]:
        await owners.ensure_user(harness.pool, user_id=uuid.UUID(user["id"]), full_name=user["name"])
    for class_ in seed["classes"]:
        await owners.ensure_class(
            harness.pool,
            class_id=uuid.UUID(class_["id"]),
            user_id=uuid.UUID(class_["user_id"]),
            name=class_["name"],
        )
    for note in seed["notes"]:
        await harness.pool.execute(
            "INSERT INTO notes (id, user_id, class_id, title, content) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (id) DO NOTHING",
            uuid.UUID(note["id"]),
            uuid.UUID(note["user_id"]),
            uuid.UUID(note["class_id"]),
            note["title"],
            note["content"],
        )


async def test_fixtures_replay_to_their_expected_outcomes_twice_over(pipeline: Harness) -> None:
    await seed_owners(pipeline)
    messages = {name: load_fixtures(FIXTURES / "events" / name) for name in EXPECTED}
    embedder = SentenceEmbedder(name="all-MiniLM-L6-v2")

    async def replay_and_check() -> dict[str, object]:
        await publish_raw(pipeline.settings, [m for batch in messages.values() for m in batch])
        outcome: dict[str, object] = {}
        users: dict[str, str] = {}
        for name, expected in EXPECTED.items():
            [(_, key, value)] = messages[name]
            source_id = uuid.UUID(key.decode())
            if "rejected" in expected:
                rejection = await pipeline.wait_rejection(key=key.decode())
                assert rejection.error_code == expected["rejected"], (name, rejection)
                assert rejection.error_message
                outcome[name] = rejection.error_code
                continue
            job = await pipeline.wait_job(source_id)
            assert job.status == expected["status"], (name, job.error_code, job.error_message)
            body = json.loads(value)
            query = embedder.embed_sync([expected["search"]])[0].tolist()
            hits = await pipeline.qdrant.search(
                query,
                user_id=body["user_id"],
                class_id=body["class_id"],
                content_type=expected["content_type"],
            )
            assert hits and hits[0].metadata["source_id"] == str(source_id), name
            outcome[name] = (job.status, job.chunk_count)
            users[name] = body["user_id"]
        # Each student's points, counted once every fixture is through (two fixtures share a student: counted
        # after the first alone, the second's chunks would be missing on the first pass only).
        for name, user_id in users.items():
            outcome[name] = (*outcome[name], await pipeline.qdrant.count(user_id=user_id))  # type: ignore[misc]
        return outcome

    first = await replay_and_check()
    await pipeline.drain()
    second = await replay_and_check()
    await pipeline.drain()
    assert second == first, "replaying the fixtures again must change nothing"
