"""SQL of processed_events and rejected_messages: what each consumer has applied or refused."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.db.pool import Executor


async def is_processed(conn: Executor, *, consumer: str, event_id: uuid.UUID) -> bool:
    """Whether this consumer already applied this event."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)",
        consumer,
        event_id,
    )
    return found


async def mark_processed(conn: Executor, *, consumer: str, event_ids: list[uuid.UUID]) -> None:
    """Remember that this consumer applied these events."""
    await conn.executemany(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(consumer, e) for e in event_ids],
    )


@dataclass(frozen=True)
class Rejection:
    """A message refused before it could become (or stay) a source."""

    id: int
    consumer: str
    topic: str
    kafka_partition: int | None
    kafka_offset: int | None
    message_key: str | None
    event_id: uuid.UUID | None
    error_code: str
    error_message: str
    received_at: datetime


async def record_rejection(
    conn: Executor,
    *,
    consumer: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: str | None,
    event_id: uuid.UUID | None,
    code: str,
    reason: str,
    payload_excerpt: str | None,
) -> None:
    """Store why a message was refused (once per topic, partition and offset)."""
    await conn.execute(
        """
        INSERT INTO rejected_messages (consumer, topic, kafka_partition, kafka_offset, message_key, event_id,
                                       error_code, error_message, payload_excerpt)
        SELECT $1::varchar, $2::text, $3::integer, $4::bigint, $5::text, $6::uuid, $7::varchar, $8::text, $9::text
         WHERE NOT EXISTS (SELECT 1 FROM rejected_messages
                            WHERE consumer = $1::varchar AND topic = $2::text
                              AND kafka_partition IS NOT DISTINCT FROM $3::integer
                              AND kafka_offset IS NOT DISTINCT FROM $4::bigint
                              AND event_id IS NOT DISTINCT FROM $6::uuid)
        """,
        consumer,
        topic,
        partition,
        offset,
        key,
        event_id,
        code,
        reason,
        payload_excerpt,
    )


async def list_rejections(
    conn: Executor,
    *,
    event_id: uuid.UUID | None = None,
    key: str | None = None,
    keys: Sequence[str] | None = None,
    limit: int = 50,
) -> list[Rejection]:
    """Recent rejections, newest first, optionally for one event, one message key or any of some keys."""
    records = await conn.fetch(
        """
        SELECT id, consumer, topic, kafka_partition, kafka_offset, message_key, event_id, error_code,
               error_message, received_at
          FROM rejected_messages
         WHERE ($1::uuid IS NULL OR event_id = $1) AND ($2::text IS NULL OR message_key = $2)
           AND ($4::text[] IS NULL OR message_key = ANY($4::text[]))
         ORDER BY received_at DESC, id DESC LIMIT $3
        """,
        event_id,
        key,
        limit,
        list(keys) if keys is not None else None,
    )
    return [Rejection(**dict(r)) for r in records]
