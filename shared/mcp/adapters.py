"""The diagnosis tools' side effects: PostgreSQL through shared.db, Qdrant and Chroma through their stores."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np
from qdrant_client import models

from shared.db import jobs, outbox, sources
from shared.db.jobs import JobRow
from shared.db.outbox import Pending
from shared.db.sources import RowState
from shared.mcp.diagnosis import StoreCount
from shared.vectors.chroma import ChromaStore
from shared.vectors.qdrant import QdrantStore, query_request, score_kind
from shared.vectors.records import SearchHit, SearchMode, chroma_collection_name


class PostgresRecords:
    """The job tables and content rows, read through shared.db (no SQL here)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def job(self, *, user_id: uuid.UUID, source_id: uuid.UUID) -> JobRow | None:
        """The source's job, only if this user's (the owner is in the query)."""
        found = await jobs.list_jobs(self.pool, source_id=source_id, user_id=user_id, limit=1)
        return found[0] if found else None

    async def jobs_titled(self, *, user_id: uuid.UUID, title: str, limit: int) -> list[JobRow]:
        """This user's jobs by title."""
        return await jobs.jobs_titled(self.pool, user_id=user_id, title=title, limit=limit)

    async def generation(self, *, source_id: uuid.UUID) -> int:
        """The job's current generation."""
        state = await jobs.job_state(self.pool, source_id=source_id)
        return state[1] if state else 0

    async def indexed_chunks(self, *, source_id: uuid.UUID, generation: int) -> int:
        """Chunks of the generation in both stores, by ingest_batches."""
        done, _ = await jobs.indexed_chunk_count(self.pool, source_id=source_id, generation=generation)
        return done

    async def row(self, *, kind: str, source_id: uuid.UUID) -> RowState | None:
        """The content row's own columns."""
        return await sources.row_state(self.pool, kind=kind, source_id=source_id)

    async def pending_inputs(self, *, source_id: uuid.UUID) -> list[Pending]:
        """The source's unapplied stage inputs."""
        return await outbox.pending(self.pool, source_id=source_id, limit=100)


def _owned_source(user_id: uuid.UUID, source_id: uuid.UUID, *, visible_only: bool) -> models.Filter:
    """One user's chunks of one source (every key payload-indexed, as the collection's strict mode wants)."""
    must: list[models.Condition] = [
        models.FieldCondition(key="user_id", match=models.MatchValue(value=str(user_id))),
        models.FieldCondition(key="source_id", match=models.MatchValue(value=str(source_id))),
    ]
    if visible_only:
        must.append(models.FieldCondition(key="visible", match=models.MatchValue(value=True)))
    return models.Filter(must=must)


def _hit(point: models.ScoredPoint, kind: Any) -> SearchHit:
    payload: dict[str, Any] = dict(point.payload or {})
    text = str(payload.pop("text", ""))
    return SearchHit(
        score=point.score,
        document_id=str(payload.get("document_id")),
        text=text,
        metadata=payload,
        score_kind=kind,
    )


class QdrantIndex:
    """Qdrant read as the search API reads it (QdrantStore.search, the service's mode), for one user."""

    store = "qdrant"

    def __init__(self, qdrant: QdrantStore) -> None:
        self.qdrant = qdrant

    def ranking(self, mode: SearchMode | None = None) -> str:
        """The mode and what its scores are."""
        chosen = mode or self.qdrant.search_mode
        return f"{chosen} ({score_kind(chosen, self.qdrant.fusion)})"

    async def count_source(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID, content_type: str, source_id: uuid.UUID
    ) -> StoreCount:
        """The source's points, all and visible (one collection holds every class and type)."""
        if not await self.qdrant.check_layout():
            return StoreCount(total=0, visible=0)
        counted = []
        for visible_only in (False, True):
            flt = _owned_source(user_id, source_id, visible_only=visible_only)
            counted.append(
                (await self.qdrant.client.count(self.qdrant.collection, count_filter=flt, exact=True)).count
            )
        return StoreCount(total=counted[0], visible=counted[1])

    async def ranked(
        self,
        *,
        vector: Sequence[float] | None,
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
        mode: SearchMode | None = None,
    ) -> list[SearchHit]:
        """QdrantStore.search, exactly as the search API calls it."""
        chosen = mode or self.qdrant.search_mode
        if not await self.qdrant.check_layout():
            return []
        return await self.qdrant.search(
            None if chosen == "sparse" else vector,
            query_text=query,
            mode=chosen,
            user_id=user_id,
            class_id=class_id,
            content_type=list(content_types),
            limit=limit,
        )

    async def best_of_source(
        self,
        *,
        vector: Sequence[float],
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_type: str,
        source_id: uuid.UUID,
    ) -> SearchHit | None:
        """The source's best visible chunk under the service's mode (the same request, narrowed to the source)."""
        mode = self.qdrant.search_mode
        request = query_request(
            mode=mode,
            vector=None if mode == "sparse" else vector,
            query_text=query,
            query_filter=_owned_source(user_id, source_id, visible_only=True),
            limit=1,
            fusion=self.qdrant.fusion,
        )
        response = await self.qdrant.client.query_points(self.qdrant.collection, **request, with_payload=True)
        points = response.points
        return _hit(points[0], score_kind(mode, self.qdrant.fusion)) if points else None


class ChromaIndex:
    """Chroma read as chroma_search reads it (exact cosine over the stored vectors), for one user."""

    store = "chroma"

    def __init__(self, chroma: ChromaStore) -> None:
        self.chroma = chroma

    def ranking(self, mode: SearchMode | None = None) -> str:
        """Chroma always ranks by the embedding."""
        return "dense (exact cosine)"

    async def _source_documents(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID, content_type: str, source_id: uuid.UUID
    ) -> dict[str, Any]:
        name = chroma_collection_name(user_id, class_id, content_type)
        if name not in set(await self.chroma.collection_names()):
            return {"ids": [], "metadatas": [], "documents": [], "embeddings": []}
        found = await self.chroma.documents_of_source(collection=name, source_id=source_id)
        # The collection is the user's own by its name; the metadata says so too, checked all the same.
        keep = [i for i, m in enumerate(found["metadatas"] or []) if m.get("user_id") == str(user_id)]
        return {key: [found[key][i] for i in keep] for key in ("ids", "metadatas", "documents", "embeddings")}

    async def count_source(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID, content_type: str, source_id: uuid.UUID
    ) -> StoreCount:
        """The source's documents in its collection, all and visible."""
        docs = await self._source_documents(
            user_id=user_id, class_id=class_id, content_type=content_type, source_id=source_id
        )
        visible = sum(1 for m in docs["metadatas"] if m.get("visible") is True)
        return StoreCount(total=len(docs["ids"]), visible=visible)

    async def ranked(
        self,
        *,
        vector: Sequence[float] | None,
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
        mode: SearchMode | None = None,
    ) -> list[SearchHit]:
        """ChromaStore.search: the user's visible documents of the class, by exact cosine."""
        if vector is None:
            raise ValueError("Chroma ranks by the embedding: the query's vector is needed")
        return await self.chroma.search(
            vector, user_id=user_id, class_id=class_id, content_types=content_types, limit=limit
        )

    async def best_of_source(
        self,
        *,
        vector: Sequence[float],
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_type: str,
        source_id: uuid.UUID,
    ) -> SearchHit | None:
        """The source's visible document nearest the query, by cosine over its stored vector."""
        docs = await self._source_documents(
            user_id=user_id, class_id=class_id, content_type=content_type, source_id=source_id
        )
        visible = [i for i, m in enumerate(docs["metadatas"]) if m.get("visible") is True]
        if not visible:
            return None
        matrix = np.asarray([docs["embeddings"][i] for i in visible], dtype=np.float32)
        query_vector = np.asarray(vector, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * (float(np.linalg.norm(query_vector)) or 1.0)
        norms[norms == 0] = 1.0
        scores = (matrix @ query_vector) / norms
        best = visible[int(np.argmax(scores))]
        return SearchHit(
            score=float(np.max(scores)),
            document_id=str(docs["ids"][best]),
            text=str(docs["documents"][best]),
            metadata=dict(docs["metadatas"][best]),
        )
