"""Pytest plugin: the embedded servers (PostgreSQL, Tansu broker, Chroma) per session, a database per test.

Enable it with ``pytest_plugins = ["tests.servers"]`` in a conftest, or ``-p tests.servers`` on the command
line. Each server starts on first use, under the session's temporary folder, and is stopped at the end.
``debian_postgres`` is a second PostgreSQL, Debian's 15 (it has the uuid-ossp extension the embedded one
lacks), for the migrations' tests only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.devstack.servers import (
    ServerProcess,
    _initdb_locale,
    _postmaster_alive,
    _read_postmaster_pid,
    _run_pg_tool,
    _tcp_accepts,
    _wait_ready,
    create_database,
    drop_database,
    free_port,
    remove_postgres,
    start_broker,
    start_chroma,
    start_postgres,
    stop_process,
)

DEBIAN_POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian's PostgreSQL 15 programs (package postgresql-15, installed by deploy/system-deps.sh)."""
DEBIAN_UUID_OSSP = Path("/usr/share/postgresql/15/extension/uuid-ossp.control")
"""The uuid-ossp extension of that package."""


@pytest.fixture(scope="session")
def devstack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder for server data and logs."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def postgres_server(devstack_home: Path) -> Iterator[ServerProcess]:
    """A PostgreSQL server with the empty database ``lmgpa``, removed (data included) after the session."""
    server = start_postgres(devstack_home)
    try:
        yield server
    finally:
        remove_postgres(server)


@pytest.fixture(scope="session")
def kafka_broker(devstack_home: Path) -> Iterator[ServerProcess]:
    """A Tansu Kafka-protocol broker (memory storage); its ``url`` is the bootstrap address."""
    server = start_broker(devstack_home)
    try:
        yield server
    finally:
        stop_process(server)


CURRENT: dict[str, ServerProcess] = {}
"""The live process of each session server: a test that restarts one (same port, new pid) records it here."""


def restart_chroma(server: ServerProcess, home: Path) -> ServerProcess:
    """Start Chroma again on the same port and data after a test stopped it; returns the new process."""
    CURRENT["chroma"] = start_chroma(home, port=server.port)
    return CURRENT["chroma"]


@pytest.fixture(scope="session")
def chroma_server(devstack_home: Path) -> Iterator[ServerProcess]:
    """A Chroma server; its ``url`` is the base HTTP URL (restarts keep the port: see restart_chroma)."""
    server = start_chroma(devstack_home)
    CURRENT["chroma"] = server
    try:
        yield server
    finally:
        stop_process(CURRENT.pop("chroma", server))


def _debian_server(data_dir: Path, pid: int, port: int) -> ServerProcess:
    """The ServerProcess of the Debian cluster in data_dir (its log beside it)."""
    return ServerProcess(
        name="debian-postgres",
        pid=pid,
        port=port,
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        data_dir=data_dir,
        log_path=data_dir.parent / "postgres.log",
    )


def _stop_debian_postgres(data_dir: Path, account: pwd.struct_passwd | None) -> None:
    """``pg_ctl stop -m fast`` the cluster of data_dir if it runs, by signals if that fails."""
    info = _read_postmaster_pid(data_dir)
    if info is None or not _postmaster_alive(data_dir, info[0]):
        return
    stop = [str(DEBIAN_POSTGRES_BIN / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "60", "stop"]
    if _run_pg_tool(stop, account, data_dir.parent, timeout=70).returncode != 0:
        stop_process(_debian_server(data_dir, info[0], info[1] or 0))


@pytest.fixture(scope="session")
def debian_postgres() -> Iterator[ServerProcess]:
    """A throwaway cluster of Debian's PostgreSQL 15 (with uuid-ossp); its ``url`` is the ``postgres`` database.

    Runs as the ``postgres`` system user when we are root (as ourselves otherwise), with its data in a
    temporary folder that user can reach, on a free port of 127.0.0.1; removed (data included) at the end.
    """
    missing = [
        str(path)
        for path in (DEBIAN_POSTGRES_BIN / "initdb", DEBIAN_POSTGRES_BIN / "pg_ctl", DEBIAN_UUID_OSSP)
        if not path.exists()
    ]
    if missing:
        pytest.fail(
            f"Debian's PostgreSQL 15 is not installed ({', '.join(missing)} missing): "
            "run deploy/system-deps.sh as root (make system-deps)",
            pytrace=False,
        )
    account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    # Not under pytest's temporary folder: /tmp/pytest-of-root is mode 700, out of the postgres user's reach.
    # A short path also keeps the socket (base/.s.PGSQL.port) within the 107 bytes a socket path may have.
    base = Path(tempfile.mkdtemp(prefix="lmgpa-debian-pg-")).resolve()
    data_dir, log_path = base / "data", base / "postgres.log"
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        initdb = [str(DEBIAN_POSTGRES_BIN / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"]
        initdb += ["--encoding=UTF8", f"--locale={_initdb_locale()}"]
        result = _run_pg_tool(initdb, account, base, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"initdb of Debian's PostgreSQL 15 failed ({result.returncode}):\n{result.stdout}")
        port = free_port()
        options = f"-h 127.0.0.1 -p {port} -k {shlex.quote(str(base))} -c fsync=off"  # data thrown away
        start = [str(DEBIAN_POSTGRES_BIN / "pg_ctl"), "-D", str(data_dir), "-w", "-t", "60"]
        start += ["-o", options, "-l", str(log_path), "start"]
        try:
            result = _run_pg_tool(start, account, base, timeout=70)
            info = _read_postmaster_pid(data_dir)
            if result.returncode != 0 or info is None:
                log = log_path.read_text(errors="replace") if log_path.exists() else "(no log)"
                pytest.fail(f"pg_ctl start failed ({result.returncode}):\n{result.stdout}\n{log}")
            _wait_ready("debian-postgres", info[0], log_path, lambda: _tcp_accepts(port), 60)
            yield _debian_server(data_dir, info[0], port)
        finally:
            _stop_debian_postgres(data_dir, account)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(server: ServerProcess, prefix: str = "test") -> Iterator[str]:
    """A new, empty, uniquely named database on server (its DSN), dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    dsn = create_database(server, name)
    try:
        yield dsn
    finally:
        drop_database(server, name)


@pytest.fixture
def fresh_database(postgres_server: ServerProcess) -> Iterator[str]:
    """The DSN of a new, empty, uniquely named database on the embedded PostgreSQL, dropped after the test."""
    with scratch_database(postgres_server) as dsn:
        yield dsn
