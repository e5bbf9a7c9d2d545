"""A short PostgreSQL outage costs a worker one slow delivery, never a source.

The runner's own steps around a handler (refusal records, the processed-events check, failure records, the
processed mark) meet an outage before the handler does. Each must retry like the handler: a delivery that
fails in milliseconds is redelivered at once, and a few of those spend the whole delivery budget while the
server is still restarting (the chaos test once failed a good photo this way, as `retries_exhausted`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord

from shared.broker import make_broker
from shared.db import inbox, owners
from shared.db.migrate import apply_migrations
from shared.db.pool import create_pool
from shared.devstack import servers
from shared.devstack.servers import ServerProcess
from shared.events.models import Envelope, SourceRef, SourceUploaded, TextExtracted, TextSegment
from shared.settings import Settings
from shared.worker import Worker
from tests.integration.test_pipeline import note_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OUTAGE_SECONDS = 3.0
"""Shorter than the default retry schedule (0.5 + 1 + 2 + 4 + 8 s), as a restart of PostgreSQL is."""


@dataclass
class Private:
    """A PostgreSQL server of this module alone (stopping the session's would disturb other tests)."""

    server: ServerProcess
    home: Path
    dsn: str


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    home = tmp_path_factory.mktemp("outage-postgres")
    server = servers.start_postgres(home)
    try:
        yield Private(server, home, servers.create_database(server, "outages"))
    finally:
        servers.remove_postgres(server)


@pytest.fixture
async def worker(private_postgres: Private, kafka_broker: ServerProcess) -> AsyncIterator[Worker]:
    """A runner with the default retry schedule and delivery budget, on the private server."""
    await apply_migrations(private_postgres.dsn)
    settings = Settings(database_url=private_postgres.dsn, kafka_bootstrap_servers=kafka_broker.url)
    pool = await create_pool(private_postgres.dsn)
    broker = make_broker(settings, service="upload")
    await broker.connect()
    try:
        yield Worker(
            service="upload", broker=broker, pool=pool
        )  # the default schedule: 0.5 s doubling, 5 tries
    finally:
        await broker.stop()
        await pool.close()


def record(event: Envelope, offset: int) -> ConsumerRecord[bytes, bytes]:
    value = event.model_dump_json().encode()
    return ConsumerRecord(
        topic=event.TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=str(uuid.uuid4()).encode(),
        value=value,
        checksum=None,
        serialized_key_size=36,
        serialized_value_size=len(value),
        headers=(),
    )


async def unfinished_deliveries(worker: Worker) -> int:
    """How many deliveries began and never ended, as the runner counts them (message_deliveries)."""
    count: int = await worker.pool.fetchval("SELECT count(*) FROM message_deliveries")
    return count


async def outage(private: Private, seconds: float) -> None:
    """Stop PostgreSQL the hard way (as a crash would), wait, start it again on the same port and data."""
    await asyncio.to_thread(servers.stop_postgres, private.server, mode="immediate")
    await asyncio.sleep(seconds)
    await asyncio.to_thread(servers.start_postgres, private.home, port=private.server.port)


async def test_one_delivery_rides_out_a_postgres_restart(private_postgres: Private, worker: Worker) -> None:
    user_id, class_id = uuid.uuid4(), uuid.uuid4()
    await owners.ensure_user(worker.pool, user_id=user_id)
    await owners.ensure_class(worker.pool, class_id=class_id, user_id=user_id)
    event = note_event(user_id, class_id, "Kirchhoff's current law: what flows into a node flows out.")
    handled: list[uuid.UUID] = []

    async def handler(received: SourceUploaded) -> Sequence[Envelope]:
        await worker.pool.fetchval("SELECT 1")  # the handler's own work needs the database too
        handled.append(received.event_id)
        return []

    down = asyncio.create_task(outage(private_postgres, OUTAGE_SECONDS))
    await asyncio.sleep(0.5)  # stopped (or stopping) when the message arrives
    try:
        await worker.handle(record(event, offset=1), SourceUploaded, handler)  # raises if left for redelivery
    finally:
        await down

    assert handled == [event.event_id]
    assert await inbox.is_processed(worker.pool, consumer="upload", event_id=event.event_id)
    assert await unfinished_deliveries(worker) == 0, "the delivery ended: nothing left to count"


async def test_a_batch_rides_out_a_postgres_restart(private_postgres: Private, worker: Worker) -> None:
    events = [
        TextExtracted(
            event_id=(event_id := uuid.uuid4()),
            correlation_id=event_id,
            producer="ocr",
            source=SourceRef(
                source_id=uuid.uuid4(),
                kind="photo",
                user_id=uuid.uuid4(),
                class_id=uuid.uuid4(),
                title="whiteboard",
                created_at=datetime.now(UTC),
            ),
            segments=[TextSegment(text=f"line {n}")],
        )
        for n in range(3)
    ]
    batches: list[list[uuid.UUID]] = []

    async def handler(
        received: Sequence[TextExtracted],
    ) -> Sequence[tuple[TextExtracted, Sequence[Envelope]]]:
        await worker.pool.fetchval("SELECT 1")
        batches.append([e.event_id for e in received])
        return [(e, []) for e in received]

    down = asyncio.create_task(outage(private_postgres, OUTAGE_SECONDS))
    await asyncio.sleep(0.5)  # stopped (or stopping) when the batch arrives
    records = [record(e, offset=10 + n) for n, e in enumerate(events)]
    try:
        await worker.handle_batch(records, TextExtracted, handler)
    finally:
        await down

    assert batches == [[e.event_id for e in events]]
    for event in events:
        assert await inbox.is_processed(worker.pool, consumer="upload", event_id=event.event_id)
    assert await unfinished_deliveries(worker) == 0


async def test_a_refusal_during_an_outage_is_still_stored(private_postgres: Private, worker: Worker) -> None:
    poison = record(note_event(uuid.uuid4(), uuid.uuid4(), "x"), offset=20)
    poison = dataclasses.replace(poison, value=b'{"event_type": "SourceUploaded", "kind": "spreadsh')

    async def never(received: SourceUploaded) -> Sequence[Envelope]:
        raise AssertionError("an undecodable message reached the handler")

    down = asyncio.create_task(outage(private_postgres, OUTAGE_SECONDS))
    await asyncio.sleep(0.5)
    try:
        await worker.handle(poison, SourceUploaded, never)
    finally:
        await down

    conn = await asyncpg.connect(private_postgres.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT error_code FROM rejected_messages WHERE topic = $1 AND kafka_offset = 20", poison.topic
        )
    finally:
        await conn.close()
    assert row is not None and row["error_code"] == "invalid_event"
