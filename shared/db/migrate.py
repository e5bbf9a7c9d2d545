"""Apply schemas/migrations/NNNN_*.sql in order, once each, each in its own transaction, under a lock.

Applied versions are recorded in ``schema_migrations (version, checksum, applied_at)``; a file whose
content changed after it was applied is an error (write a new migration instead). Migration files must not
contain their own ``BEGIN``/``COMMIT`` nor statements that cannot run in a transaction (``CREATE INDEX
CONCURRENTLY``). Concurrent migrators of one database are serialised by a PostgreSQL advisory lock.
Command line: ``python -m shared.db.migrate [DSN]`` (default: ``LMGPA_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationError", "apply_migrations", "discover_migrations"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "migrations"
"""The repository's migrations folder."""

# Session advisory lock serialising migrators of one database (the bytes of "lmgpamig").
_LOCK_KEY = int.from_bytes(b"lmgpamig", "big") & 0x7FFF_FFFF_FFFF_FFFF
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_[A-Za-z0-9_.-]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version TEXT PRIMARY KEY,
  checksum TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the NNNN prefix), path, SQL and SHA-256 checksum."""

    version: str
    path: Path
    sql: str
    checksum: str


def _checksum(sql: str) -> str:
    """SHA-256 of the SQL with line endings normalised (a CRLF checkout does not count as a change)."""
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    """The NNNN_*.sql files of directory (default: the repository's), sorted by version."""
    folder = MIGRATIONS_DIR if directory is None else directory
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"{path.name} and {found[version].path.name} share version {version}")
        sql = path.read_text(encoding="utf-8")
        found[version] = Migration(version=version, path=path, sql=sql, checksum=_checksum(sql))
    return [found[version] for version in sorted(found)]


async def _lock(conn: asyncpg.Connection, wait_seconds: float) -> None:
    """Take the migration advisory lock, waiting at most wait_seconds (server-side lock_timeout)."""
    await conn.execute(
        "SELECT set_config('lock_timeout', $1, false)", f"{max(1, int(wait_seconds * 1000))}ms"
    )
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    except asyncpg.LockNotAvailableError as exc:
        raise MigrationError(f"another migrator held the lock for more than {wait_seconds:.0f} s") from exc
    finally:
        await conn.execute("RESET lock_timeout")


async def apply_migrations(
    dsn: str, directory: Path | None = None, *, lock_timeout: float = 300.0
) -> list[str]:
    """Apply the migrations not yet applied to the database at dsn; return the versions this call applied."""
    migrations = discover_migrations(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await _lock(conn, lock_timeout)
        try:
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
            applied: dict[str, str] = {str(row["version"]): str(row["checksum"]) for row in rows}
            for migration in migrations:
                recorded = applied.get(migration.version)
                if recorded is not None and recorded != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} changed after it was applied (checksum {recorded[:12]}… "
                        f"in the database, {migration.checksum[:12]}… on disk): add a new migration instead"
                    )
            done: list[str] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                            migration.version,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{migration.path.name} failed: {exc}") from exc
                done.append(migration.version)
            return done
        finally:
            # Closing the connection releases the lock too: an unlock failure must not hide the real error.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: apply the repository's migrations to the DSN given or configured."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        dsn = args[0]
    else:
        from shared.settings import get_settings

        dsn = get_settings().database_dsn()
    versions = asyncio.run(apply_migrations(dsn))
    print("applied: " + (", ".join(versions) if versions else "nothing (up to date)"))


if __name__ == "__main__":
    main()
