"""SQL of deletions: tombstones of deleted sources, classes and users."""

from __future__ import annotations

import uuid

from shared.db.pool import Executor


async def record_deletion(
    conn: Executor,
    *,
    event_id: uuid.UUID,
    scope: str,
    user_id: uuid.UUID,
    class_id: uuid.UUID | None,
    source_id: uuid.UUID | None,
) -> None:
    """Write the tombstone first (once per delete event), before any vector is removed."""
    await conn.execute(
        """
        INSERT INTO deletions (event_id, scope, user_id, class_id, source_id) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (event_id) DO NOTHING
        """,
        event_id,
        scope,
        user_id,
        class_id,
        source_id,
    )


async def complete_deletion(conn: Executor, *, event_id: uuid.UUID, vectors_removed: int) -> None:
    """Note that a delete reached both stores."""
    await conn.execute(
        "UPDATE deletions SET completed_at = NOW(), vectors_removed = COALESCE(vectors_removed, 0) + $2 "
        "WHERE event_id = $1",
        event_id,
        vectors_removed,
    )


async def deleted_sources(
    conn: Executor, *, sources: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]
) -> set[uuid.UUID]:
    """Which of these (source, class, user) are deleted, by their own, their class's or their user's tombstone."""
    if not sources:
        return set()
    records = await conn.fetch(
        """
        SELECT s.source_id
          FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS s(source_id, class_id, user_id)
         WHERE EXISTS (
           SELECT 1 FROM deletions d
            WHERE (d.scope = 'source' AND d.source_id = s.source_id)
               OR (d.scope = 'class' AND d.class_id = s.class_id AND d.user_id = s.user_id)
               OR (d.scope = 'user' AND d.user_id = s.user_id))
        """,
        [s for s, _, _ in sources],
        [c for _, c, _ in sources],
        [u for _, _, u in sources],
    )
    return {r["source_id"] for r in records}


async def fail_deleted_jobs(
    conn: Executor, *, user_id: uuid.UUID, class_id: uuid.UUID | None, source_id: uuid.UUID | None
) -> int:
    """Stop work on deleted sources: their unfinished jobs end failed with the reason 'deleted'."""
    result: str = await conn.execute(
        """
        UPDATE ingest_jobs SET status = 'failed', error_code = 'deleted',
               error_message = 'the source was deleted', updated_at = NOW(), finished_at = NOW()
         WHERE user_id = $1 AND ($2::uuid IS NULL OR class_id = $2) AND ($3::uuid IS NULL OR source_id = $3)
           AND status IN ('pending', 'processing')
        """,
        user_id,
        class_id,
        source_id,
    )
    return int(result.split()[-1])
