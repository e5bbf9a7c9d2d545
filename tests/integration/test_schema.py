"""The migrations on a real PostgreSQL: the 16 platform tables are exactly the design document's, and the
runner is idempotent, checksummed and safe to run twice at once.

The schema, idempotence and uuid_generate_v4() tests run on two servers: the embedded PostgreSQL, which lacks
the uuid-ossp extension (0001's uuid shim then defines the function over gen_random_uuid()), and Debian's
PostgreSQL 15, which has it (the shim then creates the extension)."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
def design_database(target: Target) -> Iterator[str]:
    """A second empty database on the same server, for the design document's SQL."""
    with scratch_database(target.server, "design") as dsn:
        yield dsn


async def test_platform_tables_match_the_design(database: str, design_database: str) -> None:
    """Each of the 16 tables: same columns, constraints and indexes as the design's own SQL produces."""
    applied = await apply_migrations(database)
    assert applied == [migration.version for migration in discover_migrations()]

    sql = design_sql()
    assert set(_CREATE_TABLE.findall(sql)) == PLATFORM_TABLES
    design_conn = await asyncpg.connect(design_database)
    ours_conn = await asyncpg.connect(database)
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
