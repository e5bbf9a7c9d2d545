"""What a Qdrant search asks the server, built without one: the filter (tenant, class, type, visible, shared
sources) and the Query API request of each mode (which prefetches, under which filter)."""

from __future__ import annotations

import typing
import uuid
from typing import Any

import pytest
from qdrant_client import models

from shared.settings import Settings
from shared.vectors.qdrant import (
    BM25,
    BM25_MODEL,
    DBSF,
    DENSE,
    PAYLOAD_INDEXES,
    PREFETCH_LIMIT,
    RRF,
    QdrantStore,
    query_request,
    score_kind,
    search_filter,
)
from shared.vectors.records import (
    DEFAULT_SEARCH_MODE,
    SEARCH_MODES,
    SearchMode,
    SharedSource,
    VectorRecord,
)

ME, ANN, BOB = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
CLASS = uuid.UUID(int=100)
S1, S2, S3 = uuid.UUID(int=1001), uuid.UUID(int=1002), uuid.UUID(int=1003)


def conditions(flt: models.Filter) -> dict[str, Any]:
    """A filter's must/should as {key: value} dicts, nested filters as dicts of their own (for comparing)."""

    def one(c: Any) -> Any:
        if isinstance(c, models.Filter):
            return conditions(c)
        match = c.match
        return {c.key: match.value if isinstance(match, models.MatchValue) else sorted(match.any)}

    return {
        part: [one(c) for c in getattr(flt, part)]
        for part in ("must", "should", "must_not")
        if getattr(flt, part)
    }


def keys(flt: models.Filter) -> set[str]:
    """Every payload key a filter reads, at any depth."""
    found: set[str] = set()
    for part in (flt.must, flt.should, flt.must_not):
        for c in part or []:
            found |= keys(c) if isinstance(c, models.Filter) else {c.key}
    return found


def test_a_search_of_ones_own_content_filters_on_the_tenant_class_type_and_visibility() -> None:
    flt = search_filter(user_id=ME, class_id=CLASS, content_type=["notes", "textbooks"])
    assert conditions(flt) == {
        "must": [
            {"user_id": str(ME)},
            {"class_id": str(CLASS)},
            {"content_type": ["notes", "textbooks"]},
            {"visible": True},
        ]
    }
    assert conditions(search_filter(user_id=ME)) == {"must": [{"user_id": str(ME)}, {"visible": True}]}


def test_shared_sources_are_each_under_the_user_who_shares_them_and_the_class_binds_only_ones_own() -> None:
    shared = [
        SharedSource(source_id=S1, shared_by=ANN),
        SharedSource(source_id=S2, shared_by=ANN),
        SharedSource(source_id=S3, shared_by=BOB),
        SharedSource(source_id=S3, shared_by=ME),  # a row naming oneself adds nothing
    ]
    flt = search_filter(user_id=ME, class_id=CLASS, content_type="notes", shared=shared)
    assert conditions(flt) == {
        "must": [{"visible": True}, {"content_type": "notes"}],
        "should": [
            {"must": [{"user_id": str(ME)}, {"class_id": str(CLASS)}]},
            {"must": [{"user_id": str(ANN)}, {"source_id": sorted([str(S1), str(S2)])}]},
            {"must": [{"user_id": str(BOB)}, {"source_id": [str(S3)]}]},
        ],
    }


@pytest.mark.parametrize("with_shares", [False, True])
def test_every_key_a_search_filters_on_has_a_payload_index(with_shares: bool) -> None:
    shared = [SharedSource(source_id=S1, shared_by=ANN)] if with_shares else []
    flt = search_filter(user_id=ME, class_id=CLASS, content_type="notes", shared=shared)
    assert keys(flt) <= set(PAYLOAD_INDEXES)


def test_dense_asks_the_named_embedding_under_the_filter() -> None:
    flt = search_filter(user_id=ME)
    request = query_request(mode="dense", vector=[0.1, 0.2], query_text="ignored", query_filter=flt, limit=10)
    assert request == {"query": [0.1, 0.2], "using": DENSE, "query_filter": flt, "limit": 10}


def test_sparse_asks_the_server_for_bm25_of_the_text_and_needs_no_vector() -> None:
    flt = search_filter(user_id=ME)
    request = query_request(mode="sparse", vector=None, query_text="gnuplot splot", query_filter=flt, limit=4)
    assert request == {
        "query": models.Document(text="gnuplot splot", model=BM25_MODEL),
        "using": BM25,
        "query_filter": flt,
        "limit": 4,
    }


@pytest.mark.parametrize(("fusion", "kind"), [(RRF, "rrf"), (DBSF, "dbsf")])
def test_hybrid_prefetches_both_rankings_each_under_the_filter_and_fuses_them(
    fusion: models.FusionQuery, kind: str
) -> None:
    flt = search_filter(user_id=ME, shared=[SharedSource(source_id=S1, shared_by=ANN)])
    request = query_request(
        mode="hybrid", vector=[1.0, 0.0], query_text="chain rule", query_filter=flt, limit=10, fusion=fusion
    )
    dense, sparse = request["prefetch"]
    assert (dense.using, dense.query, dense.filter, dense.limit) == (DENSE, [1.0, 0.0], flt, PREFETCH_LIMIT)
    assert (sparse.using, sparse.query, sparse.filter, sparse.limit) == (
        BM25,
        models.Document(text="chain rule", model=BM25_MODEL),
        flt,
        PREFETCH_LIMIT,
    )
    assert request["query"] == fusion and request["query_filter"] == flt and request["limit"] == 10
    assert score_kind("hybrid", fusion) == kind
    deep = query_request(
        mode="hybrid", vector=[1.0], query_text="x", query_filter=flt, limit=PREFETCH_LIMIT * 2
    )
    assert all(p.limit == PREFETCH_LIMIT * 2 for p in deep["prefetch"]), "each side brings at least the limit"


@pytest.mark.parametrize(
    ("mode", "vector", "text"), [("dense", None, "q"), ("sparse", [1.0], ""), ("hybrid", None, "q")]
)
def test_a_mode_without_what_it_ranks_by_is_refused(
    mode: SearchMode, vector: list[float] | None, text: str
) -> None:
    with pytest.raises(ValueError, match=mode):
        query_request(
            mode=mode, vector=vector, query_text=text, query_filter=search_filter(user_id=ME), limit=5
        )


def test_scores_say_what_they_are() -> None:
    assert (score_kind("dense"), score_kind("sparse"), score_kind("hybrid")) == ("cosine", "bm25", "rrf")


def test_points_carry_the_embedding_and_the_text_for_the_servers_bm25() -> None:
    record = VectorRecord(point_id="p", document_id="d", vector=[0.5, 0.5], document="The chain rule.")
    server = QdrantStore(None, collection="c", dimensions=2)  # type: ignore[arg-type]
    assert server._vectors(record) == {
        DENSE: [0.5, 0.5],
        BM25: models.Document(text="The chain rule.", model=BM25_MODEL),
    }
    local = QdrantStore(None, collection="c", dimensions=2, bm25=False)  # type: ignore[arg-type]
    assert local._vectors(record) == {DENSE: [0.5, 0.5]} and local.search_mode == "dense"


def test_the_setting_takes_exactly_the_stores_modes_and_local_mode_has_no_bm25(tmp_path: Any) -> None:
    (field_type,) = [Settings.model_fields["search_mode"].annotation]
    assert typing.get_args(field_type) == typing.get_args(SearchMode) and set(SEARCH_MODES) == set(
        typing.get_args(SearchMode)
    )
    store = QdrantStore(None, collection="c", dimensions=1)  # type: ignore[arg-type]
    assert Settings.model_fields["search_mode"].default == DEFAULT_SEARCH_MODE == store.search_mode
    server = Settings(qdrant_url="http://q:6333", qdrant_path=None, search_mode="hybrid")
    assert QdrantStore.from_settings(None, server).bm25  # type: ignore[arg-type]
    assert QdrantStore.from_settings(None, server).search_mode == "hybrid"  # type: ignore[arg-type]
    local = QdrantStore.from_settings(None, Settings(qdrant_url=None, qdrant_path=tmp_path))  # type: ignore[arg-type]
    assert not local.bm25 and local.search_mode == "dense"
