"""Pytest plugin: the embedded servers (PostgreSQL, Tansu broker, Chroma, Qdrant) per session, a database per test.

Enable it with ``pytest_plugins = ["tests.servers"]`` in a conftest, or ``-p tests.servers`` on the command
line. Each server starts on first use, under the session's temporary folder, and is stopped at the end.
``debian_postgres`` is a second PostgreSQL, Debian's 15 (it has the uuid-ossp extension the embedded one
lacks), for the migrations' tests only.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.devstack.servers import (
    ServerProcess,
    create_database,
    drop_database,
    remove_postgres,
    start_broker,
    start_chroma,
    start_postgres,
    start_qdrant,
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


def restart_qdrant(server: ServerProcess, home: Path) -> ServerProcess:
    """Start Qdrant again on the same ports and data after a test stopped it; returns the new process."""
    CURRENT["qdrant"] = start_qdrant(home, port=server.port, grpc_port=server.grpc_port)
    return CURRENT["qdrant"]


@pytest.fixture(scope="session")
def qdrant_server(devstack_home: Path) -> Iterator[ServerProcess]:
    """A Qdrant server (the pinned 1.16.3 build); ``url`` is its REST URL, ``grpc_port`` its gRPC port."""
    server = start_qdrant(devstack_home)
    CURRENT["qdrant"] = server
    try:
        yield server
    finally:
        stop_process(CURRENT.pop("qdrant", server))


@pytest.fixture(scope="session")
def debian_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A throwaway cluster of Debian's PostgreSQL 15 (with uuid-ossp), started like the embedded one."""
    missing = [str(p) for p in (DEBIAN_POSTGRES_BIN / "initdb", DEBIAN_UUID_OSSP) if not p.exists()]
    if missing:
        pytest.fail(
            f"Debian's PostgreSQL 15 is not installed ({', '.join(missing)} missing): "
            "run deploy/system-deps.sh as root (make system-deps)",
            pytrace=False,
        )
    server = start_postgres(tmp_path_factory.mktemp("debian-postgres"), bin_dir=DEBIAN_POSTGRES_BIN)
    try:
        yield server
    finally:
        remove_postgres(server)


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
