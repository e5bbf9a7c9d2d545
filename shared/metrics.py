"""Prometheus metrics of the pipeline: what every worker exports on GET /metrics beside /health and /ready.

Message-level metrics (received, processed, failed, in progress, duration) come from FastStream's Kafka
Prometheus middleware (``faststream_*``); the pipeline's own (``lmgpa_*``) are defined here and recorded by the
runner (shared.worker), by the adapters behind the ports (shared.tracking's PostgresTracker, the embedding
worker's MeteredEmbedder) and by the reconciler, never by the handlers. Every label value comes from a small fixed set (stage or service
names, error codes, outcomes, units): no user, class or source id is ever a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "lmgpa"
CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of the text exposition format /metrics answers with."""

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""A note's message takes milliseconds, a piece of a lecture minutes."""
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

TRACKED_UNITS: dict[str, str] = {
    "chunking": "pages",
    "transcription": "seconds",
    "ocr": "photos",
    "indexing": "chunks",
}
"""The unit each stage reports its finished work in through the tracker. Embedding is counted where the chunks
are embedded (MeteredEmbedder): its tracker counts parts for a source of several parts, chunks otherwise."""
FINAL_STAGE = "indexing"
"""The stage whose end is the end of a source's ingestion."""


@dataclass(frozen=True)
class PipelineMetrics:
    """The pipeline's own metrics, registered on one registry (the process's default one in a worker)."""

    stage_units: Counter
    stage_completed: Counter
    sources_completed: Counter
    sources_failed: Counter
    stage_duration: Histogram
    queue_wait: Histogram
    retries: Counter
    redeliveries: Counter
    dead_letters: Counter
    redrives: Counter
    stalled: Counter
    embedding_batch: Histogram
    embedding_duration: Histogram
    embedding_rate: Gauge
    ready: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> PipelineMetrics:
        """Create and register every metric on ``registry``."""
        return cls(
            stage_units=Counter(
                f"{PREFIX}_stage_units",
                "Units of work a stage finished (pages, seconds of audio, photos, chunks)",
                ["stage", "unit"],
                registry=registry,
            ),
            stage_completed=Counter(
                f"{PREFIX}_stage_completed",
                "Sources that finished a stage",
                ["stage"],
                registry=registry,
            ),
            sources_completed=Counter(
                f"{PREFIX}_sources_completed",
                "Sources fully indexed (the last stage finished)",
                registry=registry,
            ),
            sources_failed=Counter(
                f"{PREFIX}_sources_failed",
                "Sources failed for good, by the stage that failed them and the error code",
                ["stage", "error_code"],
                registry=registry,
            ),
            stage_duration=Histogram(
                f"{PREFIX}_stage_duration_seconds",
                "Time a worker spent on one message (or one batch) of its stage, by outcome",
                ["stage", "outcome"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            queue_wait=Histogram(
                f"{PREFIX}_queue_wait_seconds",
                "Time from an event's occurred_at (its enqueue) to the start of its handling",
                ["stage"],
                buckets=WAIT_BUCKETS,
                registry=registry,
            ),
            retries=Counter(
                f"{PREFIX}_retries",
                "Transient failures retried in process (a server down or busy)",
                ["service"],
                registry=registry,
            ),
            redeliveries=Counter(
                f"{PREFIX}_redeliveries",
                "Messages delivered again after a delivery that did not end in a commit",
                ["service"],
                registry=registry,
            ),
            dead_letters=Counter(
                f"{PREFIX}_dead_letters",
                "Messages published to the dead-letter topic, by error code",
                ["service", "error_code"],
                registry=registry,
            ),
            redrives=Counter(
                f"{PREFIX}_redrives",
                "Stage inputs the reconciler published again, by why (stalled, broker_lost, operator)",
                ["reason"],
                registry=registry,
            ),
            stalled=Counter(
                f"{PREFIX}_stalled_sources",
                "Sources the reconciler gave up on as stalled",
                registry=registry,
            ),
            embedding_batch=Histogram(
                f"{PREFIX}_embedding_batch_chunks",
                "Chunks embedded in one model call",
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            embedding_duration=Histogram(
                f"{PREFIX}_embedding_batch_seconds",
                "Time of one model call",
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            embedding_rate=Gauge(
                f"{PREFIX}_embedding_chunks_per_second",
                "Chunks per second of the last model call",
                registry=registry,
            ),
            ready=Gauge(
                f"{PREFIX}_worker_ready",
                "1 once the worker has loaded its model and joined its consumer groups",
                ["service"],
                registry=registry,
            ),
        )

    @classmethod
    def detached(cls) -> PipelineMetrics:
        """Metrics on a registry of their own, which nothing scrapes (tests, tools)."""
        return cls.on(CollectorRegistry())

    def waited(self, stage: str, occurred_at: datetime, *, now: datetime | None = None) -> None:
        """An event's handling starts: how long it waited since it was enqueued."""
        seconds = ((now or datetime.now(UTC)) - occurred_at).total_seconds()
        self.queue_wait.labels(stage=stage).observe(max(0.0, seconds))

    def handled(self, stage: str, seconds: float, *, failed: bool) -> None:
        """A message (or batch) of a stage was handled, its effects applied."""
        self.stage_duration.labels(stage=stage, outcome="failed" if failed else "ok").observe(seconds)

    def failed(self, stage: str, error_code: str) -> None:
        """A source failed for good at a stage."""
        self.sources_failed.labels(stage=stage, error_code=error_code).inc()

    def finished(self, stage: str, units: int | None) -> None:
        """A source finished a stage, with the units of work it took (in the stage's unit)."""
        self.stage_completed.labels(stage=stage).inc()
        unit = TRACKED_UNITS.get(stage)
        if unit is not None and units:
            self.stage_units.labels(stage=stage, unit=unit).inc(units)
        if stage == FINAL_STAGE:
            self.sources_completed.inc()

    def embedded(self, chunks: int, seconds: float) -> None:
        """One model call embedded ``chunks`` chunks in ``seconds``."""
        self.stage_units.labels(stage="embedding", unit="chunks").inc(chunks)
        self.embedding_batch.observe(chunks)
        self.embedding_duration.observe(seconds)
        if chunks and seconds > 0:
            self.embedding_rate.set(chunks / seconds)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text exposition of a registry (the process's by default)."""
    return generate_latest(registry)


@lru_cache(maxsize=1)
def process_metrics() -> PipelineMetrics:
    """The metrics of this process, on the default registry (which also carries process_* and python_*)."""
    return PipelineMetrics.on(REGISTRY)
