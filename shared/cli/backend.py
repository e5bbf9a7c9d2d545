"""What the CLI does as the backend would: store files, publish events, read statuses, search."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from shared import tracing
from shared.broker import make_broker, publish
from shared.cli.errors import CliError
from shared.db import inbox, jobs, outbox, owners
from shared.db.pool import create_pool
from shared.events.models import (
    CONTENT_TYPE_OF_KIND,
    MODEL_OF_TOPIC,
    DeadLetter,
    Envelope,
    SourceUploaded,
)
from shared.events.topics import ALL_TOPICS
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.text import decode_note, require_text

PRODUCER = "lmgpa-cli"
POLL_SECONDS = 0.5
ProgressCallback = Callable[[jobs.JobRow | None], None]
"""Called with the job (None before the upload worker opened it) at every poll of a wait."""
TOPIC_OF_EVENT_TYPE = {m.__name__: t for t, m in MODEL_OF_TOPIC.items()}


async def ingest_source(
    settings: Settings,
    *,
    path: Path | None,
    note: str | None,
    kind: str,
    user_id: uuid.UUID,
    class_id: uuid.UUID,
    title: str | None,
    create_owner: bool,
    wait: bool,
    wait_seconds: float,
    event_id: uuid.UUID | None = None,
    class_name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Store the file (or take the note), publish SourceUploaded, and optionally wait for the outcome
    (``on_progress`` sees the job at every poll: the CLI's progress bars).

    A note must be text (`shared.text`): a file is read as bytes (UTF-8, or UTF-16/32 with a byte-order mark)
    and refused here as `not_text`, with the reason the upload worker gives for such an event. The owner is
    checked first: an unknown user or class, or another user's class, is refused before anything is sent."""
    text = note
    if path is not None and kind == "note":
        text = decode_note(path.read_bytes())
    if text is not None:
        require_text(text)
    traced = tracing.configure_tracing(settings, service="cli")
    pool = await create_pool(settings.database_dsn(), max_size=2)
    try:
        if create_owner:
            await owners.ensure_user(pool, user_id=user_id)
            await owners.ensure_class(pool, class_id=class_id, user_id=user_id, name=class_name)
        await _check_owner(pool, user_id=user_id, class_id=class_id)
        storage_url = None
        if path is not None and kind != "note":
            storage_url = LocalStorage(settings.storage_root).put(path, user_id=user_id).url
        event_id = event_id or uuid.uuid4()
        event = SourceUploaded(
            event_id=event_id,
            correlation_id=event_id,
            producer=PRODUCER,
            kind=kind,
            user_id=user_id,
            class_id=class_id,
            title=(title or (path.stem if path else " ".join(text.split()[:8]) if text else "note"))[:200]
            or "note",
            storage_url=storage_url,
            text=text,
            size_bytes=path.stat().st_size if path else None,
        )
        with tracing.root_span(
            "lmgpa ingest", **{"lmgpa.kind": kind, "lmgpa.source_id": str(event.source_id)}
        ):
            event = tracing.stamp(event)  # the upload's trace begins here when this process traces
        # As a backend should: the upload is kept in the outbox before it is published, so a broker that loses
        # it before the upload worker takes it does not lose the student's work (the reconciler re-drives it).
        kept = outbox.entry_for(event)
        assert kept is not None
        await outbox.record(pool, [kept])
        broker = make_broker(settings, service="cli")
        async with broker:
            await publish(broker, event)
        result: dict[str, Any] = {
            "source_id": str(event.source_id),
            "event_id": str(event_id),
            "kind": kind,
            "content_type": CONTENT_TYPE_OF_KIND[kind],
            "status": "published",
        }
        if not wait:
            return result
        outcome = await wait_for_source(
            pool,
            source_id=event.source_id,
            event_id=event_id,
            wait_seconds=wait_seconds,
            on_progress=on_progress,
        )
        return {**result, **outcome}
    finally:
        await pool.close()
        if traced:
            tracing.shutdown()


async def wait_for_source(
    pool: asyncpg.Pool,
    *,
    source_id: uuid.UUID,
    event_id: uuid.UUID | None,
    wait_seconds: float,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Poll until the source's job is completed or failed, or its upload was refused; its status fields
    (``status`` is ``timed_out`` when ``wait_seconds`` pass first)."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        job = await jobs.get_job(pool, source_id=source_id)
        if on_progress is not None:
            on_progress(job)
        if job is not None and job.status in ("completed", "failed"):
            return _job_dict(job)
        rejected = await inbox.list_rejections(
            pool, event_id=event_id, key=None if event_id else str(source_id), limit=1
        )
        if rejected and (event_id is not None or job is None):  # by key: only while no job says more
            r = rejected[0]
            return {
                "status": "failed",
                "stage": r.consumer,
                "error_code": r.error_code,
                "error_message": r.error_message,
            }
        await asyncio.sleep(POLL_SECONDS)
    job = await jobs.get_job(pool, source_id=source_id)
    return {**(_job_dict(job) if job else {}), "status": "timed_out"}


async def watch_source(
    settings: Settings,
    source_id: uuid.UUID,
    *,
    wait_seconds: float,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Follow a source already sent until it is indexed or failed (`lmgpa watch`); the same fields as
    `ingest --wait` reports."""
    pool = await create_pool(settings.database_dsn(), max_size=2)
    try:
        known = await jobs.get_job(pool, source_id=source_id) is not None
        known = known or bool(await outbox.pending(pool, source_id=source_id, limit=1))
        known = known or bool(await inbox.list_rejections(pool, key=str(source_id), limit=1))
        if not known:
            raise CliError(
                f"source {source_id} not found",
                "`lmgpa status` lists the most recent sources; `lmgpa ingest` prints the id of a new one",
            )
        job = await jobs.get_job(pool, source_id=source_id)
        outcome = await wait_for_source(
            pool, source_id=source_id, event_id=None, wait_seconds=wait_seconds, on_progress=on_progress
        )
        return {
            "source_id": str(source_id),
            "kind": job.kind if job else None,
            "content_type": CONTENT_TYPE_OF_KIND[job.kind] if job else None,
            **outcome,
        }
    finally:
        await pool.close()


async def _check_owner(pool: asyncpg.Pool, *, user_id: uuid.UUID, class_id: uuid.UUID) -> None:
    """Refuse an upload the upload worker would refuse for its owner, with what to do instead."""
    owner = await owners.class_owner(pool, class_id=class_id)
    if owner == user_id:
        return
    if not await owners.user_exists(pool, user_id=user_id):
        raise CliError(
            f"unknown user {user_id}", "pass --create-owner to create the user and the class (for a try-out)"
        )
    if owner is None:
        raise CliError(f"unknown class {class_id}", "pass --create-owner to create it for this user")
    raise CliError(
        f"class {class_id} belongs to another user, not to {user_id}",
        "pass one of this user's classes (--create-owner never changes a class's owner)",
    )


def load_fixtures(path: Path, *, topic: str | None = None) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) for every event in a JSON (object or list) or JSON Lines file, unchanged."""
    text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    items: list[Any]
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        try:
            parsed = json.loads(stripped)
            items = parsed if isinstance(parsed, list) else [parsed]
        except json.JSONDecodeError:
            # A deliberately malformed fixture: publish its bytes as they are, to the topic its folder names.
            return [(_topic_for(None, path, topic), str(uuid.uuid4()).encode(), text.encode())]
    return [(_topic_for(item, path, topic), _key_for(item), json.dumps(item).encode()) for item in items]


def _topic_for(item: Any, path: Path, topic: str | None) -> str:
    if topic:
        return topic
    if isinstance(item, dict) and item.get("event_type") in TOPIC_OF_EVENT_TYPE:
        return TOPIC_OF_EVENT_TYPE[item["event_type"]]
    if path.parent.name in ALL_TOPICS:
        return path.parent.name
    raise ValueError(f"{path}: cannot tell the topic; pass --topic")


def _key_for(item: Any) -> bytes:
    """The source id, computed as the upload worker will, so a fixture's events stay in one partition."""
    if isinstance(item, dict):
        try:
            return str(SourceUploaded.model_validate(item).source_id).encode()
        except ValueError:
            pass
        source = item.get("source")
        if isinstance(source, dict) and source.get("source_id"):
            return str(source["source_id"]).encode()
        for field in ("row_id", "source_id", "event_id"):
            if item.get(field):
                return str(item[field]).encode()
    return str(uuid.uuid4()).encode()


async def publish_raw(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> None:
    """Publish (topic, key, value) messages as they are."""
    broker: KafkaBroker = make_broker(settings, service="cli")
    async with broker:
        for topic, key, value in messages:
            await broker.publish(value, topic=topic, key=key, headers={"content-type": "application/json"})


def _iso(moment: datetime | None) -> str | None:
    """A timestamp as --json shows every one: ISO 8601 with the T and the UTC offset."""
    return moment.isoformat() if moment is not None else None


def _job_dict(job: jobs.JobRow, *, stall_seconds: float = 300.0) -> dict[str, Any]:
    now = datetime.now(UTC)
    states = [jobs.stage_state(s, now=now, stall_seconds=stall_seconds) for s in job.stages]
    return {
        "source_id": str(job.source_id),
        "kind": job.kind,
        "content_type": CONTENT_TYPE_OF_KIND[job.kind],
        "user_id": str(job.user_id),
        "class_id": str(job.class_id),
        "title": job.title,
        "status": job.status,
        "state": "stalled" if "stalled" in states else job.status,
        "stage": job.stage,
        "attempts": job.attempts,
        "chunk_count": job.chunk_count,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "updated_at": _iso(job.updated_at),
        "redrives": job.redrives,
        "last_redrive_at": _iso(job.last_redrive_at),
        "stages": [
            {
                "stage": s.stage,
                "status": s.status,
                "state": state,
                "attempts": s.attempts,
                "units_done": s.units_done,
                "units_total": s.units_total,
                "unit": s.unit,
                "enqueued_at": _iso(s.enqueued_at),
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
                "heartbeat_at": _iso(s.heartbeat_at),
                "error_code": s.error_code,
                "error_message": s.error_message,
            }
            for s, state in zip(job.stages, states, strict=True)
        ],
    }


async def fetch_status(
    settings: Settings,
    *,
    source_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    limit: int,
    source_ids: Sequence[uuid.UUID] | None = None,
) -> dict[str, Any]:
    """Jobs (with stages) and recent rejections: of one source, of some sources, or the newest."""
    pool = await create_pool(settings.database_dsn(), max_size=2)
    try:
        found = await jobs.list_jobs(
            pool, source_id=source_id, user_id=user_id, source_ids=source_ids, limit=limit
        )
        rejected = await inbox.list_rejections(
            pool,
            key=str(source_id) if source_id else None,
            keys=[str(s) for s in source_ids] if source_ids is not None else None,
            limit=limit,
        )
    finally:
        await pool.close()
    return {
        "sources": [_job_dict(j, stall_seconds=settings.stall_seconds) for j in found],
        "rejections": [
            {
                "consumer": r.consumer,
                "topic": r.topic,
                "key": r.message_key,
                "event_id": str(r.event_id) if r.event_id else None,
                "error_code": r.error_code,
                "error_message": r.error_message,
                "received_at": _iso(r.received_at),
            }
            for r in rejected
        ],
    }


def render_status(report: dict[str, Any]) -> str:
    """A table a person reads: one line per source, one indented line per stage."""
    lines = [f"{'SOURCE':<36}  {'KIND':<8} {'STATUS':<10} {'STAGE':<13} {'CHUNKS':>6}  TITLE / REASON"]
    for s in report["sources"]:
        chunks = "" if s["chunk_count"] is None else str(s["chunk_count"])
        tail = f"{s['error_code']}: {s['error_message']}" if s["error_code"] else (s["title"] or "")
        lines.append(
            f"{s['source_id']:<36}  {s['kind']:<8} {s.get('state', s['status']):<10} {s['stage']:<13} {chunks:>6}  {tail[:240]}"
        )
        if s.get("redrives"):
            lines.append(f"{'':<38}  re-driven {s['redrives']}x, last at {s['last_redrive_at']}")
        for st in s["stages"]:
            progress = (
                f"{st['units_done']}/{st['units_total'] if st['units_total'] is not None else '?'} {st['unit']}"
                if st["unit"]
                else ""
            )
            lines.append(
                f"{'':<38}- {st['stage']:<13} {st.get('state', st['status']):<10} attempts {st['attempts']}  {progress}"
            )
    if report["rejections"]:
        lines.append("")
        lines.append("REJECTED MESSAGES (newest first)")
        for r in report["rejections"]:
            lines.append(
                f"  {r['received_at'][:19]}  {r['consumer']:<10} {r['error_code']:<18} {r['error_message'][:100]}"
            )
    return "\n".join(lines)


async def search_chunks(
    settings: Settings,
    query: str,
    *,
    user_id: uuid.UUID,
    class_id: uuid.UUID,
    content_type: str | None,
    limit: int,
    store: str,
    mode: str | None = None,
    include_shared: bool = False,
) -> list[dict[str, Any]]:
    """Embed the query with the pipeline's model and search one store, always filtered to the user (and, with
    include_shared, the sources classmates share with them now: Qdrant only)."""
    from shared.embedder import SentenceEmbedder
    from shared.vectors.records import SEARCH_MODES, SearchMode, SharedSource

    if mode is not None and mode not in SEARCH_MODES:
        raise CliError(
            f"unknown search mode {mode!r}", f"pass --mode {' | '.join(SEARCH_MODES)}", exit_code=2
        )
    if store == "chroma" and (include_shared or mode not in (None, "dense")):
        raise CliError(
            "Chroma is searched by the embedding alone, in the student's own collections",
            "search Qdrant (--store qdrant) for --mode or --shared",
            exit_code=2,
        )
    chosen: SearchMode = mode or settings.search_mode
    vector = (
        None
        if store == "qdrant" and chosen == "sparse"
        else await SentenceEmbedder.from_settings(settings).embed_query(query)
    )
    content_types = [content_type] if content_type else list(CONTENT_TYPE_OF_KIND.values())
    shared: list[SharedSource] = []
    if store == "chroma":
        from shared.vectors.chroma import ChromaStore

        assert vector is not None
        chroma = await ChromaStore.connect(settings)
        hits = await chroma.search(
            vector, user_id=user_id, class_id=class_id, content_types=content_types, limit=limit
        )
    elif store == "qdrant":
        from shared.vectors.qdrant import QdrantStore, make_qdrant_client

        if include_shared:
            from shared.db import sharing

            pool = await create_pool(settings.database_dsn(), max_size=1)
            try:
                shared = await sharing.sources_shared_with(pool, user_id=user_id)
            finally:
                await pool.close()
        client = make_qdrant_client(settings)
        try:
            qdrant = QdrantStore.from_settings(client, settings)
            hits = await qdrant.search(
                vector,
                query_text=query,
                mode=chosen,
                user_id=user_id,
                class_id=class_id,
                content_type=content_type,
                shared=shared,
                limit=limit,
            )
        finally:
            await client.close()
    else:
        raise ValueError(f"unknown store {store!r}: chroma or qdrant")
    sharer = {(str(s.source_id), str(s.shared_by)) for s in shared}
    found = []
    for h in hits:
        owner = str(h.metadata.get("user_id"))
        if owner != str(user_id) and (str(h.metadata.get("source_id")), owner) not in sharer:
            continue  # the store filters on the same; a second look costs nothing
        found.append(
            {
                "score": h.score,
                "score_kind": h.score_kind,
                "shared_by": None if owner == str(user_id) else owner,
                "document_id": h.document_id,
                "source_id": h.metadata.get("source_id"),
                "content_type": h.metadata.get("content_type"),
                "text": h.text,
                "metadata": h.metadata,
            }
        )
    return found


E = TypeVar("E", bound=Envelope)


async def publish_backend_event(settings: Settings, model: type[E], **fields: Any) -> E:
    """Publish one event of the backend's (a delete, a reprocess), starting a new chain of its own."""
    event_id = uuid.uuid4()
    event = model(event_id=event_id, correlation_id=event_id, producer=PRODUCER, **fields)
    broker = make_broker(settings, service="cli")
    async with broker:
        await publish(broker, event)
    return event


async def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter on the topic, oldest first (read from the beginning, no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = [
            TopicPartition(DeadLetter.TOPIC, p) for p in consumer.partitions_for_topic(DeadLetter.TOPIC) or ()
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        letters: list[DeadLetter] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        letters.append(DeadLetter.model_validate_json(record.value or b""))
                    except ValueError:
                        continue  # not ours: the dead-letter topic only ever gets DeadLetter from this code
        return sorted(letters, key=lambda d: d.occurred_at)
    finally:
        await consumer.stop()


async def replay_dead_letters(settings: Settings, letters: list[DeadLetter]) -> int:
    """Publish each letter's original bytes to its original topic with its original key."""
    broker = make_broker(settings, service="cli")
    async with broker:
        for letter in letters:
            await broker.publish(
                base64.b64decode(letter.original_value_b64),
                topic=letter.original_topic,
                key=(letter.original_key or str(letter.dead_letter_id)).encode(),
                headers={"replayed_from": str(letter.dead_letter_id)},
            )
    return len(letters)


async def run_redrive(settings: Settings, *, source_id: uuid.UUID | None) -> Any:
    """One reconciler pass from the CLI: forced for one source, or the normal rules for every source."""
    from services.reconciler.adapters import BrokerLink
    from services.reconciler.app import one_pass

    pool = await create_pool(settings.database_dsn(), max_size=2)
    broker = make_broker(settings, service="cli")
    try:
        async with broker:
            link = BrokerLink(
                broker, bootstrap=settings.kafka_bootstrap_servers, partitions=settings.topic_partitions
            )
            return await one_pass(settings, pool, link, source_id=source_id, force=source_id is not None)
    finally:
        await pool.close()
