"""SQL of the classmate_connections and shared_content tables: which sources a student may read besides their own."""

from __future__ import annotations

import uuid

from shared.db.pool import Executor
from shared.vectors.records import SharedSource


async def sources_shared_with(db: Executor, *, user_id: uuid.UUID) -> list[SharedSource]:
    """The sources shared with a student, read afresh for every search (a deleted row is gone at once): a
    shared_content row counts only if its sharer is connected to the student by an accepted classmate_connections
    row (either direction) and really owns the source (its ingest job is theirs); a row about anything else
    (another user's source, a row id of some other table) shares nothing."""
    rows = await db.fetch(
        """
        SELECT DISTINCT s.content_id AS source_id, s.shared_by_user_id AS shared_by
        FROM shared_content s
        JOIN ingest_jobs j ON j.source_id = s.content_id AND j.user_id = s.shared_by_user_id
        WHERE s.shared_with_user_id = $1
          AND s.shared_by_user_id <> $1
          AND EXISTS (
            SELECT 1 FROM classmate_connections c
            WHERE c.status = 'accepted'
              AND ((c.user_id = s.shared_by_user_id AND c.classmate_user_id = $1)
                OR (c.user_id = $1 AND c.classmate_user_id = s.shared_by_user_id))
          )
        ORDER BY 2, 1
        """,
        user_id,
    )
    return [SharedSource(source_id=r["source_id"], shared_by=r["shared_by"]) for r in rows]
