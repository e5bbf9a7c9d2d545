"""Chroma: the design's dev/debugging store, one collection per user, class and content type."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlparse

import chromadb
import httpx
import numpy as np
from chromadb.api import AsyncClientAPI
from chromadb.api.collection_configuration import CreateCollectionConfiguration
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError, NotFoundError, RateLimitError

from shared.errors import TransientError
from shared.events.models import SourceRef
from shared.settings import Settings
from shared.vectors.records import (
    CollectionStats,
    DonorVectors,
    SearchHit,
    StoredDocument,
    VectorRecord,
    chroma_collection_name,
    newest_generation_only,
    rekeyed,
    visible_to,
)

COLLECTION_CONFIGURATION: CreateCollectionConfiguration = {"hnsw": {"space": "cosine"}}
UPSERT_BATCH = 256
SCAN_PAGE = 2000
"""Vectors read per request when a search ranks a collection exactly."""
T = TypeVar("T")


@contextmanager
def _transient_when_down() -> Iterator[None]:
    """Chroma unreachable, restarting or overloaded is transient (retry); any other error is a real one."""
    try:
        yield
    except (httpx.TransportError, ConnectionError, RateLimitError) as error:
        raise TransientError("chroma_unavailable", str(error)[:300]) from error
    except ChromaError as error:
        if error.code() >= 500:  # InternalError and the like: the server is restarting or overloaded
            raise TransientError("chroma_unavailable", str(error)[:300]) from error
        raise


async def make_chroma_client(settings: Settings) -> AsyncClientAPI:
    """An async client for the configured Chroma server (telemetry off)."""
    url = urlparse(settings.chroma_url)
    headers = {"x-chroma-token": settings.chroma_token.get_secret_value()} if settings.chroma_token else None
    with _transient_when_down():
        return await _answer(
            chromadb.AsyncHttpClient(
                host=url.hostname or "127.0.0.1",
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                headers=headers,
                settings=ChromaSettings(anonymized_telemetry=False),
            ),
            settings.store_timeout_seconds,
        )


async def _answer(request: Awaitable[T], seconds: float) -> T:
    """One request to Chroma, bounded. Chroma's Python client sends every request with no timeout at all
    (``httpx.AsyncClient(timeout=None)`` in chromadb 1.5, with no setting to change it), so a server that
    accepts the connection and then goes quiet would hold a worker forever; past the bound it is transient."""
    try:
        async with asyncio.timeout(seconds):
            return await request
    except TimeoutError as error:
        raise TransientError("chroma_unavailable", f"Chroma did not answer within {seconds:g} s") from error


class ChromaStore:
    """Writes and reads chunks; always passes vectors, so Chroma never reaches for its own model."""

    def __init__(self, client: AsyncClientAPI, *, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        """Seconds each request may take (see `_answer`)."""

    @classmethod
    async def connect(cls, settings: Settings) -> ChromaStore:
        """A store on the configured server, each request bounded by ``store_timeout_seconds``."""
        return cls(await make_chroma_client(settings), timeout=settings.store_timeout_seconds)

    async def _ask(self, request: Awaitable[T]) -> T:
        return await _answer(request, self.timeout)

    async def _collection(self, name: str) -> Any:
        return await self._ask(
            self.client.get_or_create_collection(
                name, configuration=COLLECTION_CONFIGURATION, embedding_function=None
            )
        )

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Write documents into their collections (same ids overwrite)."""
        by_collection: dict[str, list[VectorRecord]] = defaultdict(list)
        for record in records:
            by_collection[record.chroma_collection].append(record)
        with _transient_when_down():
            for name, items in by_collection.items():
                collection = await self._collection(name)
                for start in range(0, len(items), UPSERT_BATCH):
                    batch = items[start : start + UPSERT_BATCH]
                    await self._ask(
                        collection.upsert(
                            ids=[r.document_id for r in batch],
                            embeddings=[r.vector for r in batch],
                            documents=[r.document for r in batch],
                            metadatas=[r.metadata for r in batch],
                        )
                    )

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str,
        content_types: Sequence[str],
        limit: int = 5,
    ) -> list[SearchHit]:
        """The nearest visible chunks in the user's class collections, ranked exactly by their stored vectors.

        Chroma's own ``query`` walks an HNSW index that can miss what was just written (seen here: a 2-chunk
        source added after an 816-chunk book was missed even with 50 results, until the server restarted;
        chroma-core/chroma#2250, #3638). This is the debugging store, so correctness beats speed: every
        visible vector of the collection is read (in pages, without documents) and ranked by cosine here;
        only the best ``limit`` documents are then fetched."""
        query = np.asarray(vector, dtype=np.float32)
        query /= float(np.linalg.norm(query)) or 1.0
        existing = {c.name for c in await self._ask(self.client.list_collections())}
        scored: list[tuple[float, str, Any]] = []  # (score, id, collection)
        for content_type in content_types:
            name = chroma_collection_name(user_id, class_id, content_type)
            if name not in existing:
                continue
            collection = await self._ask(self.client.get_collection(name, embedding_function=None))
            offset = 0
            while True:
                page = await self._ask(
                    collection.get(
                        where=visible_to(user_id), include=["embeddings"], limit=SCAN_PAGE, offset=offset
                    )
                )
                ids = page["ids"]
                if not ids:
                    break
                matrix = np.asarray(page["embeddings"], dtype=np.float32)
                norms = np.linalg.norm(matrix, axis=1)
                norms[norms == 0] = 1.0
                scores = (matrix @ query) / norms
                best = np.argsort(-scores)[: limit * 2]  # room for a reprocess's second generation
                scored.extend((float(scores[i]), ids[i], collection) for i in best)
                if len(ids) < SCAN_PAGE:
                    break
                offset += len(ids)
        scored.sort(key=lambda item: item[0], reverse=True)
        chosen = scored[: limit * 2]
        hits: list[SearchHit] = []
        for collection in {id(c): c for _, _, c in chosen}.values():
            wanted = {doc_id: score for score, doc_id, c in chosen if c is collection}
            found = await self._ask(collection.get(ids=list(wanted), include=["documents", "metadatas"]))
            for doc_id, text, meta in zip(
                found["ids"], found["documents"] or [], found["metadatas"] or [], strict=True
            ):
                hits.append(
                    SearchHit(score=wanted[doc_id], document_id=doc_id, text=text, metadata=dict(meta))
                )
        return sorted(newest_generation_only(hits), key=lambda h: h.score, reverse=True)[:limit]

    async def delete(
        self,
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        source_id: uuid.UUID | str | None = None,
    ) -> int:
        """Delete every document of a source, a class or a user (always within one user); returns how many went."""
        prefix = f"{user_id}_" if class_id is None else f"{user_id}_{class_id}_"
        removed = 0
        with _transient_when_down():
            for info in await self._ask(self.client.list_collections()):
                if not info.name.startswith(prefix):
                    continue
                collection = await self._ask(self.client.get_collection(info.name))
                if source_id is None:
                    removed += await self._ask(collection.count())
                    await self._ask(self.client.delete_collection(info.name))
                    continue
                found = await self._ask(collection.get(where={"source_id": str(source_id)}, include=[]))
                if found["ids"]:
                    await self._ask(collection.delete(ids=found["ids"]))
                    removed += len(found["ids"])
        return removed

    async def copy_source(self, donor: DonorVectors, target: SourceRef) -> int:
        """Copy one generation of a donor's documents (embedding, text, content fields) into the target's
        collection under its ids, owner, class and title, visible as a first generation is; returns how many were
        copied."""
        name = chroma_collection_name(donor.user_id, donor.class_id, donor.content_type)
        with _transient_when_down():
            collection = await self._existing(name)
            if collection is None:
                return 0
            found = await self._ask(
                collection.get(
                    where={"$and": [{"source_id": str(donor.source_id)}, {"generation": donor.generation}]},
                    include=["embeddings", "documents", "metadatas"],
                )
            )
            embeddings: Any = found["embeddings"]
            records = [
                rekeyed(target, dict(meta), vector=[float(v) for v in vector], document=text or "")
                for meta, vector, text in zip(
                    found["metadatas"] or [],
                    embeddings if embeddings is not None else [],
                    found["documents"] or [],
                    strict=True,
                )
            ]
        await self.upsert(records)
        return len(records)

    async def promote(self, source: SourceRef) -> None:
        """Show a reprocessed source's new generation, then drop every other one (two requests: Chroma has no
        batch of mixed operations; a search between them finds both, and keeps each source's newest)."""
        collection = chroma_collection_name(source.user_id, source.class_id, source.content_type)
        source_id, generation = source.source_id, source.generation
        with _transient_when_down():
            existing = {c.name for c in await self._ask(self.client.list_collections())}
            if collection not in existing:
                return
            coll = await self._ask(self.client.get_collection(collection))
            new = await self._ask(
                coll.get(
                    where={"$and": [{"source_id": str(source_id)}, {"generation": generation}]},
                    include=["metadatas"],
                )
            )
            if new["ids"]:
                metadatas: Any = [{**dict(m), "visible": True} for m in new["metadatas"] or []]
                await self._ask(coll.update(ids=new["ids"], metadatas=metadatas))
            others: Any = {"$and": [{"source_id": str(source_id)}, {"generation": {"$ne": generation}}]}
            old = await self._ask(coll.get(where=others, include=[]))
            if old["ids"]:
                await self._ask(coll.delete(ids=old["ids"]))

    async def delete_records(self, records: Sequence[VectorRecord]) -> None:
        """Delete exactly these documents."""
        by_collection: dict[str, list[str]] = defaultdict(list)
        for record in records:
            by_collection[record.chroma_collection].append(record.document_id)
        with _transient_when_down():
            existing = {c.name for c in await self._ask(self.client.list_collections())}
            for name, ids in by_collection.items():
                if name in existing:
                    await self._ask((await self._ask(self.client.get_collection(name))).delete(ids=ids))

    async def collection_names(self) -> list[str]:
        """The name of every collection on the server."""
        with _transient_when_down():
            return [c.name for c in await self._ask(self.client.list_collections())]

    async def _existing(self, name: str) -> Any:
        try:
            return await self._ask(self.client.get_collection(name, embedding_function=None))
        except NotFoundError:
            return None

    async def collection_stats(self, name: str) -> CollectionStats | None:
        """A collection's dimension, distance and metadata; None if it does not exist."""
        with _transient_when_down():
            collection = await self._existing(name)
            if collection is None:
                return None
            configuration: dict[str, Any] = dict(collection.configuration_json or {})
            index = configuration.get("hnsw") or configuration.get("spann") or {}
            return CollectionStats(
                dimension=collection.get_model().dimension,
                distance=index.get("space") if isinstance(index, dict) else None,
                metadata=dict(collection.metadata or {}),
            )

    async def documents(
        self, name: str, *, where: dict[str, Any], limit: int | None, with_text: bool
    ) -> list[StoredDocument] | None:
        """Documents matching ``where`` (at most ``limit``), never their embeddings; None if no such collection."""
        with _transient_when_down():
            collection = await self._existing(name)
            if collection is None:
                return None
            found = await self._ask(
                collection.get(
                    where=where,
                    limit=limit,
                    include=["documents", "metadatas"] if with_text else ["metadatas"],
                )
            )
        texts: list[str | None] = list(found["documents"] or []) if with_text else [None] * len(found["ids"])
        return [
            StoredDocument(document_id=doc_id, text=text, metadata=dict(meta))
            for doc_id, text, meta in zip(found["ids"], texts, found["metadatas"] or [], strict=True)
        ]

    async def count(self, name: str, *, where: dict[str, Any]) -> int | None:
        """How many documents match ``where``; None if no such collection."""
        with _transient_when_down():
            collection = await self._existing(name)
            if collection is None:
                return None
            return len((await self._ask(collection.get(where=where, include=[])))["ids"])

    async def documents_of_source(self, *, collection: str, source_id: uuid.UUID | str) -> dict[str, Any]:
        """Every document of one source in a collection (ids, metadatas, documents, embeddings)."""
        existing = {c.name for c in await self._ask(self.client.list_collections())}
        if collection not in existing:
            return {"ids": [], "metadatas": [], "documents": [], "embeddings": []}
        coll = await self._ask(self.client.get_collection(collection))
        result = await self._ask(
            coll.get(where={"source_id": str(source_id)}, include=["metadatas", "documents", "embeddings"])
        )
        return dict(result)
