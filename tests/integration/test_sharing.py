"""Classmate sharing against the real PostgreSQL (migrations applied) and the real Qdrant server: a search with
include_shared returns exactly the student's own sources and those shared with them validly (a shared_content
row from the source's owner over an accepted connection), whatever the graph; a revoked share is gone at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import AsyncQdrantClient

from services.search.adapters import PostgresShares
from services.search.handlers import SearchRequest, search_chunks
from shared.db import owners, sharing
from shared.db.migrate import apply_migrations
from shared.devstack.servers import ServerProcess
from shared.vectors.qdrant import QdrantStore
from shared.vectors.records import SEARCH_MODES, SearchMode, SharedSource, VectorRecord

pytestmark = pytest.mark.integration

DIMENSIONS = 4
STATUSES = ("accepted", "pending", "declined")


@dataclass(frozen=True)
class Graph:
    """Users 0..n-1, each with classes; sources (owner, class); connections (a, b, status); shares (source, by,
    with): a share's sharer need not own the source, nor be connected, nor differ from the recipient."""

    users: int
    classes_per_user: list[int]
    sources: list[tuple[int, int]]
    connections: list[tuple[int, int, str]]
    shares: list[tuple[int, int, int]]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    users = draw(st.integers(2, 5))
    classes = draw(st.lists(st.integers(1, 2), min_size=users, max_size=users))
    sources = draw(
        st.lists(
            st.tuples(st.integers(0, users - 1), st.integers(0, 1)).map(
                lambda s: (s[0], min(s[1], classes[s[0]] - 1))
            ),
            min_size=1,
            max_size=12,
        )
    )
    pairs = st.tuples(st.integers(0, users - 1), st.integers(0, users - 1)).filter(lambda p: p[0] != p[1])
    connections = draw(
        st.lists(
            st.tuples(pairs, st.sampled_from(STATUSES)).map(lambda c: (*c[0], c[1])),
            max_size=8,
            unique_by=lambda c: (c[0], c[1]),
        )
    )
    shares = draw(
        st.lists(
            st.tuples(st.integers(0, len(sources) - 1), st.integers(0, users - 1), st.integers(0, users - 1)),
            max_size=10,
        )
    )
    return Graph(users, classes, sources, connections, shares)


def expected_sources(graph: Graph, asker: int, klass: int | None) -> dict[int, int | None]:
    """Source index -> who shares it (None: the asker's own) for what the asker may see."""
    accepted = {frozenset((a, b)) for a, b, status in graph.connections if status == "accepted"}
    seen: dict[int, int | None] = {
        n: None for n, (owner, c) in enumerate(graph.sources) if owner == asker and klass in (None, c)
    }
    for source, by, recipient in graph.shares:
        owner = graph.sources[source][0]
        if recipient == asker and by == owner and by != asker and frozenset((by, asker)) in accepted:
            seen.setdefault(source, by)
    return seen


@pytest.fixture(scope="module")
def database(postgres_server: ServerProcess) -> Iterator[str]:
    from tests.servers import scratch_database

    with scratch_database(postgres_server, "sharing") as dsn:
        asyncio.run(apply_migrations(dsn))
        yield dsn


async def write_graph(
    pool: asyncpg.Pool, store: QdrantStore, graph: Graph
) -> tuple[list[uuid.UUID], list[list[uuid.UUID]], list[uuid.UUID]]:
    """The graph's rows (fresh ids) and one point per source; returns the users, classes and sources."""
    users = [uuid.uuid4() for _ in range(graph.users)]
    classes = [[uuid.uuid4() for _ in range(n)] for n in graph.classes_per_user]
    sources = [uuid.uuid4() for _ in graph.sources]
    for user, owned in zip(users, classes, strict=True):
        await owners.ensure_user(pool, user_id=user)
        for klass in owned:
            await owners.ensure_class(pool, class_id=klass, user_id=user)
    records = []
    for source, (owner, klass) in zip(sources, graph.sources, strict=True):
        await pool.execute(
            "INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage)"
            " VALUES ($1, 'note', $2, $3, 'n', 'completed', 'indexing')",
            source,
            users[owner],
            classes[owner][klass],
        )
        records.append(
            VectorRecord(
                point_id=str(uuid.uuid4()),
                document_id=f"note_{source}_0",
                vector=[0.5] * DIMENSIONS,
                document="lecture notes on derivatives",
                metadata={
                    "user_id": str(users[owner]),
                    "class_id": str(classes[owner][klass]),
                    "content_type": "notes",
                    "source_id": str(source),
                    "title": str(source),
                    "chunk_index": 0,
                    "generation": 0,
                    "visible": True,
                },
            )
        )
    await store.upsert(records)
    for a, b, status in graph.connections:
        await pool.execute(
            "INSERT INTO classmate_connections (user_id, classmate_user_id, status) VALUES ($1, $2, $3)",
            users[a],
            users[b],
            status,
        )
    for source, by, recipient in graph.shares:
        await share(pool, sources[source], by=users[by], to=users[recipient])
    return users, classes, sources


async def share(pool: asyncpg.Pool, source: uuid.UUID, *, by: uuid.UUID, to: uuid.UUID) -> None:
    await pool.execute(
        "INSERT INTO shared_content (content_type, content_id, shared_by_user_id, shared_with_user_id)"
        " VALUES ('note', $1, $2, $3)",
        source,
        by,
        to,
    )


async def fixed_vector(_: str) -> list[float]:
    return [0.5] * DIMENSIONS


async def search(
    store: QdrantStore,
    pool: asyncpg.Pool,
    user: uuid.UUID,
    *,
    klass: uuid.UUID | None = None,
    mode: SearchMode | None = None,
    include_shared: bool = True,
) -> dict[str, str | None]:
    """source_id -> shared_by of every hit, through the search API's handler and its PostgreSQL adapter."""
    request = SearchRequest(
        user_id=user,
        class_id=klass,
        query="lecture notes",
        limit=50,
        mode=mode,
        include_shared=include_shared,
    )
    response = await search_chunks(
        request, embed=fixed_vector, store=store, clock=lambda: 0.0, shares=PostgresShares(pool)
    )
    found = {str(h.source_id): (str(h.shared_by) if h.shared_by else None) for h in response.hits}
    assert len(found) == len(response.hits), "one chunk per source"
    return found


@pytest.fixture
async def qdrant(qdrant_server: ServerProcess) -> AsyncIterator[QdrantStore]:
    client = AsyncQdrantClient(url=qdrant_server.url)
    store = QdrantStore(client, collection=f"sharing_{uuid.uuid4().hex[:10]}", dimensions=DIMENSIONS)
    await store.ensure_collection()
    yield store
    await client.delete_collection(store.collection)
    await client.close()


async def scenario(
    dsn: str, url: str, graph: Graph, asker: int, in_class: bool, mode: SearchMode | None
) -> None:
    client = AsyncQdrantClient(url=url)
    store = QdrantStore(client, collection=f"sharing_{uuid.uuid4().hex[:10]}", dimensions=DIMENSIONS)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await store.ensure_collection()
        users, classes, sources = await write_graph(pool, store, graph)
        klass = 0 if in_class else None
        found = await search(
            store, pool, users[asker], klass=classes[asker][0] if klass is not None else None, mode=mode
        )
        wanted = expected_sources(graph, asker, klass)
        assert found == {
            str(sources[n]): (str(users[by]) if by is not None else None) for n, by in wanted.items()
        }
        own_only = await search(store, pool, users[asker], mode=mode, include_shared=False)
        assert own_only == {str(sources[n]): None for n, (o, _) in enumerate(graph.sources) if o == asker}
    finally:
        await pool.close()
        await client.delete_collection(store.collection)
        await client.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    graph=graphs(),
    asker=st.integers(0, 4),
    in_class=st.booleans(),
    mode=st.one_of(st.none(), st.sampled_from(SEARCH_MODES)),
)
def test_a_search_returns_exactly_the_students_own_and_validly_shared_sources(
    graph: Graph,
    asker: int,
    in_class: bool,
    mode: SearchMode | None,
    database: str,
    qdrant_server: ServerProcess,
) -> None:
    asyncio.run(scenario(database, qdrant_server.url, graph, asker % graph.users, in_class, mode))


async def test_revoking_a_share_or_the_connection_takes_effect_on_the_next_search(
    database: str, qdrant: QdrantStore
) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        graph = Graph(
            users=3,
            classes_per_user=[1, 1, 1],
            sources=[(0, 0), (1, 0), (2, 0)],
            connections=[(1, 0, "accepted"), (0, 2, "pending")],
            shares=[(1, 1, 0), (2, 2, 0)],  # ann (1) and bob (2) share their notes with me (0)
        )
        (me, ann, bob), _, (mine, anns, bobs) = await write_graph(pool, qdrant, graph)
        assert await sharing.sources_shared_with(pool, user_id=me) == [SharedSource(anns, ann)]
        assert await search(qdrant, pool, me) == {str(mine): None, str(anns): str(ann)}, "bob is not accepted"
        await pool.execute("UPDATE classmate_connections SET status = 'accepted' WHERE user_id = $1", me)
        assert await search(qdrant, pool, me) == {str(mine): None, str(anns): str(ann), str(bobs): str(bob)}

        await pool.execute("DELETE FROM shared_content WHERE content_id = $1", anns)  # ann revokes
        assert await search(qdrant, pool, me) == {str(mine): None, str(bobs): str(bob)}
        await pool.execute("UPDATE classmate_connections SET status = 'declined' WHERE user_id = $1", me)
        assert await search(qdrant, pool, me) == {str(mine): None}, (
            "a connection no longer accepted shares nothing"
        )
        assert await search(qdrant, pool, ann) == {str(anns): None}, "sharing never gives the sharer anything"
    finally:
        await pool.close()
