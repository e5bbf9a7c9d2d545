"""Tenancy as a property: whatever is stored and however it is asked (dense, sparse or hybrid, with or without
sources named as shared), a search of the Qdrant server returns only the asker's content and the shared sources
of the users who own them (its tenant index and filters, as in production)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import AsyncQdrantClient

from shared.devstack.servers import ServerProcess
from shared.events.models import EmbeddedChunk, SourceRef, encode_vector
from shared.vectors.qdrant import QdrantStore
from shared.vectors.records import SEARCH_MODES, SearchMode, SharedSource, to_record

pytestmark = [pytest.mark.integration]

USERS = [uuid.UUID(int=n) for n in range(1, 5)]
CLASSES = [uuid.UUID(int=100 + n) for n in range(3)]
KINDS = ["audio", "photo", "textbook", "note"]

chunk_spec = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(CLASSES),
    st.sampled_from(KINDS),
    st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=8, max_size=8),
)


def unit(values: list[float]) -> list[float]:
    vector = np.asarray(values, dtype=np.float32) + 1e-3
    return (vector / np.linalg.norm(vector)).tolist()


async def scenario(
    stored: list[tuple[uuid.UUID, uuid.UUID, str, list[float]]],
    asker: uuid.UUID,
    klass: uuid.UUID | None,
    content_type: str | None,
    query: list[float],
    url: str,
    mode: SearchMode | None = None,
    shares: list[tuple[int, uuid.UUID]] | None = None,
) -> None:
    client = AsyncQdrantClient(url=url)
    store = QdrantStore(client, collection=f"tenancy_{uuid.uuid4().hex[:12]}", dimensions=8)
    await store.ensure_collection()
    records = []
    for n, (user, class_id, kind, values) in enumerate(stored):
        source = SourceRef(
            source_id=uuid.uuid4(),
            kind=kind,
            user_id=user,
            class_id=class_id,
            title=f"s{n}",  # type: ignore[arg-type]
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        # Every chunk holds the query's words, so BM25 ranks every one of them too (an exact filter check).
        chunk = EmbeddedChunk(
            chunk_index=0, text=f"lecture notes {n}", token_count=3, vector=encode_vector(unit(values))
        )
        records.append(to_record(source, chunk, model="m"))
    await store.upsert(records)
    # A share names a stored source and a user who may or may not own it: only the owner's share counts.
    shared = [
        SharedSource(source_id=uuid.UUID(str(records[n % len(records)].metadata["source_id"])), shared_by=by)
        for n, by in shares or []
    ]
    hits = await store.search(
        unit(query),
        query_text="lecture notes",
        mode=mode,
        user_id=asker,
        class_id=klass,
        content_type=content_type,
        shared=shared,
        limit=100,
    )
    # A row sharing one's own source with oneself changes nothing: one's own content follows the class filter.
    valid = {(str(s.source_id), str(s.shared_by)) for s in shared if s.shared_by != asker}
    expected = [
        r
        for r in records
        if (content_type is None or r.metadata["content_type"] == content_type)
        and (
            (r.metadata["user_id"] == str(asker) and (klass is None or r.metadata["class_id"] == str(klass)))
            or (r.metadata["source_id"], r.metadata["user_id"]) in valid
        )
    ]
    assert all(
        h.metadata["user_id"] == str(asker) or (h.metadata["source_id"], h.metadata["user_id"]) in valid
        for h in hits
    ), "another user's content came back"
    assert {h.document_id for h in hits} == {r.document_id for r in expected}, "and all of the asker's did"
    kinds = {"dense": "cosine", "sparse": "bm25", "hybrid": "rrf"}
    assert all(h.score_kind == kinds[mode or store.search_mode] for h in hits)
    await client.delete_collection(store.collection)
    await client.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    stored=st.lists(chunk_spec, min_size=1, max_size=25),
    asker=st.sampled_from(USERS),
    klass=st.one_of(st.none(), st.sampled_from(CLASSES)),
    content_type=st.one_of(st.none(), st.sampled_from(["transcripts", "photos", "textbooks", "notes"])),
    query=st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=8, max_size=8),
    mode=st.one_of(st.none(), st.sampled_from(SEARCH_MODES)),
    shares=st.lists(st.tuples(st.integers(0, 24), st.sampled_from(USERS)), max_size=6),
)
def test_a_search_returns_exactly_the_askers_matching_content(
    stored: list[tuple[uuid.UUID, uuid.UUID, str, list[float]]],
    asker: uuid.UUID,
    klass: uuid.UUID | None,
    content_type: str | None,
    query: list[float],
    mode: SearchMode | None,
    shares: list[tuple[int, uuid.UUID]],
    qdrant_server: ServerProcess,
) -> None:
    asyncio.run(
        scenario(stored, asker, klass, content_type, query, qdrant_server.url, mode=mode, shares=shares)
    )
