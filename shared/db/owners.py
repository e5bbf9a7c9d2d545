"""SQL of the users and classes tables: who owns what."""

from __future__ import annotations

import uuid

import asyncpg


async def class_owner(pool: asyncpg.Pool, *, class_id: uuid.UUID) -> uuid.UUID | None:
    """The user a class belongs to, or None if there is no such class."""
    owner: uuid.UUID | None = await pool.fetchval("SELECT user_id FROM classes WHERE id = $1", class_id)
    return owner


async def user_exists(pool: asyncpg.Pool, *, user_id: uuid.UUID) -> bool:
    """Whether there is a user with this id."""
    found: bool = await pool.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id)
    return found


async def ensure_user(pool: asyncpg.Pool, *, user_id: uuid.UUID, full_name: str | None = None) -> None:
    """Create a placeholder student (unusable password) if the id is new; used by the CLI's --create-owner."""
    await pool.execute(
        """
        INSERT INTO users (id, email, username, full_name, password_hash)
        VALUES ($1, $2, $3, $4, '!')
        ON CONFLICT (id) DO NOTHING
        """,
        user_id,
        f"{user_id.hex}@students.invalid",
        f"student-{user_id.hex[:40]}",
        full_name or f"Student {str(user_id)[:8]}",
    )


async def ensure_class(
    pool: asyncpg.Pool, *, class_id: uuid.UUID, user_id: uuid.UUID, name: str | None = None
) -> None:
    """Create a class for the user if the id is new."""
    await pool.execute(
        "INSERT INTO classes (id, user_id, name) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        class_id,
        user_id,
        (name or f"Class {str(class_id)[:8]}")[:100],
    )
