"""The migrations on a real PostgreSQL: the 16 platform tables are exactly the design document's, and the
runner is idempotent, checksummed and safe to run twice at once."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.migrate import MIGRATIONS_DIR, MigrationError, apply_migrations, discover_migrations
from shared.devstack.servers import ServerProcess, create_database, drop_database

pytestmark = pytest.mark.integration

DESIGN_DOC = Path(__file__).resolve().parents[3] / "shared" / "design" / "database-architecture.md"
PLATFORM_MIGRATION = MIGRATIONS_DIR / "0001_platform.sql"

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


def design_sql() -> str:
    """The ```sql blocks of the design document's PostgreSQL section (before "Vector Database Structure")."""
    if not DESIGN_DOC.exists():
        pytest.fail(f"design document not found at {DESIGN_DOC} (the shared/ folder beside the checkout)")
    text = DESIGN_DOC.read_text(encoding="utf-8")
    section, found, _ = text.partition("## Vector Database Structure")
    assert found, "the design document has no 'Vector Database Structure' heading any more"
    blocks = re.findall(r"^```sql[ \t]*\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert blocks, "no ```sql blocks in the design's PostgreSQL section"
    return "\n".join(blocks)


def uuid_shim() -> str:
    """The uuid_generate_v4() block that 0001_platform.sql runs before its tables."""
    text = PLATFORM_MIGRATION.read_text(encoding="utf-8")
    match = re.search(r"^-- BEGIN uuid shim\n(.*)^-- END uuid shim", text, re.DOTALL | re.MULTILINE)
    assert match, "0001_platform.sql lost its '-- BEGIN uuid shim' / '-- END uuid shim' markers"
    return match.group(1)


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


@pytest.fixture
def design_database(postgres_server: ServerProcess) -> Iterator[str]:
    """A second empty database, for the design document's SQL."""
    name = f"design_{uuid.uuid4().hex[:16]}"
    dsn = create_database(postgres_server, name)
    try:
        yield dsn
    finally:
        drop_database(postgres_server, name)


async def test_platform_tables_match_the_design(fresh_database: str, design_database: str) -> None:
    """Each of the 16 tables: same columns, constraints and indexes as the design's own SQL produces."""
    applied = await apply_migrations(fresh_database)
    assert applied == [migration.version for migration in discover_migrations()]

    sql = design_sql()
    assert set(_CREATE_TABLE.findall(sql)) == PLATFORM_TABLES
    design_conn = await asyncpg.connect(design_database)
    ours_conn = await asyncpg.connect(fresh_database)
    try:
        await design_conn.execute(uuid_shim())
        await design_conn.execute(sql)

        assert await base_tables(design_conn) == PLATFORM_TABLES
        expected_ours = PLATFORM_TABLES | pipeline_tables() | {"schema_migrations"}
        assert await base_tables(ours_conn) == expected_ours

        foreign_keys = 0
        for table in sorted(PLATFORM_TABLES):
            ours = await describe(ours_conn, table)
            design = await describe(design_conn, table)
            assert ours == design, f"table {table} differs from the design"
            # Guard against a vacuous comparison: the introspection really sees the table.
            assert design["columns"], table
            assert any(con[1] == "p" for con in design["constraints"]), f"{table} has no primary key"
            assert any(name == f"{table}_pkey" for name, _ in design["indexes"]), table
            foreign_keys += sum(1 for con in design["constraints"] if con[1] == "f")
        assert foreign_keys == len(re.findall(r"\bREFERENCES\b", sql))

        notes = await describe(ours_conn, "notes")
        search = dict(notes["indexes"])["idx_notes_search"]
        assert "USING gin" in search
        assert "to_tsvector('english'::regconfig" in search
        users = await describe(ours_conn, "users")
        defaults = {column[1]: column[9] for column in users["columns"]}
        assert defaults["id"] == "uuid_generate_v4()"
        assert defaults["preferences"] == "'{}'::jsonb"
    finally:
        await design_conn.close()
        await ours_conn.close()


async def test_second_run_applies_nothing(fresh_database: str) -> None:
    """Applied versions are recorded and skipped."""
    versions = [migration.version for migration in discover_migrations()]
    assert await apply_migrations(fresh_database) == versions
    assert await apply_migrations(fresh_database) == []
    conn = await asyncpg.connect(fresh_database)
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


async def test_uuid_generate_v4_fills_ids(fresh_database: str) -> None:
    """A users row inserted without an id gets a version 4 UUID."""
    await apply_migrations(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        user_id = await conn.fetchval(
            "INSERT INTO users (email, username, full_name, password_hash) "
            "VALUES ('ada@example.org', 'ada', 'Ada Lovelace', 'x') RETURNING id"
        )
        class_id = await conn.fetchval(
            "INSERT INTO classes (user_id, name) VALUES ($1, 'Calculus') RETURNING id", user_id
        )
    finally:
        await conn.close()
    assert isinstance(user_id, uuid.UUID) and user_id.version == 4
    assert isinstance(class_id, uuid.UUID) and class_id != user_id
