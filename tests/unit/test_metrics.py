"""What the pipeline records in its metrics, and what /ready and /metrics answer (shared.metrics, the runner,
the port wrappers and the worker runtime), with fakes in place of servers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.embedding.adapters import MeteredEmbedder
from shared import tracking
from shared.errors import TransientError
from shared.metrics import PipelineMetrics
from shared.service import Runtime, _joined
from shared.settings import Settings
from shared.tracking import PostgresTracker
from shared.worker import Worker


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PipelineMetrics:
    return PipelineMetrics.on(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not created yet."""
    return registry.get_sample_value(name, labels) or 0.0


class FakeConnection:
    def transaction(self) -> FakeConnection:
        return self

    async def __aenter__(self) -> FakeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakePool:
    def acquire(self) -> FakeConnection:
        return FakeConnection()


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int | None]]:
    """The tracker's writes, in place of shared.db.jobs; a stage named `broken` fails as the database would."""
    calls: list[tuple[str, str, int | None]] = []

    async def finish_stage(conn: object, *, source_id: uuid.UUID, stage: str, units_done: int | None) -> None:
        if stage == "broken":
            raise TransientError("database_unavailable", "down")
        calls.append(("finished", stage, units_done))

    async def enqueue_stage(conn: object, *, source_id: uuid.UUID, stage: str) -> None:
        calls.append(("enqueued", stage, None))

    async def progress_stage(pool: object, **kwargs: Any) -> None:
        calls.append(("progressed", kwargs["stage"], kwargs["units_done"]))

    async def start_stage(pool: object, **kwargs: Any) -> None:
        calls.append(("started", kwargs["stage"], kwargs["units_total"]))

    for fake in (finish_stage, enqueue_stage, progress_stage, start_stage):
        monkeypatch.setattr(tracking.jobs, fake.__name__, fake)
    return calls


def tracker_on(metrics: PipelineMetrics) -> PostgresTracker:
    return PostgresTracker(cast(Any, FakePool()), metrics)


async def test_the_tracker_counts_finished_stages_in_their_units(
    registry: CollectorRegistry, metrics: PipelineMetrics, written: list[tuple[str, str, int | None]]
) -> None:
    tracker = tracker_on(metrics)
    source = uuid.uuid4()
    await tracker.started(source, "chunking", units_total=288, unit="pages")
    await tracker.progressed(source, "chunking", units_done=100, units_total=288)
    assert value(registry, "lmgpa_stage_units_total", stage="chunking", unit="pages") == 0
    await tracker.finished(source, "chunking", units_done=288, next_stage="embedding")
    await tracker.finished(source, "transcription", units_done=3600, next_stage="embedding")
    await tracker.finished(source, "indexing", units_done=40)
    assert written[-1] == ("finished", "indexing", 40)  # the database write happened
    assert value(registry, "lmgpa_stage_units_total", stage="chunking", unit="pages") == 288
    assert value(registry, "lmgpa_stage_units_total", stage="transcription", unit="seconds") == 3600
    assert value(registry, "lmgpa_stage_units_total", stage="indexing", unit="chunks") == 40
    assert value(registry, "lmgpa_stage_completed_total", stage="chunking") == 1
    # Only the last stage completes a source.
    assert value(registry, "lmgpa_sources_completed_total") == 1


async def test_a_tracker_write_that_fails_counts_nothing(
    registry: CollectorRegistry, metrics: PipelineMetrics, written: list[tuple[str, str, int | None]]
) -> None:
    with pytest.raises(TransientError):
        await tracker_on(metrics).finished(uuid.uuid4(), "broken", units_done=5)
    assert value(registry, "lmgpa_stage_completed_total", stage="broken") == 0


async def test_embedding_tracker_units_are_left_to_the_embedder(
    registry: CollectorRegistry, metrics: PipelineMetrics, written: list[tuple[str, str, int | None]]
) -> None:
    """Embedding's tracker reports parts for a many-part source: its chunks are counted by the model wrapper."""
    await tracker_on(metrics).finished(uuid.uuid4(), "embedding", units_done=3)
    assert value(registry, "lmgpa_stage_units_total", stage="embedding", unit="chunks") == 0
    assert value(registry, "lmgpa_stage_completed_total", stage="embedding") == 1


class FakeModel:
    name = "fake"
    dimensions = 4

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return np.ones((len(texts), 4), dtype=np.float32)


async def test_the_embedder_records_batch_size_time_and_rate(
    registry: CollectorRegistry, metrics: PipelineMetrics
) -> None:
    embedder = MeteredEmbedder(FakeModel(), metrics)
    assert (embedder.name, embedder.dimensions) == ("fake", 4)
    vectors = await embedder.embed(["a", "b", "c"])
    await embedder.embed(["d"] * 40)
    assert vectors.shape == (3, 4)
    assert value(registry, "lmgpa_embedding_batch_chunks_count") == 2
    assert value(registry, "lmgpa_embedding_batch_chunks_sum") == 43
    assert value(registry, "lmgpa_embedding_batch_chunks_bucket", le="4.0") == 1  # the batch of 3
    assert value(registry, "lmgpa_embedding_batch_chunks_bucket", le="64.0") == 2
    assert value(registry, "lmgpa_embedding_batch_seconds_count") == 2
    assert value(registry, "lmgpa_stage_units_total", stage="embedding", unit="chunks") == 43
    assert value(registry, "lmgpa_embedding_chunks_per_second") > 0


def test_queue_wait_is_measured_from_the_events_time(
    registry: CollectorRegistry, metrics: PipelineMetrics
) -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    metrics.waited("embedding", now - timedelta(seconds=7), now=now)
    metrics.waited("embedding", now + timedelta(seconds=3), now=now)  # a clock ahead: never negative
    assert value(registry, "lmgpa_queue_wait_seconds_sum", stage="embedding") == 7
    assert value(registry, "lmgpa_queue_wait_seconds_count", stage="embedding") == 2
    assert value(registry, "lmgpa_queue_wait_seconds_bucket", stage="embedding", le="5.0") == 1
    assert value(registry, "lmgpa_queue_wait_seconds_bucket", stage="embedding", le="10.0") == 2


def test_stage_durations_and_failures_by_outcome_and_code(
    registry: CollectorRegistry, metrics: PipelineMetrics
) -> None:
    metrics.handled("ocr", 0.7, failed=False)
    metrics.handled("ocr", 0.2, failed=True)
    metrics.failed("ocr", "unreadable_image")
    metrics.failed("ocr", "unreadable_image")
    assert value(registry, "lmgpa_stage_duration_seconds_count", stage="ocr", outcome="ok") == 1
    assert value(registry, "lmgpa_stage_duration_seconds_count", stage="ocr", outcome="failed") == 1
    assert value(registry, "lmgpa_sources_failed_total", stage="ocr", error_code="unreadable_image") == 2


async def test_the_runner_counts_each_transient_retry(
    registry: CollectorRegistry, metrics: PipelineMetrics
) -> None:
    worker = Worker(
        service="indexing",
        broker=cast(Any, None),
        pool=cast(Any, None),
        retry_delays=(0.0, 0.0),
        metrics=metrics,
    )
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TransientError("qdrant_unavailable", "connection refused")
        return "done"

    assert await worker._with_retries(flaky) == "done"
    assert value(registry, "lmgpa_retries_total", service="indexing") == 2

    async def down() -> None:
        raise TransientError("qdrant_unavailable", "connection refused")

    with pytest.raises(TransientError):
        await worker._with_retries(down)
    assert value(registry, "lmgpa_retries_total", service="indexing") == 4  # the last attempt is no retry


def test_no_label_can_carry_an_id() -> None:
    """Bounded label sets: stage, service, unit, outcome, error code, reason; never a user or source id."""
    allowed = {"stage", "service", "unit", "outcome", "error_code", "reason"}
    registry = CollectorRegistry()
    metrics = PipelineMetrics.on(registry)
    for metric in vars(metrics).values():
        assert set(metric._labelnames) <= allowed, metric._name


def _consumer(generation: int) -> SimpleNamespace:
    return SimpleNamespace(consumer=SimpleNamespace(_coordinator=SimpleNamespace(generation=generation)))


def test_joined_means_the_consumer_has_a_group_generation() -> None:
    assert _joined(_consumer(1))
    assert not _joined(_consumer(-1))  # before the first join, or reset after a failed heartbeat
    assert not _joined(SimpleNamespace(consumer=None))  # not started


async def _get(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


async def test_ready_is_503_until_loaded_and_joined_then_204() -> None:
    runtime = Runtime("ocr", settings=Settings(http_port=8080))

    @runtime.broker.subscriber("lmgpa.photo.uploaded.v1", group_id="lmgpa.ocr")
    async def handler(message: Any) -> None:  # a subscription, never started here
        """Nothing."""

    app = runtime.app(lambda: cast(Any, None))
    status, _, _ = await _get(app, "/ready")
    assert status == 503  # nothing loaded, no group joined
    runtime.loaded = True
    status, _, _ = await _get(app, "/ready")
    assert status == 503  # loaded, but the consumer has not joined its group
    subscriber = runtime.broker.subscribers[0]
    subscriber.consumer = _consumer(3).consumer  # type: ignore[attr-defined]
    status, _, _ = await _get(app, "/ready")
    assert status == 204
    status, headers, body = await _get(app, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'lmgpa_worker_ready{service="ocr"} 1.0' in text
    assert "# TYPE faststream_received_messages_total counter" in text
    assert "process_resident_memory_bytes" in text
