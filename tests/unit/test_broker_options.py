"""The subscriber options every worker shares: groups, offsets, commits, and how a stopping worker leaves."""

from __future__ import annotations

import asyncio
import os

import pytest
from faststream.middlewares import AckPolicy

from shared.broker import consumer_options, make_broker
from shared.events import topics
from shared.settings import Settings


@pytest.fixture(autouse=True)
def no_lmgpa_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() here are the defaults, whatever a stack started earlier in this process exported."""
    for name in [n for n in os.environ if n.startswith("LMGPA_")]:
        monkeypatch.delenv(name)


def test_a_worker_commits_only_after_success_and_reads_from_the_earliest_offset() -> None:
    options = consumer_options(Settings(), service="ocr", topic=topics.PHOTO_UPLOADED)
    assert options["group_id"] == "lmgpa.ocr"
    assert options["ack_policy"] is AckPolicy.NACK_ON_ERROR
    assert options["auto_offset_reset"] == "earliest"  # the embedded broker's "latest" is wrong
    assert "batch" not in options


def test_a_second_input_of_a_worker_has_a_group_of_its_own() -> None:
    options = consumer_options(Settings(), service="transcription", topic=topics.AUDIO_PIECES)
    assert options["group_id"] == "lmgpa.transcription.pieces"


def test_by_default_a_stopping_worker_leaves_its_group_at_once() -> None:
    options = consumer_options(Settings(), service="embedding", topic=topics.TEXT_EXTRACTED, batch=True)
    assert "group_instance_id" not in options
    assert options["batch"] is True and options["max_records"] == Settings().batch_max_records


def test_the_embedding_worker_takes_a_few_parts_per_batch() -> None:
    from faststream.kafka.subscriber.usecase import BatchSubscriber

    from services.embedding import app

    (subscriber,) = app.broker.subscribers
    assert isinstance(subscriber, BatchSubscriber) and subscriber.topic_names == [topics.TEXT_EXTRACTED]
    assert subscriber.max_records == Settings().embedding_batch_max_parts == 8


def test_only_a_worker_told_so_stops_without_leavegroup(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    from shared.service import Runtime

    async def leaves(self: object) -> None:  # stands for aiokafka's own, which other tests may have replaced
        raise AssertionError("unreachable")

    monkeypatch.setattr(GroupCoordinator, "_maybe_leave_group", leaves)
    # A worker's runtime configures the process's logging; not this test's to change for the tests after it.
    monkeypatch.setattr("shared.service.configure_logging", lambda **_: None)
    make_broker(Settings(kafka_leave_group_on_shutdown=False), service="cli")
    Runtime("upload", settings=Settings())
    assert GroupCoordinator._maybe_leave_group is leaves, (
        "a broker alone, or a worker by default, changes nothing"
    )

    Runtime("upload", settings=Settings(kafka_leave_group_on_shutdown=False))
    assert GroupCoordinator._maybe_leave_group is not leaves
    sent: list[object] = []

    class Coordinator:
        generation, member_id, group_id, _group_instance_id = 7, "m-1", "g", None

        async def _send_req(self, request: object) -> None:
            sent.append(request)

        def reset_generation(self) -> None:
            self.generation, self.member_id = -1, ""

    expiring = Coordinator()
    asyncio.run(GroupCoordinator._maybe_leave_group(expiring))
    assert sent == [], "no LeaveGroup: the session expires"
    assert (expiring.generation, expiring.member_id) == (-1, ""), "the local generation is reset all the same"
