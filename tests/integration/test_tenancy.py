"""Tenancy as a property: whatever is stored and however it is asked, a search of the Qdrant server returns only
the asker's content (its tenant index and filters, as in production)."""

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
from shared.vectors.records import to_record

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
        chunk = EmbeddedChunk(
            chunk_index=0, text=f"text {n}", token_count=2, vector=encode_vector(unit(values))
        )
        records.append(to_record(source, chunk, model="m"))
    await store.upsert(records)
    hits = await store.search(
        unit(query), user_id=asker, class_id=klass, content_type=content_type, limit=100
    )
    expected = [
        r
        for r in records
        if r.metadata["user_id"] == str(asker)
        and (klass is None or r.metadata["class_id"] == str(klass))
        and (content_type is None or r.metadata["content_type"] == content_type)
    ]
    assert all(h.metadata["user_id"] == str(asker) for h in hits), "another user's content came back"
    assert {h.document_id for h in hits} == {r.document_id for r in expected}, "and all of the asker's did"
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
)
def test_a_search_returns_exactly_the_askers_matching_content(
    stored: list[tuple[uuid.UUID, uuid.UUID, str, list[float]]],
    asker: uuid.UUID,
    klass: uuid.UUID | None,
    content_type: str | None,
    query: list[float],
    qdrant_server: ServerProcess,
) -> None:
    asyncio.run(scenario(stored, asker, klass, content_type, query, qdrant_server.url))
