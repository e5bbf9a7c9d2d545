"""The search handler with in-memory ports, and the query batcher with a stand-in model."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from services.search.adapters import BatchingQueryEmbedder
from services.search.handlers import SearchRequest, search_chunks
from shared.vectors.records import DEFAULT_SEARCH_MODE, ScoreKind, SearchHit, SharedSource

ME, OTHER, CLASS = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def hit(user: uuid.UUID, score: float, score_kind: ScoreKind = "cosine", **meta: Any) -> SearchHit:
    source = uuid.uuid4()
    return SearchHit(
        score=score,
        score_kind=score_kind,
        document_id=f"note_{source}_0",
        text=f"text {score}",
        metadata={
            "user_id": str(user),
            "class_id": str(CLASS),
            "source_id": str(source),
            "content_type": "textbooks",
            "title": "Book",
            "chunk_index": 3,
            "page_start": 7,
            "page_end": 8,
            **meta,
        },
    )


class FakeStore:
    def __init__(self, hits: list[SearchHit]) -> None:
        self.hits = hits
        self.calls: list[dict[str, Any]] = []

    async def search(self, vector: Sequence[float] | None = None, **kwargs: Any) -> list[SearchHit]:
        self.calls.append({"vector": None if vector is None else list(vector), **kwargs})
        return self.hits


async def fake_embed(text: str) -> list[float]:
    return [float(len(text)), 1.0]


async def test_search_passes_the_tenant_and_filters_and_maps_hits() -> None:
    store = FakeStore([hit(ME, 0.9), hit(ME, 0.5)])
    request = SearchRequest(
        user_id=ME, class_id=CLASS, query="abc", content_types=["textbooks"], limit=2, mode="hybrid"
    )
    ticks = iter([1.0, 1.25])
    response = await search_chunks(request, embed=fake_embed, store=store, clock=lambda: next(ticks))
    assert store.calls == [
        {
            "vector": [3.0, 1.0],
            "query_text": "abc",
            "mode": "hybrid",
            "user_id": ME,
            "class_id": CLASS,
            "content_type": ["textbooks"],
            "shared": (),
            "limit": 2,
        }
    ]
    assert [h.score for h in response.hits] == [0.9, 0.5] and response.mode == "hybrid"
    first = response.hits[0]
    assert (first.page_start, first.page_end, first.chunk_index, first.content_type) == (7, 8, 3, "textbooks")
    assert response.took_ms == 250.0 and response.store == "qdrant"


async def test_a_hit_of_another_user_is_dropped_even_if_the_store_returned_it() -> None:
    store = FakeStore([hit(OTHER, 0.99), hit(ME, 0.4)])
    response = await search_chunks(
        SearchRequest(user_id=ME, query="q"), embed=fake_embed, store=store, clock=lambda: 0.0
    )
    assert [h.score for h in response.hits] == [0.4]


async def test_the_default_mode_is_the_services_and_bm25_alone_embeds_nothing() -> None:
    store = FakeStore([hit(ME, 7.5, score_kind="bm25")])

    async def no_embedding(text: str) -> list[float]:
        raise AssertionError("a sparse search needs no embedding")

    response = await search_chunks(
        SearchRequest(user_id=ME, query="q"), embed=no_embedding, store=store, clock=lambda: 0.0
    )
    assert DEFAULT_SEARCH_MODE == "sparse" and response.mode == "sparse"
    assert store.calls[0]["vector"] is None and store.calls[0]["mode"] == "sparse"
    assert response.hits[0].score_kind == "bm25"
    dense = await search_chunks(
        SearchRequest(user_id=ME, query="q"),
        embed=fake_embed,
        store=store,
        clock=lambda: 0.0,
        default_mode="dense",
    )
    assert dense.mode == "dense" and store.calls[1]["vector"] == [1.0, 1.0]


async def test_shared_hits_carry_who_shares_them_and_only_valid_shares_come_through() -> None:
    ann, bob = uuid.uuid4(), uuid.uuid4()
    anns, bobs = hit(ann, 0.8), hit(bob, 0.7)
    shared = [SharedSource(uuid.UUID(anns.metadata["source_id"]), ann)]
    # bob's source is named as shared by ann: a row that does not match its owner shares nothing.
    shared.append(SharedSource(uuid.UUID(bobs.metadata["source_id"]), ann))
    store = FakeStore([anns, bobs, hit(ME, 0.6)])
    asked: list[uuid.UUID] = []

    async def shares(user_id: uuid.UUID) -> list[SharedSource]:
        asked.append(user_id)
        return shared

    request = SearchRequest(user_id=ME, query="q", mode="dense", include_shared=True)
    response = await search_chunks(request, embed=fake_embed, store=store, clock=lambda: 0.0, shares=shares)
    assert asked == [ME] and store.calls[0]["shared"] == shared
    assert [(h.score, h.shared_by) for h in response.hits] == [(0.8, ann), (0.6, None)]
    alone = await search_chunks(
        SearchRequest(user_id=ME, query="q", mode="dense"),
        embed=fake_embed,
        store=store,
        clock=lambda: 0.0,
        shares=shares,
    )
    assert asked == [ME] and store.calls[1]["shared"] == () and [h.score for h in alone.hits] == [0.6]
    with pytest.raises(ValueError, match="include_shared"):
        await search_chunks(request, embed=fake_embed, store=store, clock=lambda: 0.0)


@pytest.mark.parametrize(
    "body",
    [
        {"query": "q"},  # no user
        {"user_id": str(ME), "query": ""},
        {"user_id": str(ME), "query": "q", "limit": 0},
        {"user_id": str(ME), "query": "q", "limit": 51},
        {"user_id": str(ME), "query": "q", "content_types": ["videos"]},
        {"user_id": "not-a-uuid", "query": "q"},
        {"user_id": str(ME), "query": "q", "mode": "semantic"},
    ],
)
def test_bad_requests_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SearchRequest.model_validate(body)


class SlowModel:
    """Records each call's batch; the first call blocks until released, so queries pile up behind it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.release.wait(5)
        return np.asarray([[float(len(t)), 0.0] for t in texts], dtype=np.float32)


async def test_queries_that_arrive_while_the_model_is_busy_share_its_next_call() -> None:
    model = SlowModel()
    embedder = BatchingQueryEmbedder(model)  # type: ignore[arg-type]
    embedder.start()
    try:
        first = asyncio.create_task(embedder("a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(embedder("b" * n)) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        model.release.set()
        vectors = await asyncio.gather(first, *rest)
    finally:
        await embedder.close()
    assert model.batches == [["a"], ["b", "bb", "bbb", "bbbb", "bbbbb"]]
    assert [v[0] for v in vectors] == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]


async def test_a_model_failure_fails_its_queries_and_the_next_ones_still_work() -> None:
    class Flaky:
        calls = 0

        def embed_sync(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("boom")
            return np.ones((len(texts), 2), dtype=np.float32)

    embedder = BatchingQueryEmbedder(Flaky())  # type: ignore[arg-type]
    embedder.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await embedder("x")
        assert await embedder("y") == [1.0, 1.0]
    finally:
        await embedder.close()
