"""The asyncpg connection pool, created once per process."""

from __future__ import annotations

import json
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection
"""What the SQL functions run on: the pool, or one connection (inside a transaction)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """A pool whose connections speak JSONB as Python objects."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """Raise unless the database answers (readiness checks)."""
    await pool.fetchval("SELECT 1")
