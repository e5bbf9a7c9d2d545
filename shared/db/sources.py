"""SQL of the four content tables (audio_recordings, photos, textbook_downloads, notes): one aggregate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from shared.db.pool import Executor
from shared.ports import SourceRow

TABLE_OF_KIND: Final[dict[str, str]] = {
    "audio": "audio_recordings",
    "photo": "photos",
    "textbook": "textbook_downloads",
    "note": "notes",
}
URL_COLUMN_OF_KIND: Final[dict[str, str]] = {
    "audio": "file_url",
    "photo": "image_url",
    "textbook": "file_url",
}
TEXT_COLUMN_OF_KIND: Final[dict[str, str]] = {
    "note": "content",
    "photo": "extracted_text",
    "audio": "transcript_text",
}
"""Where each kind keeps its text (a textbook's is in its chunks only)."""
STATUS_COLUMN_OF_KIND: Final[dict[str, str | None]] = {
    "audio": "transcript_status",
    "photo": "extraction_status",
    "textbook": "embedding_status",
    "note": None,
}
"""The design's own status column of each kind (notes have none; the job table tracks them)."""

_ALLOWED_FROM: Final[dict[str, tuple[str, ...]]] = {
    "processing": ("pending", "processing"),
    "completed": ("pending", "processing", "completed"),
    "failed": ("pending", "processing", "failed"),
    "pending": ("pending",),
}
"""Status only moves forward: pending -> processing -> completed | failed."""


def _table(kind: str) -> str:
    return TABLE_OF_KIND[kind]  # a fixed whitelist: safe to format into SQL


def _row(kind: str, record: asyncpg.Record) -> SourceRow:
    created: datetime = record["created_at"]
    return SourceRow(
        source_id=record["id"],
        kind=kind,
        user_id=record["user_id"],
        class_id=record["class_id"],
        title=record["title"],
        created_at=created.replace(tzinfo=UTC) if created.tzinfo is None else created,
        text=record["text"],
        vector_id=record["vector_id"],
        storage_url=record["storage_url"],
    )


async def get_source(conn: Executor, *, kind: str, source_id: uuid.UUID) -> SourceRow | None:
    """The content row of a source, or None."""
    text_col = TEXT_COLUMN_OF_KIND.get(kind, "NULL::text")
    vector_col = "NULL::varchar" if kind == "textbook" else "vector_id"
    url_col = URL_COLUMN_OF_KIND.get(kind, "NULL::text")
    record = await conn.fetchrow(
        f"SELECT id, user_id, class_id, title, created_at, {text_col} AS text, {vector_col} AS vector_id, "  # noqa: S608
        f"{url_col} AS storage_url FROM {_table(kind)} WHERE id = $1",
        source_id,
    )
    return _row(kind, record) if record else None


async def insert_source(
    conn: Executor,
    *,
    kind: str,
    source_id: uuid.UUID,
    user_id: uuid.UUID,
    class_id: uuid.UUID,
    title: str,
    storage_url: str | None = None,
    text: str | None = None,
    note_type: str | None = None,
    file_type: str | None = None,
    size_bytes: int | None = None,
    author: str | None = None,
    isbn: str | None = None,
) -> SourceRow:
    """Insert the content row if it is new (a replay finds it and changes nothing); returns the row."""
    table = _table(kind)
    if kind == "note":
        await conn.execute(
            f"INSERT INTO {table} (id, user_id, class_id, title, content, note_type) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            source_id,
            user_id,
            class_id,
            title,
            text or "",
            note_type,
        )
    elif kind == "textbook":
        await conn.execute(
            f"INSERT INTO {table} (id, user_id, class_id, title, file_url, file_type, file_size_bytes, author, isbn) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            source_id,
            user_id,
            class_id,
            title,
            storage_url,
            file_type,
            size_bytes,
            author,
            isbn,
        )
    else:
        await conn.execute(
            f"INSERT INTO {table} (id, user_id, class_id, title, {URL_COLUMN_OF_KIND[kind]}) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            source_id,
            user_id,
            class_id,
            title,
            storage_url,
        )
    row = await get_source(conn, kind=kind, source_id=source_id)
    assert row is not None
    return row


async def set_status(conn: Executor, *, kind: str, source_id: uuid.UUID, status: str) -> bool:
    """Move the row's own status column forward (guarded); False if the transition was not allowed."""
    column = STATUS_COLUMN_OF_KIND[kind]
    if column is None:
        return True
    result: str = await conn.execute(
        f"UPDATE {_table(kind)} SET {column} = $2, updated_at = NOW() "  # noqa: S608
        f"WHERE id = $1 AND {column} = ANY($3::varchar[])",
        source_id,
        status,
        list(_ALLOWED_FROM[status]),
    )
    return result != "UPDATE 0"


async def reset_status(conn: Executor, *, kind: str, source_id: uuid.UUID) -> None:
    """A reprocess from the start: the row's status column is pending again (an explicit, operator's step)."""
    column = STATUS_COLUMN_OF_KIND[kind]
    if column is not None:
        await conn.execute(
            f"UPDATE {_table(kind)} SET {column} = 'pending', updated_at = NOW() WHERE id = $1",  # noqa: S608
            source_id,
        )


async def reopen_status(conn: Executor, *, kind: str, source_id: uuid.UUID) -> None:
    """With an explicit retry, a failed status column goes back to processing."""
    column = STATUS_COLUMN_OF_KIND[kind]
    if column is not None:
        await conn.execute(
            f"UPDATE {_table(kind)} SET {column} = 'processing', updated_at = NOW() "  # noqa: S608
            f"WHERE id = $1 AND {column} = 'failed'",
            source_id,
        )


async def mark_indexed(
    conn: Executor,
    *,
    kind: str,
    source_id: uuid.UUID,
    vector_id: str,
    chunk_count: int,
) -> None:
    """Record that every chunk is searchable: vector_id, or for textbooks total_chunks and embedding_status."""
    if kind == "textbook":
        await conn.execute(
            "UPDATE textbook_downloads SET total_chunks = $2, embedding_status = 'completed', updated_at = NOW() "
            "WHERE id = $1 AND embedding_status <> 'failed'",
            source_id,
            chunk_count,
        )
    else:
        await conn.execute(
            f"UPDATE {_table(kind)} SET vector_id = $2, updated_at = NOW() WHERE id = $1",  # noqa: S608
            source_id,
            vector_id,
        )


async def set_duration(conn: Executor, *, source_id: uuid.UUID, seconds: float) -> None:
    """audio_recordings.duration_seconds (whole seconds, rounded up)."""
    await conn.execute(
        "UPDATE audio_recordings SET duration_seconds = $2, updated_at = NOW() WHERE id = $1",
        source_id,
        int(-(-seconds // 1)),
    )


async def save_text(conn: Executor, *, kind: str, source_id: uuid.UUID, text: str) -> None:
    """The extracted text of a recording (transcript_text) or a photo (extracted_text)."""
    if kind not in ("audio", "photo"):
        raise ValueError(f"a {kind}'s text is not saved by a stage")
    column = TEXT_COLUMN_OF_KIND[kind]
    await conn.execute(
        f"UPDATE {_table(kind)} SET {column} = $2, updated_at = NOW() WHERE id = $1",  # noqa: S608
        source_id,
        text,
    )


async def set_page_count(conn: Executor, *, source_id: uuid.UUID, pages: int) -> None:
    """textbook_downloads.page_count."""
    await conn.execute(
        "UPDATE textbook_downloads SET page_count = $2, updated_at = NOW() WHERE id = $1", source_id, pages
    )


@dataclass(frozen=True)
class RowState:
    """What a content row itself says of its processing (the design's columns, as the backend reads them)."""

    status_column: str | None
    """The kind's own status column (transcript_status, extraction_status, embedding_status); None for notes."""
    status: str | None
    vector_id: str | None
    """Set once every chunk is searchable (textbooks have no such column: total_chunks instead)."""
    total_chunks: int | None


async def row_state(conn: Executor, *, kind: str, source_id: uuid.UUID) -> RowState | None:
    """The content row's status column, vector_id and (textbooks) total_chunks; None if there is no row."""
    column = STATUS_COLUMN_OF_KIND[kind]
    status_col = column or "NULL::varchar"
    vector_col = "NULL::varchar" if kind == "textbook" else "vector_id"
    total_col = "total_chunks" if kind == "textbook" else "NULL::int"
    record = await conn.fetchrow(
        f"SELECT {status_col} AS status, {vector_col} AS vector_id, {total_col} AS total_chunks "  # noqa: S608
        f"FROM {_table(kind)} WHERE id = $1",
        source_id,
    )
    if record is None:
        return None
    return RowState(
        status_column=column,
        status=record["status"],
        vector_id=record["vector_id"],
        total_chunks=record["total_chunks"],
    )
