"""A vector store that accepts connections and then goes quiet (paused, wedged, swapping) must not hold a worker
forever: each request is bounded by `store_timeout_seconds`, fails as transient (the runner retries it), and
works again once the server answers. Chroma's client sends every request with no timeout at all, so without
the bound its requests would wait for good.

The servers are this module's own (stopping the session's would disturb other tests); they are paused with
SIGSTOP, which is what a wedged server looks like from outside: the port is open, nothing answers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.devstack import servers
from shared.devstack.servers import ServerProcess
from shared.errors import TransientError
from shared.settings import Settings
from shared.vectors.chroma import ChromaStore
from shared.vectors.qdrant import QdrantStore, make_qdrant_client
from shared.vectors.records import VectorRecord, chroma_collection_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BOUND = 2.0
"""store_timeout_seconds in these tests."""


def own(start: Callable[[Path], ServerProcess], home: Path) -> Iterator[ServerProcess]:
    """A server of this module's own, resumed (if a test left it paused) and stopped at the end."""
    server = start(home)
    try:
        yield server
    finally:
        resume(server)
        servers.stop_process(server)


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from own(servers.start_chroma, tmp_path_factory.mktemp("quiet-chroma"))


@pytest.fixture(scope="module")
def qdrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from own(servers.start_qdrant, tmp_path_factory.mktemp("quiet-qdrant"))


def record(user: uuid.UUID, klass: uuid.UUID, n: int) -> VectorRecord:
    source = uuid.uuid5(uuid.NAMESPACE_OID, f"{user}-{n}")
    return VectorRecord(
        point_id=str(uuid.uuid5(source, "0")),
        document_id=f"note_{source}_0",
        vector=[1.0 if i == n else 0.0 for i in range(384)],
        document=f"note number {n}",
        metadata={
            "user_id": str(user),
            "class_id": str(klass),
            "content_type": "notes",
            "source_id": str(source),
            "title": f"note {n}",
            "generation": 0,
            "visible": True,
        },
    )


def resume(server: ServerProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGCONT)


class Paused:
    """SIGSTOP a server for the block, SIGCONT after."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def __enter__(self) -> None:
        os.kill(self.server.pid, signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        resume(self.server)


async def test_a_quiet_chroma_fails_a_request_as_transient_within_the_bound(chroma: ServerProcess) -> None:
    settings = Settings(chroma_url=chroma.url, store_timeout_seconds=BOUND)
    store = await ChromaStore.connect(settings)
    user, klass = uuid.uuid4(), uuid.uuid4()
    await store.upsert([record(user, klass, 0)])
    with Paused(chroma):
        for request in (
            lambda: store.upsert([record(user, klass, 1)]),
            lambda: store.count(chroma_collection_name(user, klass, "notes"), where={"user_id": str(user)}),
            lambda: store.search(
                record(user, klass, 0).vector, user_id=user, class_id=klass, content_types=["notes"]
            ),
        ):
            started = time.monotonic()
            with pytest.raises(TransientError) as caught:
                await request()
            waited = time.monotonic() - started
            assert caught.value.code == "chroma_unavailable"
            assert f"did not answer within {BOUND:g} s" in str(caught.value)
            assert BOUND - 0.1 <= waited < BOUND + 3, waited
        with pytest.raises(TransientError):  # a new client's first request is bounded too
            await ChromaStore.connect(settings)
    await store.upsert([record(user, klass, 1)])  # the server answers again: the same store works
    assert await store.count(chroma_collection_name(user, klass, "notes"), where={"user_id": str(user)}) == 2


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
async def test_a_quiet_qdrant_fails_a_request_as_transient_within_the_bound(
    qdrant: ServerProcess, grpc: bool
) -> None:
    settings = Settings(
        qdrant_url=qdrant.url,
        qdrant_grpc_port=qdrant.grpc_port or 6334,
        qdrant_prefer_grpc=grpc,
        qdrant_collection=f"quiet_{uuid.uuid4().hex[:10]}",
        store_timeout_seconds=BOUND,
    )
    client = make_qdrant_client(settings)
    store = QdrantStore.from_settings(client, settings)
    await store.ensure_collection()
    user, klass = uuid.uuid4(), uuid.uuid4()
    try:
        await store.upsert([record(user, klass, 0)])
        with Paused(qdrant):
            started = time.monotonic()
            with pytest.raises(TransientError) as caught:
                await store.upsert([record(user, klass, 1)])
            waited = time.monotonic() - started
        assert caught.value.code == "qdrant_unavailable"
        assert BOUND - 0.1 <= waited < BOUND + 3, waited
        await store.upsert([record(user, klass, 1)])
        assert len(await store.search(record(user, klass, 1).vector, user_id=user, limit=5)) == 2
    finally:
        await client.delete_collection(settings.qdrant_collection)
        await client.close()
