"""SQL of event_outbox and reconciler_state: stage inputs kept until applied, and what re-drives them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.db.pool import Executor
from shared.events.models import Envelope
from shared.events.topics import REDRIVABLE


@dataclass(frozen=True)
class OutboxEvent:
    """A stage input as it was published."""

    event_id: uuid.UUID
    source_id: uuid.UUID
    consumer: str
    topic: str
    key: bytes
    payload: bytes


@dataclass(frozen=True)
class Pending:
    """An input not yet applied by its consumer, with what the reconciler decides on."""

    event: OutboxEvent
    job_status: str | None
    """None: no job yet (an upload the upload worker has not taken)."""
    stage: str | None
    created_at: datetime
    last_progress_at: datetime
    """The latest sign of life of its source: the job's update, any stage's heartbeat, start or end."""
    redrives: int
    last_redrive_at: datetime | None


def entry_for(event: Envelope) -> OutboxEvent | None:
    """The outbox row of a stage input (None for events no worker takes as a stage: failures, indexed, ...)."""
    consumer = REDRIVABLE.get(event.TOPIC)
    if consumer is None:
        return None
    key = event.key()
    return OutboxEvent(
        event_id=event.event_id,
        source_id=uuid.UUID(key.decode()),
        consumer=consumer,
        topic=event.TOPIC,
        key=key,
        payload=event.model_dump_json().encode(),
    )


async def record(conn: Executor, events: Sequence[OutboxEvent]) -> None:
    """Keep these inputs until their consumer applies them (a second write of the same event is a no-op)."""
    await conn.executemany(
        """
        INSERT INTO event_outbox (event_id, source_id, consumer, topic, message_key, payload)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (event_id) DO NOTHING
        """,
        [(e.event_id, e.source_id, e.consumer, e.topic, e.key, e.payload) for e in events],
    )


async def forget(conn: Executor, *, consumer: str, event_ids: Sequence[uuid.UUID]) -> None:
    """The consumer applied these inputs: nothing is left to re-drive."""
    await conn.execute(
        "DELETE FROM event_outbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
        consumer,
        list(event_ids),
    )


_PENDING = """
SELECT o.event_id, o.source_id, o.consumer, o.topic, o.message_key, o.payload, o.created_at, o.redrives,
       o.last_redrive_at, j.status AS job_status, j.stage,
       GREATEST(o.created_at, o.last_redrive_at, j.updated_at,
                (SELECT max(GREATEST(s.enqueued_at, s.started_at, s.heartbeat_at, s.finished_at))
                 FROM ingest_stages s WHERE s.source_id = o.source_id)) AS last_progress_at
FROM event_outbox o
-- One primary-key look-up per pending input (OFFSET 0 keeps the planner from turning it into a scan of every
-- job): the pass never reads the many finished ones.
LEFT JOIN LATERAL (
  SELECT source_id, status, stage, updated_at FROM ingest_jobs WHERE source_id = o.source_id OFFSET 0
) j ON true
WHERE (j.source_id IS NULL OR j.status IN ('pending', 'processing'))
  AND ($1::uuid IS NULL OR o.source_id = $1)
  AND NOT EXISTS (SELECT 1 FROM processed_events p WHERE p.consumer = o.consumer AND p.event_id = o.event_id)
  AND NOT EXISTS (SELECT 1 FROM rejected_messages r WHERE r.event_id = o.event_id)
ORDER BY o.created_at
LIMIT $2
"""


async def pending(
    conn: Executor, *, source_id: uuid.UUID | None = None, limit: int = 10_000
) -> list[Pending]:
    """Inputs of unfinished sources (or of uploads no job exists for yet) that no consumer has applied."""
    rows = await conn.fetch(_PENDING, source_id, limit)
    return [
        Pending(
            event=OutboxEvent(
                event_id=r["event_id"],
                source_id=r["source_id"],
                consumer=r["consumer"],
                topic=r["topic"],
                key=bytes(r["message_key"]),
                payload=bytes(r["payload"]),
            ),
            job_status=r["job_status"],
            stage=r["stage"],
            created_at=r["created_at"],
            last_progress_at=r["last_progress_at"],
            redrives=r["redrives"],
            last_redrive_at=r["last_redrive_at"],
        )
        for r in rows
    ]


async def note_redrives(
    conn: Executor, *, event_ids: Sequence[uuid.UUID], source_ids: Sequence[uuid.UUID]
) -> None:
    """Count a re-drive on each event and on its source's job (shown by `lmgpa status`)."""
    await conn.execute(
        "UPDATE event_outbox SET redrives = redrives + 1, last_redrive_at = now() WHERE event_id = ANY($1::uuid[])",
        list(event_ids),
    )
    await conn.execute(
        "UPDATE ingest_jobs SET redrives = redrives + 1, last_redrive_at = now() WHERE source_id = ANY($1::uuid[])",
        list(set(source_ids)),
    )


async def drop_finished(conn: Executor) -> int:
    """Remove the inputs of finished sources (a failed source's leftovers, a crash between apply and forget)."""
    status: str = await conn.execute(
        """
        DELETE FROM event_outbox o USING ingest_jobs j
        WHERE j.source_id = o.source_id AND j.status IN ('completed', 'failed')
        """
    )
    return int(status.rsplit(" ", 1)[-1])


async def try_pass_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the reconciler's pass lock for this transaction; False if another reconciler holds it."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)
    return taken


async def get_state(conn: Executor, name: str) -> str | None:
    """A value the reconciler remembers."""
    value: str | None = await conn.fetchval("SELECT value FROM reconciler_state WHERE name = $1", name)
    return value


async def set_state(conn: Executor, name: str, value: str) -> None:
    """Remember a value for later passes and other reconcilers."""
    await conn.execute(
        """
        INSERT INTO reconciler_state (name, value) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
        """,
        name,
        value,
    )
