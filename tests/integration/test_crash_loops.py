"""A message that takes its worker down (kill -9, out of memory, a native crash in a decoder) must not
crash-loop it, and a transient failure's delivery budget is one, whichever process gets the message: deliveries that began and never finished are counted in PostgreSQL, across processes, and the
message is given up (source failed, dead letter) once it has cut short too many; a batch that was cut short is
handled one message at a time so the culprit is found and the others go through."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from shared.broker import create_topics
from shared.cli.backend import read_dead_letters
from shared.db import jobs, owners
from shared.devstack.servers import ServerProcess
from shared.errors import TransientError
from shared.events.models import DeadLetter, Envelope, SourceRef, TextExtracted, TextSegment
from shared.settings import Settings
from shared.worker import Worker
from tests.integration.test_outages import Private, private_postgres, record, unfinished_deliveries, worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["private_postgres", "worker"]  # the fixtures, shared with the outage tests


class ProcessDied(BaseException):
    """Stands for the worker's process dying in the middle of a handler: nothing after it runs, as nothing
    runs in a dead process (the runner catches Exception, never this)."""


async def extracted_text(worker: Worker, title: str) -> TextExtracted:
    """A TextExtracted event of a new source with an open job, as the upload worker would leave it."""
    user_id, class_id, source_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await owners.ensure_user(worker.pool, user_id=user_id)
    await owners.ensure_class(worker.pool, class_id=class_id, user_id=user_id)
    await jobs.open_job(
        worker.pool,
        source_id=source_id,
        kind="note",
        user_id=user_id,
        class_id=class_id,
        title=title,
        correlation_id=source_id,
        upload_event_id=source_id,
    )
    event_id = uuid.uuid4()
    return TextExtracted(
        event_id=event_id,
        correlation_id=source_id,
        producer="upload",
        source=SourceRef(
            source_id=source_id,
            kind="note",
            user_id=user_id,
            class_id=class_id,
            title=title,
            created_at=datetime.now(UTC),
        ),
        segments=[TextSegment(text=f"{title}: the text of a note.")],
    )


async def dead_letters_of(settings: Settings, key: bytes) -> list[DeadLetter]:
    deadline = time.monotonic() + 30
    while True:
        letters = [d for d in await read_dead_letters(settings) if d.original_key == key.decode()]
        if letters or time.monotonic() > deadline:
            return letters


async def test_a_message_that_keeps_killing_its_worker_is_given_up(
    private_postgres: Private, kafka_broker: ServerProcess, worker: Worker
) -> None:
    await create_topics(kafka_broker.url, partitions=1)
    event = await extracted_text(worker, "Poison")
    poison = record(event, offset=30)
    calls = 0

    async def dies(received: TextExtracted) -> Sequence[Envelope]:
        nonlocal calls
        calls += 1
        raise ProcessDied

    for _ in range(worker.max_deliveries):  # each delivery takes the process down; Kafka redelivers
        with pytest.raises(ProcessDied):
            await worker.handle(poison, TextExtracted, dies)
    assert calls == worker.max_deliveries
    await worker.handle(poison, TextExtracted, dies)  # the next delivery is given up, not handled
    assert calls == worker.max_deliveries, "a given-up message never reaches the handler again"

    job = await jobs.get_job(worker.pool, source_id=event.source.source_id)
    assert job is not None and (job.status, job.error_code) == ("failed", "worker_crashed")
    assert f"{worker.max_deliveries} deliveries" in (job.error_message or "")
    settings = Settings(kafka_bootstrap_servers=kafka_broker.url, database_url=private_postgres.dsn)
    [letter] = await dead_letters_of(settings, poison.key)
    assert (letter.error_code, letter.attempts, letter.consumer) == (
        "worker_crashed",
        worker.max_deliveries,
        "upload",
    )
    assert await unfinished_deliveries(worker) == 0, "a given-up delivery is finished"


async def test_a_cut_short_batch_finds_its_culprit_and_lets_the_others_through(worker: Worker) -> None:
    events = [await extracted_text(worker, f"Note {n}") for n in range(4)]
    culprit = events[2]
    records = [record(e, offset=40 + n) for n, e in enumerate(events)]
    calls: list[list[uuid.UUID]] = []
    applied: list[uuid.UUID] = []

    async def handler(
        received: Sequence[TextExtracted],
    ) -> Sequence[tuple[TextExtracted, Sequence[Envelope]]]:
        calls.append([e.event_id for e in received])
        if any(e.event_id == culprit.event_id for e in received):
            raise ProcessDied
        applied.extend(e.event_id for e in received)
        return [(e, []) for e in received]

    for _ in range(20):  # Kafka redelivers whatever was not committed, until a delivery ends
        try:
            await worker.handle_batch(records, TextExtracted, handler)
            break
        except ProcessDied:
            continue
    else:
        raise AssertionError(f"the batch never got through: {len(calls)} calls")

    assert calls[0] == [e.event_id for e in events], "the first delivery is one batch"
    assert all(len(c) == 1 for c in calls[1:]), "after a cut-short delivery, one message at a time"
    assert calls.count([culprit.event_id]) == worker.max_deliveries
    assert sorted(applied) == sorted(e.event_id for e in events if e is not culprit), "each other one, once"
    for event in events:
        job = await jobs.get_job(worker.pool, source_id=event.source.source_id)
        assert job is not None
        expected = ("failed", "worker_crashed") if event is culprit else ("processing", None)
        assert (job.status, job.error_code) == expected, event.source.title
    assert await unfinished_deliveries(worker) == 0


async def test_a_clean_delivery_leaves_nothing_to_count(worker: Worker) -> None:
    event = await extracted_text(worker, "Clean")
    handled: list[uuid.UUID] = []

    async def handler(received: TextExtracted) -> Sequence[Envelope]:
        handled.append(received.event_id)
        return []

    message = record(event, offset=60)
    await worker.handle(message, TextExtracted, handler)
    assert handled == [event.event_id] and await unfinished_deliveries(worker) == 0


async def test_the_delivery_budget_is_counted_across_processes(
    private_postgres: Private, kafka_broker: ServerProcess, worker: Worker
) -> None:
    """Three processes in turn fail the same message transiently (a rebalance moved it between them): the
    third delivery, wherever it lands, spends the budget of three."""
    await create_topics(kafka_broker.url, partitions=1)
    event = await extracted_text(worker, "Outage")
    message = record(event, offset=70)

    async def chroma_down(received: TextExtracted) -> Sequence[Envelope]:
        raise TransientError("chroma_unavailable", "connection refused")

    def process() -> (
        Worker
    ):  # a runner of its own, as another replica's would be: nothing shared but the database
        return Worker(
            service="upload", broker=worker.broker, pool=worker.pool, retry_delays=(), max_deliveries=3
        )

    for _ in range(2):
        with pytest.raises(TransientError):
            await process().handle(message, TextExtracted, chroma_down)
    await process().handle(
        message, TextExtracted, chroma_down
    )  # given up: it returns, the offset is committed

    job = await jobs.get_job(worker.pool, source_id=event.source.source_id)
    assert job is not None and (job.status, job.error_code) == ("failed", "chroma_unavailable")
    assert "after 3 deliveries" in (job.error_message or "")
    settings = Settings(kafka_bootstrap_servers=kafka_broker.url, database_url=private_postgres.dsn)
    [letter] = await dead_letters_of(settings, message.key)
    assert (letter.error_code, letter.attempts) == ("chroma_unavailable", 3)
    assert await unfinished_deliveries(worker) == 0
