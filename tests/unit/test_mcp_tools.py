"""The MCP tools' logic with an in-memory store: names are authorised per user, documents filtered, limits capped."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client

from shared.mcp.diagnosis import DiagnosisTools
from shared.mcp.server import TOOL_NAMES, build_server
from shared.mcp.tools import (
    CONTENT_TYPES,
    MAX_LIMIT,
    ChromaTools,
    CollectionNotFound,
    CollectionStats,
    StoredDocument,
    ToolRefused,
    Where,
    authorise_collection,
    not_found_message,
)
from shared.vectors.records import SearchHit, chroma_collection_name
from tests.unit.test_mcp_diagnosis import FakeIndex, FakeRecords, make_tools

BOUND = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
CLASS = uuid.UUID("33333333-3333-4333-8333-333333333333")


def matches(metadata: dict[str, Any], where: Where) -> bool:
    """Chroma's equality filters, with $and: all the tools use."""
    if "$and" in where:
        return all(matches(metadata, clause) for clause in where["$and"])
    return all(metadata.get(key) == value for key, value in where.items())


class FakeStore:
    """The DocumentStore port in memory; records every call so a test can tell the store was never asked."""

    def __init__(self) -> None:
        self.collections: dict[str, list[tuple[StoredDocument, list[float]]]] = {}
        self.calls: list[tuple[str, Any]] = []

    def add(self, name: str, doc_id: str, text: str, vector: list[float], **metadata: Any) -> None:
        """Store one document (metadata as the pipeline writes it)."""
        self.collections.setdefault(name, []).append(
            (StoredDocument(document_id=doc_id, text=text, metadata=metadata), vector)
        )

    async def collection_names(self) -> list[str]:
        """Every collection name, all users'."""
        self.calls.append(("collection_names", None))
        return list(self.collections)

    async def collection_stats(self, name: str) -> CollectionStats | None:
        """Dimension of the first vector, cosine."""
        self.calls.append(("collection_stats", name))
        if name not in self.collections:
            return None
        dimension = len(self.collections[name][0][1]) if self.collections[name] else None
        return CollectionStats(dimension=dimension, distance="cosine", metadata={})

    async def documents(
        self, name: str, *, where: Where, limit: int | None, with_text: bool
    ) -> list[StoredDocument] | None:
        """Documents matching the filter, in insertion order."""
        self.calls.append(("documents", name))
        if name not in self.collections:
            return None
        found = [
            StoredDocument(d.document_id, d.text if with_text else None, dict(d.metadata))
            for d, _ in self.collections[name]
            if matches(d.metadata, where)
        ]
        return found if limit is None else found[:limit]

    async def count(self, name: str, *, where: Where) -> int | None:
        """How many documents match the filter."""
        self.calls.append(("count", name))
        if name not in self.collections:
            return None
        return sum(1 for d, _ in self.collections[name] if matches(d.metadata, where))

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
    ) -> list[SearchHit]:
        """ChromaStore.search's contract: the user's visible documents, by dot product."""
        self.calls.append(("search", (user_id, class_id, tuple(content_types), limit)))
        hits = []
        for content_type in content_types:
            for doc, stored in self.collections.get(
                chroma_collection_name(user_id, class_id, content_type), []
            ):
                if matches(doc.metadata, {"$and": [{"user_id": str(user_id)}, {"visible": True}]}):
                    score = sum(a * b for a, b in zip(vector, stored, strict=True))
                    hits.append(SearchHit(score, doc.document_id, doc.text or "", dict(doc.metadata)))
        return sorted(hits, key=lambda h: h.score, reverse=True)[:limit]


VOCABULARY = ("derivative", "cell", "war")


async def embed(text: str) -> list[float]:
    """A toy query embedding: which of three words the text mentions."""
    return [float(word in text.lower()) for word in VOCABULARY]


def meta(
    user: uuid.UUID, content_type: str, source: str, chunk: int, *, visible: bool = True
) -> dict[str, Any]:
    """Metadata as shared.vectors.records.to_record writes it."""
    return {
        "user_id": str(user),
        "class_id": str(CLASS),
        "content_type": content_type,
        "source_id": source,
        "title": f"title of {source}",
        "date": "2026-01-05",
        "chunk_index": chunk,
        "model": "all-MiniLM-L6-v2",
        "generation": 0 if visible else 1,
        "visible": visible,
    }


NOTES = chroma_collection_name(BOUND, CLASS, "notes")
TRANSCRIPTS = chroma_collection_name(BOUND, CLASS, "transcripts")
OTHERS_NOTES = chroma_collection_name(OTHER, CLASS, "notes")


@pytest.fixture
def store() -> FakeStore:
    """Two of the bound user's collections (with a hidden and a stray document), another user's, a junk one."""
    s = FakeStore()
    s.add(NOTES, "note_a_0", "Derivative rules", [1, 0, 0], **meta(BOUND, "notes", "a", 0))
    s.add(NOTES, "note_a_1", "Cell biology", [0, 1, 0], **meta(BOUND, "notes", "a", 1))
    s.add(
        NOTES, "note_a_g1_0", "Derivative, hidden", [1, 0, 0], **meta(BOUND, "notes", "a", 0, visible=False)
    )
    # A document of another user inside the bound user's collection (never written by the pipeline): filtered.
    s.add(NOTES, "stray", "Derivative of someone else", [1, 0, 0], **meta(OTHER, "notes", "x", 0))
    s.add(TRANSCRIPTS, "rec_b_0", "The war of 1812", [0, 0, 1], **meta(BOUND, "transcripts", "b", 0))
    s.add(OTHERS_NOTES, "note_o_0", "Derivative secrets", [1, 0, 0], **meta(OTHER, "notes", "o", 0))
    s.add("unrelated_collection", "u", "Derivative", [1, 0, 0], **meta(OTHER, "notes", "u", 0))
    return s


@pytest.fixture
def tools(store: FakeStore) -> ChromaTools:
    """The tools bound to BOUND over the fake store."""
    return ChromaTools(store, embed, user_id=BOUND)


# ------------------------------------------------------------------------------------------- authorisation

content_types = st.sampled_from(CONTENT_TYPES)


def variants(name: str) -> list[str]:
    """Spellings that are not the canonical name but might slip through a lax check."""
    user, klass, content = name.split("_")
    singular = {"transcripts": "audio", "photos": "photo", "textbooks": "textbook", "notes": "note"}[content]
    return [
        name.upper(),
        name.swapcase(),
        name.title(),
        f"../{name}",
        f"{name}/",
        f"/{name}",
        f" {name}",
        f"{name}\n",
        f"{name}\x00",
        f"{name}_",
        f"_{name}",
        f"{name}_{content}",
        f"{{{user}}}_{klass}_{content}",
        f"urn:uuid:{user}_{klass}_{content}",
        f"{uuid.UUID(user).hex}_{klass}_{content}",
        f"{user}_{uuid.UUID(klass).hex}_{content}",
        f"{user}_{klass}_{singular}",
        f"{user}__{klass}_{content}",
        f"{user}_{klass}",
        f"{user}_{content}",
        f"{user}_{klass}_{content}".replace("-", ""),
    ]


@given(class_id=st.uuids(), content_type=content_types)
def test_the_bound_users_well_formed_names_are_accepted(class_id: uuid.UUID, content_type: str) -> None:
    parsed = authorise_collection(chroma_collection_name(BOUND, class_id, content_type), BOUND)
    assert (parsed.user_id, parsed.class_id, parsed.content_type) == (BOUND, class_id, content_type)
    assert parsed.name == chroma_collection_name(BOUND, class_id, content_type)


@given(name=st.text(max_size=120))
def test_arbitrary_strings_are_refused(name: str) -> None:
    with pytest.raises(CollectionNotFound) as refused:
        authorise_collection(name, BOUND)
    assert str(refused.value) == not_found_message(BOUND)


@given(
    other=st.uuids().filter(lambda u: u != BOUND),
    class_id=st.uuids(),
    content_type=content_types,
    variant=st.integers(min_value=-1, max_value=len(variants(NOTES)) - 1),
)
def test_names_built_from_other_users_uuids_are_refused(
    other: uuid.UUID, class_id: uuid.UUID, content_type: str, variant: int
) -> None:
    name = chroma_collection_name(other, class_id, content_type)
    candidate = name if variant < 0 else variants(name)[variant]
    with pytest.raises(CollectionNotFound) as refused:
        authorise_collection(candidate, BOUND)
    assert str(refused.value) == not_found_message(BOUND), "the same words whoever's name it is"


@given(
    class_id=st.uuids(),
    content_type=content_types,
    variant=st.integers(min_value=0, max_value=len(variants(NOTES)) - 1),
)
def test_only_the_canonical_spelling_of_the_bound_users_names_is_accepted(
    class_id: uuid.UUID, content_type: str, variant: int
) -> None:
    candidate = variants(chroma_collection_name(BOUND, class_id, content_type))[variant]
    with pytest.raises(CollectionNotFound):
        authorise_collection(candidate, BOUND)


# ---------------------------------------------------------------------------------------------- the tools


async def test_list_collections_shows_only_the_bound_users(tools: ChromaTools) -> None:
    listed = await tools.list_collections()
    assert listed.user_id == str(BOUND)
    assert [c.name for c in listed.collections] == sorted([NOTES, TRANSCRIPTS])
    assert {(c.class_id, c.content_type) for c in listed.collections} == {
        (str(CLASS), "notes"),
        (str(CLASS), "transcripts"),
    }


async def test_peek_shows_the_users_visible_documents_without_embeddings(tools: ChromaTools) -> None:
    peeked = await tools.peek(NOTES, limit=10)
    assert peeked.collection == NOTES
    assert [d.document_id for d in peeked.documents] == ["note_a_0", "note_a_1"], "not hidden, not stray"
    assert peeked.documents[0].text == "Derivative rules"
    assert peeked.documents[0].metadata["title"] == "title of a"
    assert all("embedding" not in d.model_dump() for d in peeked.documents)
    assert len((await tools.peek(NOTES, limit=1)).documents) == 1


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 10**9])
async def test_limits_outside_one_to_a_hundred_are_refused(
    tools: ChromaTools, store: FakeStore, limit: int
) -> None:
    with pytest.raises(ToolRefused, match="limit"):
        await tools.peek(NOTES, limit=limit)
    with pytest.raises(ToolRefused, match="limit"):
        await tools.search(str(CLASS), "derivative", limit=limit)
    assert not [c for c in store.calls if c[0] in ("documents", "search")]


async def test_count_counts_visible_documents_of_the_user(tools: ChromaTools) -> None:
    assert (await tools.count(NOTES)).count == 2  # of 4 stored: one hidden, one another user's
    assert (await tools.count(TRANSCRIPTS)).count == 1


async def test_collection_info_describes_the_visible_documents(tools: ChromaTools) -> None:
    info = await tools.collection_info(NOTES)
    assert (info.name, info.class_id, info.content_type) == (NOTES, str(CLASS), "notes")
    assert (info.documents, info.source_count, info.dimension, info.distance) == (2, 1, 3, "cosine")
    assert info.models == ["all-MiniLM-L6-v2"]
    assert [(s.source_id, s.title, s.chunks, s.generation) for s in info.sources] == [
        ("a", "title of a", 2, 0)
    ]


async def test_other_users_collections_fail_exactly_like_absent_ones_and_the_store_is_not_asked(
    tools: ChromaTools, store: FakeStore
) -> None:
    absent = chroma_collection_name(BOUND, uuid.uuid4(), "notes")
    absent_error = await _refusal(tools, absent)
    store.calls.clear()
    for name in [OTHERS_NOTES, *variants(OTHERS_NOTES), "unrelated_collection", "", "*", NOTES.upper()]:
        assert await _refusal(tools, name) == absent_error, name
    assert store.calls == [], "refused before the store is touched: no answer or timing depends on it"


async def _refusal(tools: ChromaTools, name: str) -> tuple[str, str, str]:
    messages = []
    for call in (tools.collection_info, tools.peek, tools.count):
        with pytest.raises(CollectionNotFound) as refused:
            await call(name)
        messages.append(str(refused.value))
    return messages[0], messages[1], messages[2]


async def test_search_is_bound_to_the_user_and_ranks_by_score(tools: ChromaTools, store: FakeStore) -> None:
    result = await tools.search(str(CLASS).upper(), "What is a derivative?", limit=5)
    assert result.class_id == str(CLASS)
    assert store.calls[-1] == ("search", (BOUND, CLASS, CONTENT_TYPES, 5))
    assert result.hits[0].document_id == "note_a_0"
    assert result.hits[0].score == pytest.approx(1.0)
    assert result.hits[0].collection == NOTES
    assert {h.metadata["user_id"] for h in result.hits} == {str(BOUND)}
    assert not {"note_a_g1_0", "stray", "note_o_0"} & {h.document_id for h in result.hits}
    only_transcripts = await tools.search(str(CLASS), "war", content_type="transcripts", limit=5)
    assert [h.document_id for h in only_transcripts.hits] == ["rec_b_0"]
    assert store.calls[-1] == ("search", (BOUND, CLASS, ("transcripts",), 5))


@pytest.mark.parametrize(
    ("class_id", "query", "content_type", "words"),
    [
        ("not-a-uuid", "derivative", None, "class_id"),
        (str(CLASS), "   ", None, "query"),
        (str(CLASS), "derivative", "note", "content_type"),
        (str(CLASS), "derivative", "NOTES", "content_type"),
    ],
)
async def test_search_refuses_bad_arguments_clearly(
    tools: ChromaTools, class_id: str, query: str, content_type: str | None, words: str
) -> None:
    with pytest.raises(ToolRefused, match=words):
        await tools.search(class_id, query, content_type)


async def test_a_search_in_another_users_class_finds_nothing(store: FakeStore) -> None:
    other_class = uuid.uuid4()
    store.add(
        chroma_collection_name(OTHER, other_class, "notes"),
        "o",
        "Derivative",
        [1, 0, 0],
        **meta(OTHER, "notes", "o2", 0),
    )
    result = await ChromaTools(store, embed, user_id=BOUND).search(str(other_class), "derivative")
    assert result.hits == []


# ------------------------------------------------------------------------------------ through MCP, in memory


def diagnosis(user: uuid.UUID = BOUND) -> DiagnosisTools:
    """The diagnosis tools over empty fakes (tests/unit/test_mcp_diagnosis.py tests them)."""
    return make_tools(FakeRecords([]), FakeIndex("qdrant"), FakeIndex("chroma"), user)


async def test_the_server_offers_exactly_the_eight_read_only_tools(tools: ChromaTools) -> None:
    async with Client(build_server(tools, diagnosis())) as client:
        listed = (await client.list_tools()).tools
        assert sorted(t.name for t in listed) == sorted(TOOL_NAMES)
        assert len(TOOL_NAMES) == 8
        assert all(t.annotations is not None and t.annotations.read_only_hint for t in listed)


def test_both_sets_of_tools_must_be_bound_to_the_same_user(tools: ChromaTools) -> None:
    with pytest.raises(ValueError, match="same user"):
        build_server(tools, diagnosis(OTHER))


async def test_through_mcp_answers_are_structured_and_refusals_identical(tools: ChromaTools) -> None:
    async with Client(build_server(tools, diagnosis())) as client:
        counted = await client.call_tool("chroma_count_documents", {"collection_name": NOTES})
        assert not counted.is_error and counted.structured_content == {"collection": NOTES, "count": 2}
        refusals = set()
        for name in (OTHERS_NOTES, chroma_collection_name(BOUND, uuid.uuid4(), "photos"), "../x"):
            result = await client.call_tool("chroma_peek_documents", {"collection_name": name})
            assert result.is_error and result.structured_content is None
            refusals.add(result.content[0].text)  # type: ignore[union-attr]
        assert len(refusals) == 1 and not_found_message(BOUND) in refusals.pop()
        too_many = await client.call_tool("chroma_peek_documents", {"collection_name": NOTES, "limit": 101})
        assert too_many.is_error
        wrong_type = await client.call_tool(
            "chroma_search", {"class_id": str(CLASS), "query": "x", "content_type": "note"}
        )
        assert wrong_type.is_error
