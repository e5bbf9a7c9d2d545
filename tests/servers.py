"""Pytest plugin: the embedded servers (PostgreSQL, Tansu broker, Chroma) per session, a database per test.

Enable it with ``pytest_plugins = ["tests.servers"]`` in a conftest, or ``-p tests.servers`` on the command
line. Each server starts on first use, under the session's temporary folder, and is stopped at the end.
"""

from __future__ import annotations

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
    stop_process,
)


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


@pytest.fixture
def fresh_database(postgres_server: ServerProcess) -> Iterator[str]:
    """The DSN of a new, empty, uniquely named database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    dsn = create_database(postgres_server, name)
    try:
        yield dsn
    finally:
        drop_database(postgres_server, name)
