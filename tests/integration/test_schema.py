"""The migrations on a real PostgreSQL: the 16 platform tables are exactly as tests/fixtures/platform_schema.json
records them (generated once from the platform's design document; its "origin" says how), and the runner is
idempotent, checksummed and safe to run twice at once.

The schema, idempotence and uuid_generate_v4() tests run on two servers: the embedded PostgreSQL, which lacks
the uuid-ossp extension (0001's uuid shim then defines the function over gen_random_uuid()), and Debian's
PostgreSQL 15, which has it (the shim then creates the extension)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.migrate import MIGRATIONS_DIR, MigrationError, apply_migrations, discover_migrations
from shared.devstack.servers import ServerProcess
from tests.servers import scratch_database

pytestmark = pytest.mark.integration

PLATFORM_MIGRATION = MIGRATIONS_DIR / "0001_platform.sql"
EXPECTED_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "platform_schema.json"

PLATFORM_TABLES = frozenset(
    {
        "users",
        "classes",
        "assignments",
        "audio_recordings",
        "photos",
        "textbook_downloads",
        "notes",
        "note_sources",
        "generated_tests",
        "test_questions",
        "flashcard_decks",
        "flashcards",
        "chat_conversations",
        "chat_messages",
        "classmate_connections",
        "shared_content",
    }
)

_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE | re.MULTILINE
)


def pipeline_tables() -> set[str]:
    """Tables created by the migrations after 0001 (the pipeline's own)."""
    names: set[str] = set()
    for migration in discover_migrations():
        if migration.path != PLATFORM_MIGRATION:
            names.update(name.lower() for name in _CREATE_TABLE.findall(migration.sql))
    return names


def _normalise(sql: str) -> str:
    """Whitespace collapsed and the public schema qualifier dropped."""
    return re.sub(r"\s+", " ", sql).replace("public.", "").strip()


async def base_tables(conn: asyncpg.Connection) -> set[str]:
    """The ordinary tables of the public schema."""
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    return {row["table_name"] for row in rows}


async def describe(conn: asyncpg.Connection, table: str) -> dict[str, Any]:
    """Columns, constraints and indexes of a public table, in a comparable form."""
    columns = await conn.fetch(
        """
        SELECT ordinal_position, column_name, data_type, udt_name, character_maximum_length,
               numeric_precision, numeric_scale, datetime_precision, is_nullable, column_default,
               is_identity, is_generated
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = $1
        ORDER BY ordinal_position
        """,
        table,
    )
    constraints = await conn.fetch(
        """
        SELECT con.conname, con.contype::text AS contype, pg_get_constraintdef(con.oid, true) AS definition,
               con.confdeltype::text AS confdeltype, con.confupdtype::text AS confupdtype, con.condeferrable,
               ref.relname AS referenced_table
        FROM pg_constraint con
        JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace nsp ON nsp.oid = rel.relnamespace
        LEFT JOIN pg_class ref ON ref.oid = con.confrelid
        WHERE nsp.nspname = 'public' AND rel.relname = $1
        """,
        table,
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
        table,
    )
    return {
        "columns": [tuple(row.values()) for row in columns],
        "constraints": sorted(
            (
                row["conname"],
                row["contype"],
                _normalise(row["definition"]),
                row["confdeltype"],
                row["confupdtype"],
                row["condeferrable"],
                row["referenced_table"],
            )
            for row in constraints
        ),
        "indexes": sorted((row["indexname"], _normalise(row["indexdef"])) for row in indexes),
    }


Described = dict[str, dict[str, list[list[Any]]]]
"""Table name -> describe() of it as JSON values: {"columns": [...], "constraints": [...], "indexes": [...]}."""


def expected_schema(server_version_num: int) -> Described:
    """The 16 tables as the fixture records them, in describe()'s form on a server of this version.

    PostgreSQL 18 catalogues each NOT NULL column as a constraint of type 'n' as well: the fixture keeps
    those apart ("pg18_not_null") and they are expected from 18 on only.
    """
    tables = json.loads(EXPECTED_SCHEMA.read_text(encoding="utf-8"))["tables"]
    return {
        name: {
            "columns": table["columns"],
            "constraints": sorted(
                table["constraints"] + (table["pg18_not_null"] if server_version_num >= 180000 else [])
            ),
            "indexes": table["indexes"],
        }
        for name, table in tables.items()
    }


async def described_platform(conn: asyncpg.Connection) -> Described:
    """describe() of each of the 16 platform tables, as JSON values (lists, not tuples)."""
    return {table: json.loads(json.dumps(await describe(conn, table))) for table in sorted(PLATFORM_TABLES)}


def schema_differences(actual: Described, expected: Described) -> list[str]:
    """One line per column, constraint or index the database lacks or has besides the expected ones."""
    lines: list[str] = []
    for table in sorted(expected.keys() | actual.keys()):
        for part in ("columns", "constraints", "indexes"):
            want = expected.get(table, {}).get(part, [])
            have = actual.get(table, {}).get(part, [])
            lines += [f"{table} {part}: expected {row}" for row in want if row not in have]
            lines += [f"{table} {part}: found {row}" for row in have if row not in want]
            if want != have and sorted(map(json.dumps, want)) == sorted(map(json.dumps, have)):
                lines.append(f"{table} {part}: the same rows in another order")
    return lines


async def check_platform_schema(conn: asyncpg.Connection) -> Described:
    """Compare the 16 tables with the fixture on this server; return what the database has."""
    version = int(await conn.fetchval("SHOW server_version_num"))
    actual = await described_platform(conn)
    differences = schema_differences(actual, expected_schema(version))
    assert not differences, (
        "the platform tables differ from tests/fixtures/platform_schema.json:\n" + "\n".join(differences)
    )
    return actual


async def uuid_generate_v4_origin(conn: asyncpg.Connection) -> tuple[str, str, str | None]:
    """(schema, language, owning extension or None) of the one uuid_generate_v4() function there must be."""
    rows = await conn.fetch(
        """
        SELECT nsp.nspname, lang.lanname, ext.extname
        FROM pg_proc pro
        JOIN pg_namespace nsp ON nsp.oid = pro.pronamespace
        JOIN pg_language lang ON lang.oid = pro.prolang
        LEFT JOIN pg_depend dep ON dep.classid = 'pg_proc'::regclass AND dep.objid = pro.oid
             AND dep.refclassid = 'pg_extension'::regclass AND dep.deptype = 'e'
        LEFT JOIN pg_extension ext ON ext.oid = dep.refobjid
        WHERE pro.proname = 'uuid_generate_v4'
        """
    )
    assert len(rows) == 1, f"expected one uuid_generate_v4(), found {[tuple(row) for row in rows]}"
    return rows[0]["nspname"], rows[0]["lanname"], rows[0]["extname"]


@dataclass(frozen=True)
class Target:
    """A PostgreSQL server the migrations are checked on."""

    server: ServerProcess
    uuid_ossp: bool
    """Whether the server ships the uuid-ossp extension."""


@pytest.fixture(
    params=[("postgres_server", False), ("debian_postgres", True)], ids=["embedded", "debian-pg15"]
)
def target(request: pytest.FixtureRequest) -> Target:
    """Each server in turn: the embedded PostgreSQL (no uuid-ossp), then Debian's PostgreSQL 15 (uuid-ossp)."""
    fixture, uuid_ossp = request.param
    return Target(server=request.getfixturevalue(fixture), uuid_ossp=uuid_ossp)


@pytest.fixture
def database(target: Target) -> Iterator[str]:
    """A new empty database on the target server, for the migrations."""
    with scratch_database(target.server) as dsn:
        yield dsn


async def test_platform_tables_match_the_fixture(database: str) -> None:
    """After every migration, each of the 16 tables has the fixture's columns, constraints and indexes."""
    applied = await apply_migrations(database)
    assert applied == [migration.version for migration in discover_migrations()]
    conn = await asyncpg.connect(database)
    try:
        assert await base_tables(conn) == PLATFORM_TABLES | pipeline_tables() | {"schema_migrations"}
        ours = await check_platform_schema(conn)
    finally:
        await conn.close()

    # Guard against a vacuous comparison: the introspection really sees each table, its key and its links.
    foreign_keys = 0
    for table in sorted(PLATFORM_TABLES):
        assert ours[table]["columns"], table
        assert any(con[1] == "p" for con in ours[table]["constraints"]), f"{table} has no primary key"
        assert any(name == f"{table}_pkey" for name, _ in ours[table]["indexes"]), table
        foreign_keys += sum(1 for con in ours[table]["constraints"] if con[1] == "f")
    platform_sql = PLATFORM_MIGRATION.read_text(encoding="utf-8")
    assert foreign_keys == len(re.findall(r"\bREFERENCES\b", platform_sql)) == 25

    search = dict(ours["notes"]["indexes"])["idx_notes_search"]
    assert "USING gin" in search
    assert "to_tsvector('english'::regconfig" in search
    defaults = {column[1]: column[9] for column in ours["users"]["columns"]}
    assert defaults["id"] == "uuid_generate_v4()"
    assert defaults["preferences"] == "'{}'::jsonb"


async def test_the_fixture_is_what_0001_platform_creates(database: str, tmp_path: Path) -> None:
    """0001_platform.sql alone creates exactly the fixture's 16 tables: the fixture and the migration agree."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(PLATFORM_MIGRATION, folder)
    assert await apply_migrations(database, folder) == [discover_migrations(folder)[0].version]
    conn = await asyncpg.connect(database)
    try:
        assert await base_tables(conn) == PLATFORM_TABLES | {"schema_migrations"}
        await check_platform_schema(conn)
    finally:
        await conn.close()


async def test_second_run_applies_nothing(database: str) -> None:
    """Applied versions are recorded and skipped."""
    versions = [migration.version for migration in discover_migrations()]
    assert await apply_migrations(database) == versions
    assert await apply_migrations(database) == []
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    assert [row["version"] for row in rows] == versions
    assert all(len(row["checksum"]) == 64 and row["applied_at"] is not None for row in rows)


async def test_concurrent_runs_apply_each_version_once(fresh_database: str) -> None:
    """Two migrators at once on an empty database: both succeed, every version is applied by exactly one."""
    versions = [migration.version for migration in discover_migrations()]
    first, second = await asyncio.gather(apply_migrations(fresh_database), apply_migrations(fresh_database))
    assert sorted(first + second) == versions
    conn = await asyncpg.connect(fresh_database)
    try:
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    assert count == len(versions)


async def test_changed_applied_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    """Editing a migration after it was applied raises instead of silently diverging."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    await apply_migrations(fresh_database, folder)
    target = folder / PLATFORM_MIGRATION.name
    target.write_text(target.read_text(encoding="utf-8") + "\n-- edited\n", encoding="utf-8")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(fresh_database, folder)


async def test_uuid_generate_v4_fills_ids(target: Target, database: str) -> None:
    """uuid_generate_v4() is uuid-ossp's where the server has it, else the shim; either gives version 4 ids."""
    await apply_migrations(database)
    conn = await asyncpg.connect(database)
    try:
        extversion = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'uuid-ossp'")
        origin = await uuid_generate_v4_origin(conn)
        user_id = await conn.fetchval(
            "INSERT INTO users (email, username, full_name, password_hash) "
            "VALUES ('ada@example.org', 'ada', 'Ada Lovelace', 'x') RETURNING id"
        )
        class_id = await conn.fetchval(
            "INSERT INTO classes (user_id, name) VALUES ($1, 'Calculus') RETURNING id", user_id
        )
    finally:
        await conn.close()
    if target.uuid_ossp:
        assert extversion, "the migrations did not create the uuid-ossp extension"
        assert origin == ("public", "c", "uuid-ossp"), origin
    else:
        # Should the embedded PostgreSQL gain uuid-ossp, the shim's fallback would no longer be tested here.
        assert extversion is None, f"the embedded PostgreSQL now has uuid-ossp {extversion}"
        assert origin == ("public", "sql", None), origin
    assert isinstance(user_id, uuid.UUID) and user_id.version == 4
    assert isinstance(class_id, uuid.UUID) and class_id.version == 4 and class_id != user_id
