"""Reconciler's side effects: the outbox and jobs in PostgreSQL, the broker's epoch marker, re-publishing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from services.reconciler.handlers import SERVICE, stalled_reason
from shared.broker import create_topics, publish
from shared.db import inbox, jobs, outbox, sources
from shared.db.outbox import Pending
from shared.events.models import MODEL_OF_TOPIC, Envelope, SourceFailed, SourceRef, SourceUploaded
from shared.tracing import headers_of_payload

EPOCH_TOPIC = "lmgpa.reconciler.epoch.v1"
"""One message, written by the reconciler: while the broker holds it, the broker has not lost its log."""
EPOCH_STATE = "broker_epoch"
PASS_LOCK = 0x6C6D677061  # "lmgpa": one reconciler pass at a time, whatever the number of processes


class ReconcilerDb:
    """The pass's view of PostgreSQL: one transaction holding the pass lock."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def pending(self, source_id: uuid.UUID | None = None) -> list[Pending]:
        """Stage inputs no consumer applied, of unfinished sources."""
        return await outbox.pending(self.conn, source_id=source_id)

    async def note_redrives(self, items: Sequence[Pending]) -> None:
        """Count the re-drives on the events and their jobs."""
        await outbox.note_redrives(
            self.conn,
            event_ids=[i.event.event_id for i in items],
            source_ids=[i.event.source_id for i in items],
        )

    async def give_up(self, item: Pending, *, stall_seconds: float) -> SourceFailed:
        """Fail the source as `stalled` (or refuse an upload that never became one); returns the announcement."""
        reason = stalled_reason(item, stall_seconds=stall_seconds)
        event = cast(Envelope, MODEL_OF_TOPIC[item.event.topic].model_validate_json(item.event.payload))
        ref: SourceRef | None = getattr(event, "source", None)
        stage = item.stage or item.event.consumer
        if ref is not None:
            await jobs.fail_job(
                self.conn, source_id=ref.source_id, stage=stage, code="stalled", reason=reason
            )
            await sources.set_status(self.conn, kind=ref.kind, source_id=ref.source_id, status="failed")
        elif item.job_status is not None:
            await jobs.fail_job(
                self.conn, source_id=item.event.source_id, stage=stage, code="stalled", reason=reason
            )
        else:
            await inbox.record_rejection(
                self.conn,
                consumer=SERVICE,
                topic=item.event.topic,
                partition=None,
                offset=None,
                key=str(item.event.source_id),
                event_id=item.event.event_id,
                code="stalled",
                reason=reason,
                payload_excerpt=None,
            )
        return SourceFailed(
            **event.follow(f"SourceFailed/{SERVICE}", producer=SERVICE),
            source_id=ref.source_id
            if ref
            else (event.source_id if isinstance(event, SourceUploaded) else None),
            source=ref,
            stage=stage,
            error_code="stalled",
            reason=reason,
        )

    async def drop_finished(self) -> int:
        """Clear the outbox rows of finished sources."""
        return await outbox.drop_finished(self.conn)

    async def epoch(self) -> str | None:
        """The epoch the reconciler last marked the broker with."""
        return await outbox.get_state(self.conn, EPOCH_STATE)

    async def set_epoch(self, epoch: str) -> None:
        """Remember the broker's new epoch."""
        await outbox.set_state(self.conn, EPOCH_STATE, epoch)


@asynccontextmanager
async def pass_lock(pool: asyncpg.Pool) -> AsyncIterator[ReconcilerDb | None]:
    """A transaction holding the pass lock, or None when another reconciler is in a pass (it is skipped)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await outbox.try_pass_lock(conn, PASS_LOCK):
            yield None
            return
        yield ReconcilerDb(conn)


class BrokerLink:
    """What the reconciler asks of the broker: is its log the one we marked, and publish again."""

    def __init__(self, broker: KafkaBroker, *, bootstrap: str, partitions: int) -> None:
        self.broker = broker
        self.bootstrap = bootstrap
        self.partitions = partitions

    async def holds_epoch(self, epoch: str | None, *, wait_seconds: float = 3.0) -> bool:
        """True if the epoch marker is still in the broker (read from the beginning of its topic)."""
        if epoch is None:
            return False
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            if EPOCH_TOPIC not in await consumer.topics():  # fresh metadata: a lost log lost the topic too
                return False
            partition = TopicPartition(EPOCH_TOPIC, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            deadline = asyncio.get_running_loop().time() + wait_seconds
            while asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(partition, timeout_ms=500)
                if any(r.value == epoch.encode() for r in batch.get(partition, [])):
                    return True
            return False
        finally:
            await consumer.stop()

    async def mark_epoch(self) -> str:
        """Write a new epoch marker (creating the pipeline's topics, which a lost log lost too)."""
        await create_topics(self.bootstrap, partitions=self.partitions)
        await create_topics(self.bootstrap, partitions=1, topics=(EPOCH_TOPIC,))
        epoch = str(uuid.uuid4())
        await self.broker.publish(epoch.encode(), topic=EPOCH_TOPIC, key=b"epoch")
        return epoch

    async def ensure_topics(self) -> None:
        """Create any missing pipeline topic (a re-drive into a lost topic must not fail)."""
        await create_topics(self.bootstrap, partitions=self.partitions)

    async def republish(self, items: Sequence[Pending]) -> None:
        """Publish each pending input again, byte for byte, under its own event id and key."""
        for item in items:
            await self.broker.publish(
                item.event.payload,
                topic=item.event.topic,
                key=item.event.key,
                # The trace context kept in the event: the re-driven stage joins the upload's trace.
                headers={
                    "content-type": "application/json",
                    "redriven": "1",
                    **headers_of_payload(item.event.payload),
                },
            )

    async def announce(self, failures: Sequence[SourceFailed]) -> None:
        """Publish the failures of the sources given up on."""
        for failure in failures:
            await publish(self.broker, failure)
