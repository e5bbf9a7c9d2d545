"""The Kafka broker every service uses: one factory, one publishing rule, one set of consumer options."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from shared.events.models import DeadLetter, Envelope
from shared.events.topics import ALL_TOPICS, SERVICE_INPUTS
from shared.settings import Settings
from shared.tracing import headers

MAX_MESSAGE_BYTES = 1_000_000
"""The broker's default limit; events are split well below it."""


class LogContextMiddleware(BaseMiddleware):
    """Binds the message's topic, partition, offset and key to every log line of its handling."""

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        """Bind Kafka coordinates for the duration of one message (or batch)."""
        raw = msg.raw_message
        first = raw[0] if isinstance(raw, tuple) else raw
        with structlog.contextvars.bound_contextvars(
            topic=getattr(first, "topic", None),
            partition=getattr(first, "partition", None),
            offset=getattr(first, "offset", None),
            batch_size=len(raw) if isinstance(raw, tuple) else 1,
        ):
            return await call_next(msg)


def expire_instead_of_leaving() -> None:
    """Make this process's consumers let their group sessions expire instead of sending LeaveGroup.

    Called by a worker process (shared.service.Runtime) whose settings say so; a process-wide switch, so never
    from code that only publishes (the CLI, tests). For the embedded Tansu broker only
    (``LMGPA_KAFKA_LEAVE_GROUP_ON_SHUTDOWN=false``): after every member of a
    group had left during a rebalance, it was seen to keep the departed leader, so that each later JoinGroup
    was answered with that leader and every SyncGroup failed, for good (the group never consumed again).
    Members that simply stop heartbeating are expired correctly (the chaos test kills workers by the dozen).
    aiokafka has no setting for this (only static membership, which Tansu then never expires), hence the patch
    of the one coroutine that sends LeaveGroup; the local generation is reset exactly as it would have been."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    async def reset_without_leaving(self: GroupCoordinator) -> None:
        self.reset_generation()

    GroupCoordinator._maybe_leave_group = reset_without_leaving


def make_broker(settings: Settings, *, service: str) -> KafkaBroker:
    """A broker for one service. No idempotent producer: Tansu lacks it; effects are idempotent instead."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"lmgpa-{service}",
        middlewares=[LogContextMiddleware],
        acks="all",
        enable_idempotence=False,
        max_request_size=MAX_MESSAGE_BYTES,
        max_batch_size=MAX_MESSAGE_BYTES,
        graceful_timeout=30.0,
        # Our runner logs each message; FastStream's own logger (WARNING and up) reports what happens outside
        # a handler, such as a consumer's Kafka errors, which would otherwise vanish.
        logger=logging.getLogger("faststream"),
    )


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """Leave decoding to the runner: a malformed body must reach it (to be stored and dead-lettered),
    not fail inside the framework, whatever content type the producer declared."""
    return message.body


def group_id(settings: Settings, *, service: str, topic: str) -> str:
    """The consumer group of one subscription: ``<prefix>.<service>`` for a worker's main input,
    ``<prefix>.<service>.<word>`` for another (``lmgpa.transcription.pieces``)."""
    if topic == SERVICE_INPUTS[service][0]:
        return f"{settings.consumer_group_prefix}.{service}"
    return f"{settings.consumer_group_prefix}.{service}.{topic.split('.')[2]}"


def consumer_options(
    settings: Settings, *, service: str, topic: str, batch: bool = False, max_records: int | None = None
) -> dict[str, Any]:
    """Subscriber options shared by every worker: a group per subscription, commit after success only; a
    batch of at most `max_records` messages (default: the settings' batch_max_records)."""
    options: dict[str, Any] = {
        "group_id": group_id(settings, service=service, topic=topic),
        # The broker's "latest" offset is wrong (field notes); committed offsets do the real work.
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "decoder": raw_body,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 3, 500),
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }
    if batch:
        options |= {
            "batch": True,
            "max_records": max_records or settings.batch_max_records,
            "batch_timeout_ms": settings.batch_timeout_ms,
        }
    return options


async def publish(broker: KafkaBroker, event: Envelope) -> None:
    """Publish one event to its topic, keyed by its source id, and wait for the broker's ack."""
    body = event.model_dump_json().encode()
    if len(body) >= MAX_MESSAGE_BYTES:
        raise ValueError(f"{event.event_type} is {len(body)} bytes: split it into parts")
    await broker.publish(
        body,
        topic=event.TOPIC,
        key=event.key(),
        # The upload's trace goes on in the consumer (shared.tracing); no header when nothing traces.
        headers={
            "event_type": event.event_type,
            "content-type": "application/json",
            **headers(event.traceparent),
        },
        correlation_id=str(event.correlation_id),
    )


async def publish_dead_letter(broker: KafkaBroker, letter: DeadLetter) -> None:
    """Publish a dead letter, keyed like the original message."""
    await broker.publish(
        letter.model_dump_json().encode(),
        topic=DeadLetter.TOPIC,
        key=(letter.original_key or str(letter.dead_letter_id)).encode(),
        headers={"event_type": "DeadLetter", "content-type": "application/json"},
    )


async def create_topics(
    bootstrap_servers: str, *, partitions: int, topics: tuple[str, ...] = ALL_TOPICS
) -> list[str]:
    """Create the missing topics; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
        return missing
    finally:
        await admin.close()
