"""Hybrid search on the real Qdrant server with the real model: the server's own BM25 finds a rare exact term the
embedding misses; a collection of the old layout is refused, never used; every filter reads a payload index."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from shared.devstack.servers import ServerProcess
from shared.embedder import SentenceEmbedder
from shared.errors import PermanentError
from shared.vectors.qdrant import BM25, DENSE, CollectionLayoutError, QdrantStore, dense_vector
from shared.vectors.records import SearchMode, VectorRecord

pytestmark = pytest.mark.integration

STUDENT, CLASS = uuid.uuid4(), uuid.uuid4()
# One chunk names "Wexlar" (a made-up name, as rare as a student's query gets); the others look or sound like it
# to the embedding, which sees word pieces, not words.
TEXTS = {
    "target": "As Wexlar observed in 1911, sediment settles where the river's current slows near the delta.",
    "wexler": "Professor Wexler explains erosion in the second lecture.",
    "wexford": "Wexford's notes on rivers and landscapes.",
    "waxlar": "Waxlar is the name of the lab assistant.",
    "vexlar": "Vexlar, a student, asked about deltas.",
    "wexlor": "Wexlor and Wexley wrote the review questions.",
    "wechsler": "Dr. Wechsler's chapter on sediment transport.",
    "rivers": "Rivers shape landscapes by eroding material in one place and depositing it in another.",
    "meander": "A meander forms where the outer bank erodes faster than the inner bank builds up.",
    "glossary": "Wex lar: the glossary entry for this term is missing.",
}


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(name="all-MiniLM-L6-v2")


@pytest.fixture
async def client(qdrant_server: ServerProcess) -> AsyncIterator[AsyncQdrantClient]:
    client = AsyncQdrantClient(url=qdrant_server.url)
    yield client
    await client.close()


async def test_a_rare_exact_term_is_first_by_sparse_and_hybrid_where_dense_misses_it(
    client: AsyncQdrantClient, embedder: SentenceEmbedder
) -> None:
    store = QdrantStore(client, collection=f"hybrid_{uuid.uuid4().hex[:10]}", dimensions=embedder.dimensions)
    await store.ensure_collection()
    vectors = embedder.embed_sync(list(TEXTS.values()))
    await store.upsert(
        [
            VectorRecord(
                point_id=str(uuid.uuid4()),
                document_id=f"note_{name}_0",
                vector=vector.tolist(),
                document=text,
                metadata={
                    "user_id": str(STUDENT),
                    "class_id": str(CLASS),
                    "content_type": "notes",
                    "source_id": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
                    "title": name,
                    "generation": 0,
                    "visible": True,
                },
            )
            for (name, text), vector in zip(TEXTS.items(), vectors, strict=True)
        ]
    )
    query = "Wexlar"
    vector = await embedder.embed_query(query)
    first = {}
    modes: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
    for mode in modes:
        hits = await store.search(vector, query_text=query, mode=mode, user_id=STUDENT, limit=5)
        first[mode] = hits[0].metadata["title"]
        assert {h.score_kind for h in hits} == {{"dense": "cosine", "sparse": "bm25", "hybrid": "rrf"}[mode]}
    assert first == {"dense": first["dense"], "sparse": "target", "hybrid": "target"}
    assert first["dense"] != "target", "the embedding ranks a look-alike first"
    sparse = await store.search(None, query_text=query, mode="sparse", user_id=STUDENT, limit=10)
    assert [h.metadata["title"] for h in sparse] == ["target"], "BM25 matches the word, not its look-alikes"
    assert await store.search(vector, user_id=STUDENT, limit=1), "a vector alone still searches (dense)"
    (point,) = await store.points_of_source(user_id=STUDENT, source_id=sparse[0].metadata["source_id"])
    assert dense_vector(point) == pytest.approx(vectors[0].tolist(), abs=1e-6)
    assert isinstance(point.vector, dict) and isinstance(point.vector[BM25], models.SparseVector)
    await client.delete_collection(store.collection)


async def test_a_collection_of_the_old_layout_is_refused_with_how_to_fix_it(
    client: AsyncQdrantClient,
) -> None:
    name = f"legacy_{uuid.uuid4().hex[:10]}"
    await client.create_collection(
        name, vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    store = QdrantStore(client, collection=name, dimensions=8)
    with pytest.raises(CollectionLayoutError, match="unnamed 8-d vector") as raised:
        await store.ensure_collection()
    assert "LMGPA_QDRANT_COLLECTION" in str(raised.value) and raised.value.code == "qdrant_collection_layout"
    with pytest.raises(CollectionLayoutError):
        await store.search([0.1] * 8, query_text="x", user_id=STUDENT)
    await client.delete_collection(name)

    await client.create_collection(
        name, vectors_config={DENSE: models.VectorParams(size=8, distance=models.Distance.COSINE)}
    )
    with pytest.raises(CollectionLayoutError, match="no sparse 'bm25' vector"):
        await QdrantStore(client, collection=name, dimensions=8).ensure_collection()
    with pytest.raises(CollectionLayoutError, match="a 16-d cosine vector"):
        await QdrantStore(client, collection=name, dimensions=16, bm25=False).ensure_collection()
    await QdrantStore(client, collection=name, dimensions=8, bm25=False).ensure_collection()  # local mode's
    await client.delete_collection(name)


async def test_processes_that_start_together_all_ensure_the_collection(
    client: AsyncQdrantClient, qdrant_server: ServerProcess
) -> None:
    # The indexing workers and the search API each ensure the collection as they start: all of them see it
    # missing and ask to create it, and all but one are told it exists (409 over REST, ALREADY_EXISTS over
    # gRPC). Seen in CI as an indexing worker that exited on start.
    name = f"together_{uuid.uuid4().hex[:10]}"
    assert qdrant_server.grpc_port is not None
    clients = [AsyncQdrantClient(url=qdrant_server.url) for _ in range(3)]
    clients += [
        AsyncQdrantClient(url=qdrant_server.url, grpc_port=qdrant_server.grpc_port, prefer_grpc=True)
        for _ in range(3)
    ]
    try:
        stores = [QdrantStore(c, collection=name, dimensions=8) for c in clients]
        await asyncio.gather(*(store.ensure_collection() for store in stores))
        assert await stores[0].check_layout()
        # The loser's path for each protocol, whoever lost above: asked to create a collection that exists.
        for store in (stores[0], stores[-1]):
            await store._create_collection()
        # A conflict is forgiven only because the collection is there: any other refusal still fails.
        with pytest.raises(CollectionLayoutError):
            await asyncio.gather(
                *(QdrantStore(c, collection=name, dimensions=16).ensure_collection() for c in clients)
            )
    finally:
        await client.delete_collection(name)
        for c in clients:
            await c.close()


async def test_the_collection_refuses_a_filter_without_a_payload_index(client: AsyncQdrantClient) -> None:
    store = QdrantStore(client, collection=f"strict_{uuid.uuid4().hex[:10]}", dimensions=8)
    await store.ensure_collection()
    await store.ensure_collection()  # idempotent
    unindexed = models.Filter(must=[models.FieldCondition(key="title", match=models.MatchValue(value="x"))])
    with pytest.raises(UnexpectedResponse, match="Index required"):
        await client.query_points(store.collection, query=[0.1] * 8, using=DENSE, query_filter=unindexed)
    await client.delete_collection(store.collection)


async def test_a_request_qdrant_refuses_is_permanent_and_says_why(client: AsyncQdrantClient) -> None:
    # A wrong vector size cannot succeed on a retry: the source fails now, with Qdrant's reason, instead of
    # being redelivered until its budget is spent and reported as an outage.
    store = QdrantStore(client, collection=f"refused_{uuid.uuid4().hex[:10]}", dimensions=384)
    await store.ensure_collection()
    record = VectorRecord(
        point_id=str(uuid.uuid4()),
        document_id="note_short_0",
        vector=[0.1] * 12,
        document="a vector of the wrong size",
        metadata={"user_id": str(STUDENT), "class_id": str(CLASS), "content_type": "notes", "visible": True},
    )
    with pytest.raises(PermanentError) as caught:
        await store.upsert([record])
    assert caught.value.code == "qdrant_rejected"
    assert "400" in caught.value.reason and "dimension" in caught.value.reason.lower()
