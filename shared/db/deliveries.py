"""SQL of message_deliveries: deliveries that began and have not finished, counted across processes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.db.pool import Executor


@dataclass(frozen=True)
class Delivery:
    """Where a message sits in Kafka, and what it holds (to tell a recreated topic's message from it)."""

    topic: str
    partition: int
    offset: int
    fingerprint: str


async def begin(conn: Executor, *, consumer: str, messages: Sequence[Delivery]) -> list[int]:
    """Count a delivery of each message; returns, in order, how many deliveries of it have begun unfinished
    (1 for a first delivery or after a clean one; more when an earlier one never finished)."""
    rows = await conn.fetch(
        """
        INSERT INTO message_deliveries AS d (consumer, topic, kafka_partition, kafka_offset, fingerprint)
        SELECT $1, t, p, o, f FROM unnest($2::text[], $3::int[], $4::bigint[], $5::text[]) AS m(t, p, o, f)
        ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO UPDATE
           SET deliveries = CASE WHEN d.fingerprint = EXCLUDED.fingerprint THEN d.deliveries + 1 ELSE 1 END,
               solo_attempts = CASE WHEN d.fingerprint = EXCLUDED.fingerprint THEN d.solo_attempts ELSE 0 END,
               first_delivered_at = CASE WHEN d.fingerprint = EXCLUDED.fingerprint
                                         THEN d.first_delivered_at ELSE now() END,
               fingerprint = EXCLUDED.fingerprint,
               last_delivered_at = now()
        RETURNING topic, kafka_partition, kafka_offset, deliveries
        """,
        consumer,
        [m.topic for m in messages],
        [m.partition for m in messages],
        [m.offset for m in messages],
        [m.fingerprint for m in messages],
    )
    counts = {(r["topic"], r["kafka_partition"], r["kafka_offset"]): r["deliveries"] for r in rows}
    return [counts[(m.topic, m.partition, m.offset)] for m in messages]


async def begin_solo_attempt(conn: Executor, *, consumer: str, message: Delivery) -> int:
    """Count an attempt at this message alone (a cut-short batch being searched for its culprit)."""
    attempts: int | None = await conn.fetchval(
        """
        UPDATE message_deliveries SET solo_attempts = solo_attempts + 1
         WHERE consumer = $1 AND topic = $2 AND kafka_partition = $3 AND kafka_offset = $4
        RETURNING solo_attempts
        """,
        consumer,
        message.topic,
        message.partition,
        message.offset,
    )
    return attempts or 1


async def finish(conn: Executor, *, consumer: str, messages: Sequence[Delivery]) -> None:
    """These deliveries ended (their effects are durable, or the messages were given up): forget them."""
    await conn.execute(
        """
        DELETE FROM message_deliveries d
         USING unnest($2::text[], $3::int[], $4::bigint[]) AS m(t, p, o)
         WHERE d.consumer = $1 AND d.topic = m.t AND d.kafka_partition = m.p AND d.kafka_offset = m.o
        """,
        consumer,
        [m.topic for m in messages],
        [m.partition for m in messages],
        [m.offset for m in messages],
    )
