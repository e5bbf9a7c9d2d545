"""``lmgpa mcp`` as a client sees it: the real server over stdio against a real Chroma server, two students' data.

Student B's documents are written to resemble the queries better than A's do, into a class A also has, so any
leak would show up first in A's results.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from shared.devstack.servers import ServerProcess, postgres_dsn
from shared.embedder import SentenceEmbedder
from shared.events.models import EmbeddedChunk, SourceRef, encode_vector
from shared.settings import Settings
from shared.vectors.chroma import ChromaStore
from shared.vectors.records import VectorRecord, chroma_collection_name, to_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
EIGHT_TOOLS = {
    "chroma_list_collections",
    "chroma_search",
    "chroma_get_collection_info",
    "chroma_peek_documents",
    "chroma_count_documents",
    "qdrant_search",
    "diagnose_source",
    "why_not_found",
}
HIDDEN_TEXT = "Reprocess draft, not yet shown: derivatives, rates of change and the slopes of tangent lines."


@dataclass(frozen=True)
class World:
    """What was written: two students sharing a class id, one with a second class, and a hidden generation."""

    chroma_url: str
    database_url: str
    qdrant_url: str
    user_a: uuid.UUID
    user_b: uuid.UUID
    klass: uuid.UUID
    b_only_class: uuid.UUID
    records: list[VectorRecord]

    def name(self, user: uuid.UUID, content_type: str, klass: uuid.UUID | None = None) -> str:
        """A collection name (default class: the shared one)."""
        return chroma_collection_name(user, klass or self.klass, content_type)

    def visible(self, user: uuid.UUID, collection: str) -> list[VectorRecord]:
        """The records of a collection a search of this user may see."""
        return [
            r
            for r in self.records
            if r.chroma_collection == collection
            and r.metadata["user_id"] == str(user)
            and r.metadata["visible"]
        ]


def source(user: uuid.UUID, klass: uuid.UUID, kind: str, title: str, *, generation: int = 0) -> SourceRef:
    """A source as the upload worker describes it."""
    return SourceRef(
        source_id=uuid.uuid4(),
        kind=kind,
        user_id=user,
        class_id=klass,
        title=title,
        created_at=datetime(2026, 2, 3, 9, 30, tzinfo=UTC),
        generation=generation,
    )


@pytest.fixture(scope="module")
async def world(
    chroma_server: ServerProcess, postgres_server: ServerProcess, qdrant_server: ServerProcess
) -> World:
    """Both students' documents, embedded with the pipeline's model and written as the indexing worker does."""
    a, b, klass, b_only = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    calculus = source(a, klass, "note", "Calculus lecture 3")
    plan: list[tuple[SourceRef, list[str]]] = [
        (
            calculus,
            [
                "A derivative measures the instantaneous rate of change of a function, the slope of its tangent.",
                "The power rule: the derivative of x to the n is n times x to the n minus one.",
            ],
        ),
        (source(a, klass, "note", "Cell biology"), ["Mitochondria make ATP through cellular respiration."]),
        (calculus.model_copy(update={"generation": 1}), [HIDDEN_TEXT]),  # written hidden, as a reprocess does
        (
            source(a, klass, "audio", "History lecture"),
            ["Today: the causes of the French Revolution of 1789."],
        ),
        (
            source(b, klass, "note", "B's calculus"),
            ["Derivatives measure the rate of change of a function: B's private notes on tangent slopes."],
        ),
        (
            source(b, b_only, "note", "B's secret class"),
            ["B's secret: how a derivative measures rate of change."],
        ),
    ]
    embedder = SentenceEmbedder(name=MODEL)
    records = []
    for ref, texts in plan:
        vectors = await embedder.embed(texts)
        for index, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
            chunk = EmbeddedChunk(
                chunk_index=index, text=text, token_count=len(text.split()), vector=encode_vector(vector)
            )
            records.append(to_record(ref, chunk, model=MODEL))
    assert sum(1 for r in records if not r.metadata["visible"]) == 1
    store = await ChromaStore.connect(Settings(chroma_url=chroma_server.url))
    await store.upsert(records)
    existing = set(await store.collection_names())
    # The server also reads PostgreSQL and Qdrant (the diagnosis tools: test_mcp_diagnosis.py); none of these
    # tests asks them anything.
    world = World(
        chroma_server.url, postgres_dsn(postgres_server.port), qdrant_server.url, a, b, klass, b_only, records
    )
    assert {world.name(b, "notes"), world.name(b, "notes", b_only), world.name(a, "notes")} <= existing
    return world


@asynccontextmanager
async def mcp_client(world: World, user: uuid.UUID, tmp_path: Path) -> AsyncIterator[Client]:
    """``python -m shared.cli.main mcp --user U`` as a subprocess, and a client talking to it over stdio."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "shared.cli.main", "mcp", "--user", str(user)],
        env={
            "LMGPA_CHROMA_URL": world.chroma_url,
            "LMGPA_DATABASE_URL": world.database_url,
            "LMGPA_QDRANT_URL": world.qdrant_url,
            "LMGPA_DEV_HOME": str(tmp_path / "no-stack"),  # never the settings of a dev stack running here
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
        cwd=REPO,
    )
    with (tmp_path / "mcp-server.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=180) as client:
            yield client


def text_of(result: CallToolResult) -> str:
    """The one text block of a tool result."""
    assert len(result.content) == 1 and isinstance(result.content[0], TextContent)
    return result.content[0].text


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured answer (the same as its text)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    assert json.loads(text_of(result)) == result.structured_content
    return result.structured_content


def no_embeddings(value: Any) -> bool:
    """No key anywhere in the answer carries an embedding."""
    if isinstance(value, dict):
        return all("embedding" not in str(k) and no_embeddings(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_embeddings(v) for v in value)
    return True


async def test_the_server_lists_exactly_eight_tools_and_searches_only_the_users_visible_documents(
    world: World, tmp_path: Path
) -> None:
    async with mcp_client(world, world.user_a, tmp_path) as as_a:
        assert {t.name for t in (await as_a.list_tools()).tools} == EIGHT_TOOLS

        found = await call(
            as_a,
            "chroma_search",
            class_id=str(world.klass),
            query="how does a derivative measure the rate of change?",
        )
        hits = found["hits"]
        assert hits, "the user's calculus notes match"
        best = hits[0]
        assert best["text"].startswith("A derivative measures the instantaneous rate of change")
        assert best["collection"] == world.name(world.user_a, "notes")
        assert 0.3 < best["score"] <= 1.0 + 1e-6
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert best["metadata"]["title"] == "Calculus lecture 3" and best["metadata"]["chunk_index"] == 0
        assert best["metadata"]["date"] == "2026-02-03" and best["metadata"]["model"] == MODEL
        assert {h["metadata"]["user_id"] for h in hits} == {str(world.user_a)}
        assert not any("B's" in h["text"] or h["text"] == HIDDEN_TEXT for h in hits)
        assert no_embeddings(found)

        transcripts = await call(
            as_a,
            "chroma_search",
            class_id=str(world.klass),
            query="French Revolution",
            content_type="transcripts",
        )
        assert [h["metadata"]["content_type"] for h in transcripts["hits"]] == ["transcripts"]

        # B's own class, asked by A: the same empty answer as a class that does not exist at all.
        theirs = await call(
            as_a, "chroma_search", class_id=str(world.b_only_class), query="derivative rate of change"
        )
        nobodys = await call(
            as_a, "chroma_search", class_id=str(uuid.uuid4()), query="derivative rate of change"
        )
        assert theirs["hits"] == nobodys["hits"] == []


async def test_list_peek_count_and_info_show_the_users_collections_as_written(
    world: World, tmp_path: Path
) -> None:
    async with mcp_client(world, world.user_a, tmp_path) as as_a:
        a, notes = world.user_a, world.name(world.user_a, "notes")
        listed = await call(as_a, "chroma_list_collections")
        assert {c["name"] for c in listed["collections"]} == {notes, world.name(a, "transcripts")}
        assert listed["user_id"] == str(a)

        visible = world.visible(a, notes)
        assert len(visible) == 3 and len([r for r in world.records if r.chroma_collection == notes]) == 4
        peeked = await call(as_a, "chroma_peek_documents", collection_name=notes, limit=100)
        assert {d["document_id"] for d in peeked["documents"]} == {r.document_id for r in visible}
        assert HIDDEN_TEXT not in {d["text"] for d in peeked["documents"]}
        assert all(d["metadata"]["visible"] is True for d in peeked["documents"])
        assert no_embeddings(peeked)
        assert (
            len((await call(as_a, "chroma_peek_documents", collection_name=notes, limit=2))["documents"]) == 2
        )

        assert await call(as_a, "chroma_count_documents", collection_name=notes) == {
            "collection": notes,
            "count": 3,
        }

        info = await call(as_a, "chroma_get_collection_info", collection_name=notes)
        assert (info["name"], info["class_id"], info["content_type"]) == (notes, str(world.klass), "notes")
        assert (info["documents"], info["source_count"], info["dimension"], info["distance"]) == (
            3,
            2,
            384,
            "cosine",
        )
        assert info["models"] == [MODEL]
        assert sorted((s["title"], s["chunks"]) for s in info["sources"]) == [
            ("Calculus lecture 3", 2),
            ("Cell biology", 1),
        ]

        for tool, arguments in [
            ("chroma_peek_documents", {"collection_name": notes, "limit": 0}),
            ("chroma_peek_documents", {"collection_name": notes, "limit": 101}),
            ("chroma_search", {"class_id": str(world.klass), "query": "x", "limit": 1000}),
        ]:
            assert (await as_a.call_tool(tool, arguments)).is_error, (tool, arguments)


async def test_another_users_collections_fail_exactly_like_absent_ones(world: World, tmp_path: Path) -> None:
    async with mcp_client(world, world.user_a, tmp_path) as as_a:
        a, b = world.user_a, world.user_b
        absent = [
            world.name(a, "photos"),
            world.name(a, "notes", uuid.uuid4()),
            world.name(uuid.uuid4(), "notes"),
        ]
        b_notes, b_secret = world.name(b, "notes"), world.name(b, "notes", world.b_only_class)
        attempts = [b_notes, b_secret, world.name(b, "transcripts")]
        for name in (b_notes, b_secret):
            attempts += [
                name.upper(),
                name.swapcase(),
                f"../{name}",
                f"{name}/",
                f"./{name}",
                f" {name}",
                f"{world.name(a, 'notes')}/../{name}",
                f"{a}_{name}",
                name.replace("_notes", "_note"),
            ]
        for tool in ("chroma_get_collection_info", "chroma_peek_documents", "chroma_count_documents"):
            expected = set()
            for name in absent:
                result = await as_a.call_tool(tool, {"collection_name": name})
                assert result.is_error and result.structured_content is None
                expected.add(text_of(result))
            assert len(expected) == 1, "one answer for every absent collection"
            refusal = expected.pop()
            assert str(b) not in refusal
            for name in attempts:
                result = await as_a.call_tool(tool, {"collection_name": name})
                assert result.is_error and result.structured_content is None, (tool, name)
                assert text_of(result) == refusal, (tool, name)


async def test_a_server_bound_to_the_other_user_sees_only_theirs(world: World, tmp_path: Path) -> None:
    b = world.user_b
    async with mcp_client(world, b, tmp_path) as as_b:
        listed = await call(as_b, "chroma_list_collections")
        assert {c["name"] for c in listed["collections"]} == {
            world.name(b, "notes"),
            world.name(b, "notes", world.b_only_class),
        }
        found = await call(
            as_b, "chroma_search", class_id=str(world.klass), query="derivative rate of change"
        )
        assert [h["metadata"]["user_id"] for h in found["hits"]] == [str(b)]
        refused = await as_b.call_tool(
            "chroma_count_documents", {"collection_name": world.name(world.user_a, "notes")}
        )
        assert refused.is_error
