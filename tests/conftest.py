"""Shared fixtures: the embedded servers (tests.servers) and, for integration tests, the running pipeline."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.devstack.servers import ServerProcess, create_database

pytest_plugins = ["tests.servers"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
async def pipeline(
    postgres_server: ServerProcess,
    kafka_broker: ServerProcess,
    chroma_server: ServerProcess,
    qdrant_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[object]:
    """Upload, embedding and indexing running in this process against the real servers (one per session)."""
    from tests.harness import running_pipeline

    dsn = create_database(postgres_server, "pipeline_it")
    async with running_pipeline(
        database_url=dsn,
        bootstrap=kafka_broker.url,
        chroma_url=chroma_server.url,
        qdrant=qdrant_server,
        home=tmp_path_factory.mktemp("pipeline"),
        services=("upload", "embedding", "indexing"),
    ) as harness:
        yield harness


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> object:
    """Print figures a test measured so they show in the run's output (CI's too), not only on failure."""

    def write(text: str) -> None:
        with capsys.disabled():
            print(text, flush=True)

    return write
