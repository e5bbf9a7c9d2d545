"""The search API in-process (its real lifespan: the packaged model, the Qdrant server, PostgreSQL for what
classmates share) over HTTP."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from shared.db import owners
from shared.db.migrate import apply_migrations
from shared.devstack.servers import ServerProcess
from shared.settings import get_settings
from shared.vectors.records import VectorRecord

pytestmark = pytest.mark.integration

TEXTS = {
    "mine-derivative": "The derivative of sine is cosine, and the derivative of cosine is minus sine.",
    "mine-cells": "Mitochondria produce most of the cell's ATP by oxidative phosphorylation.",
    "theirs-derivative": "The derivative of sine is cosine: a classmate's identical sentence.",
}


@pytest.fixture
async def api(
    qdrant_server: ServerProcess, fresh_database: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, uuid.UUID]]]:
    collection = f"search_{uuid.uuid4().hex[:10]}"
    await apply_migrations(fresh_database)
    saved = dict(os.environ)
    os.environ.update(
        {
            "LMGPA_QDRANT_URL": qdrant_server.url,
            "LMGPA_QDRANT_COLLECTION": collection,
            "LMGPA_DATABASE_URL": fresh_database,
        }
    )
    for name in ("LMGPA_QDRANT_PATH", "LMGPA_SEARCH_MODE"):
        os.environ.pop(name, None)
    get_settings.cache_clear()
    sys.modules.pop("services.search.app", None)
    module = importlib.import_module("services.search.app")
    ids = {"me": uuid.uuid4(), "them": uuid.uuid4(), "class": uuid.uuid4(), "other_class": uuid.uuid4()}
    try:
        async with module.app.router.lifespan_context(module.app):
            transport = httpx.ASGITransport(app=module.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://search") as client:
                assert (await client.get("/ready")).json() == {"ready": True}
                embed = module.state.embed
                records = []
                for n, (name, text) in enumerate(TEXTS.items()):
                    owner = ids["me"] if name.startswith("mine") else ids["them"]
                    klass = ids["class"] if name != "mine-cells" else ids["other_class"]
                    records.append(
                        VectorRecord(
                            point_id=str(uuid.uuid4()),
                            document_id=f"note_{name}_0",
                            vector=await embed(text),
                            document=text,
                            metadata={
                                "user_id": str(owner),
                                "class_id": str(klass),
                                "content_type": "notes",
                                "source_id": str(uuid.uuid5(uuid.NAMESPACE_OID, name + str(n))),
                                "title": name,
                                "chunk_index": 0,
                                "generation": 0,
                                "visible": True,
                            },
                        )
                    )
                await module.state.store.upsert(records)
                try:
                    yield client, ids
                finally:
                    await module.state.store.client.delete_collection(collection)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        sys.modules.pop("services.search.app", None)


async def test_search_returns_only_the_students_own_best_chunk_first(
    api: tuple[httpx.AsyncClient, dict[str, uuid.UUID]],
) -> None:
    client, ids = api
    body = {"user_id": str(ids["me"]), "query": "what is the derivative of sin x", "limit": 5}
    answer = (await client.post("/v1/search", json=body)).json()
    assert answer["mode"] == "sparse" and [h["title"] for h in answer["hits"]] == ["mine-derivative"]
    assert answer["hits"][0]["score_kind"] == "bm25" and answer["hits"][0]["shared_by"] is None
    body["mode"] = "dense"  # the embedding ranks every chunk, the unrelated one last
    hits = (await client.post("/v1/search", json=body)).json()["hits"]
    assert [h["title"] for h in hits] == ["mine-derivative", "mine-cells"]  # never the classmate's
    assert hits[0]["score"] > hits[1]["score"] and hits[0]["content_type"] == "notes"
    assert {h["score_kind"] for h in hits} == {"cosine"}
    hybrid = (await client.post("/v1/search", json={**body, "mode": "hybrid"})).json()["hits"]
    assert [h["title"] for h in hybrid] == ["mine-derivative", "mine-cells"] and hybrid[0][
        "score_kind"
    ] == "rrf"
    in_class = (await client.post("/v1/search", json={**body, "class_id": str(ids["class"])})).json()["hits"]
    assert [h["title"] for h in in_class] == ["mine-derivative"]
    theirs = (await client.post("/v1/search", json={**body, "user_id": str(ids["them"])})).json()["hits"]
    assert [h["title"] for h in theirs] == ["theirs-derivative"]


async def test_bad_requests_get_422_and_concurrent_queries_all_answer(
    api: tuple[httpx.AsyncClient, dict[str, uuid.UUID]],
) -> None:
    client, ids = api
    bad = await client.post("/v1/search", json={"user_id": str(ids["me"]), "query": "", "limit": 5})
    assert bad.status_code == 422
    queries = [f"derivative question {n}" for n in range(16)]
    answers = await asyncio.gather(
        *(
            client.post("/v1/search", json={"user_id": str(ids["me"]), "query": q, "limit": 1})
            for q in queries
        )
    )
    assert all(a.status_code == 200 and len(a.json()["hits"]) == 1 for a in answers)
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/search" in schema["paths"]


async def test_include_shared_adds_what_an_accepted_classmate_shares_and_nothing_else(
    api: tuple[httpx.AsyncClient, dict[str, uuid.UUID]],
) -> None:
    client, ids = api
    me, them = ids["me"], ids["them"]
    theirs = uuid.uuid5(uuid.NAMESPACE_OID, "theirs-derivative2")
    pool = await asyncpg.create_pool(os.environ["LMGPA_DATABASE_URL"], min_size=1, max_size=1)
    try:
        for user in (me, them):
            await owners.ensure_user(pool, user_id=user)
        await pool.execute(
            "INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, status, stage)"
            " VALUES ($1, 'note', $2, $3, 'completed', 'indexing')",
            theirs,
            them,
            ids["class"],
        )
        await pool.execute(
            "INSERT INTO shared_content (content_type, content_id, shared_by_user_id, shared_with_user_id)"
            " VALUES ('note', $1, $2, $3)",
            theirs,
            them,
            me,
        )
        body = {"user_id": str(me), "query": "derivative of sine", "include_shared": True, "mode": "sparse"}
        pending = (await client.post("/v1/search", json=body)).json()["hits"]
        assert [h["title"] for h in pending] == ["mine-derivative"], "no accepted connection: nothing shared"
        await pool.execute(
            "INSERT INTO classmate_connections (user_id, classmate_user_id, status) VALUES ($1, $2, 'accepted')",
            them,
            me,
        )
        shared = (await client.post("/v1/search", json=body)).json()["hits"]
        assert sorted((h["title"], h["shared_by"]) for h in shared) == [
            ("mine-derivative", None),
            ("theirs-derivative", str(them)),
        ]
        alone = (await client.post("/v1/search", json={**body, "include_shared": False})).json()["hits"]
        assert [h["title"] for h in alone] == ["mine-derivative"]
        await pool.execute("DELETE FROM shared_content WHERE content_id = $1", theirs)
        revoked = (await client.post("/v1/search", json=body)).json()["hits"]
        assert [h["title"] for h in revoked] == ["mine-derivative"], (
            "a revoked share is gone at the next search"
        )
    finally:
        await pool.close()
