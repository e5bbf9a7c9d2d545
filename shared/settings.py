"""Typed settings for every service: the only module that reads the environment (prefix ``LMGPA_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a worker, the CLI or the dev stack needs to reach its servers."""

    model_config = SettingsConfigDict(env_prefix="LMGPA_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers."
    )
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/lmgpa"),
        description="PostgreSQL DSN (asyncpg form). A secret: never logged.",
    )
    chroma_url: str = Field(default="http://127.0.0.1:8000", description="Chroma server URL.")
    chroma_token: SecretStr | None = Field(
        default=None, description="Chroma auth token, if the server wants one."
    )
    qdrant_url: str | None = Field(default=None, description="Qdrant server URL; exclusive with qdrant_path.")
    qdrant_path: Path | None = Field(
        default=None,
        description=(
            "Qdrant local-mode folder, only when set on purpose: one process only (a single indexing worker, "
            "no searches beside it), brute force, payload indexes ignored."
        ),
    )
    qdrant_grpc_port: int = Field(default=6334, description="The Qdrant server's gRPC port.")
    qdrant_indexing_threshold_kb: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Vectors (in KB) a segment holds before Qdrant builds its HNSW index; set when the collection is "
            "created (default: the server's, 10,000). Tests lower it so that small data is searched by HNSW."
        ),
    )
    qdrant_prefer_grpc: bool = Field(
        default=False,
        description="Talk to the Qdrant server over gRPC instead of REST (measured: make bench-qdrant).",
    )
    qdrant_api_key: SecretStr | None = Field(default=None, description="Qdrant API key, if any.")
    qdrant_collection: str = Field(
        default="lmgpa_chunks", description="The Qdrant collection for all chunks."
    )
    store_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Longest wait for one answer from Chroma or Qdrant; past it the request counts as a transient failure "
            "and is retried (a server that accepts a connection and goes quiet must not hang a worker)."
        ),
    )
    search_url: str | None = Field(
        default=None,
        description="The search API's base URL: `lmgpa search` asks it (the model stays loaded there).",
    )
    search_mode: Literal["hybrid", "dense", "sparse"] = Field(
        default="sparse",
        description=(
            "How a search that has the query's text ranks in Qdrant: sparse (BM25 over the words, computed by the "
            "server), dense (the embedding only) or hybrid (both, fused by RRF). sparse measured best on known-item "
            "and rare-word queries (make bench-retrieval)."
        ),
    )
    storage_root: Path = Field(
        default=Path("var/storage"), description="Root folder of the local object storage (file:// URLs)."
    )

    topic_partitions: int = Field(
        default=6, ge=1, description="Partitions per topic when the stack creates them."
    )
    consumer_group_prefix: str = Field(
        default="lmgpa", description="Consumer groups are '<prefix>.<service>'."
    )
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    session_timeout_ms: int = Field(
        default=10_000,
        ge=2_000,
        description="Consumer session; Tansu answers a group join after about half of it.",
    )
    kafka_leave_group_on_shutdown: bool = Field(
        default=True,
        description=(
            "Whether a stopping worker leaves its consumer groups at once (a rebalance now) or lets its session "
            "expire (a rebalance after the session timeout, as after a crash). The embedded stack sets false: "
            "the Tansu broker can keep a departed leader after a LeaveGroup and never complete the group again."
        ),
    )
    retry_attempts: int = Field(
        default=5, ge=0, description="In-process retries of a transient failure per delivery."
    )
    retry_base_delay: float = Field(
        default=0.5, ge=0, description="First retry delay in seconds; doubles each time."
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        description="Deliveries of a message that keeps failing transiently, or that never finish (its worker died), before it is dead-lettered.",
    )
    batch_max_records: int = Field(default=64, ge=1, description="Messages per batch for batching workers.")
    fetch_max_wait_ms: int = Field(
        default=250,
        ge=1,
        le=500,
        description=(
            "How long the broker may hold an empty fetch. Each idle consumer asks again when it ends, so a "
            "shorter one costs broker CPU on an idle stack (measured per 30 s idle: 13.4 CPU-s at 25 ms, 4.1 at "
            "250, 2.5 at 500), and a longer one delays messages (a typed note's p50 upload-to-indexed: 105 ms "
            "at 25, 191 at 250, 380 at 500: make bench-notes)."
        ),
    )
    batch_timeout_ms: int = Field(
        default=25,
        ge=1,
        le=1000,
        description=(
            "How long a batching worker waits for a batch, and then sleeps, when its topic is empty (FastStream "
            "sleeps as long again after an empty poll); a busy topic's batches are taken as soon as they arrive."
        ),
    )

    embedding_model_path: Path | None = Field(
        default=None,
        description="Folder of a sentence-transformers model; default: the packaged all-MiniLM-L6-v2.",
    )
    embedding_model_name: str = Field(default="all-MiniLM-L6-v2", description="Recorded with every vector.")
    embedding_dimensions: int = Field(
        default=384, ge=1, description="Vector size of the model (Qdrant collection)."
    )
    embedding_batch_size: int = Field(default=32, ge=1)
    embedding_batch_max_parts: int = Field(
        default=8,
        ge=1,
        description=(
            "Messages (parts of extracted text) per embedding batch. A batch is embedded before the worker polls "
            "again, and a worker that does not poll within LMGPA_MAX_POLL_INTERVAL_MS is put out of its group "
            "and handed the same batch again, without end: a part holds up to 200,000 characters (356 chunks "
            "of gnuplot's dense manual), so 8 parts are at most ~2,850 chunks, 33 s at this machine's int8 86.5 "
            "chunks/s and 107 s at torch fp32's 26.7 (make bench-embedding), where the 64 of "
            "LMGPA_BATCH_MAX_RECORDS could take 14 minutes."
        ),
    )
    embedding_streams: int | None = Field(
        default=None,
        ge=1,
        description=(
            "OpenVINO kernels: inference requests run side by side, sharing the process's cores "
            "(default: one per core, each on one thread; 1 = one request on every core)."
        ),
    )
    embedding_backend: Literal[
        "auto", "torch-fp32", "onnx-fp32", "openvino-fp32", "openvino-bf16", "openvino-int8"
    ] = Field(
        default="auto",
        description=(
            "The embedding kernel: auto picks by the CPU's instructions (OpenVINO int8 where it has int8 dot "
            "products, else bf16 where it has bf16, else fp32); torch-fp32 is sentence-transformers as before."
        ),
    )
    chunk_tokens: int = Field(default=200, ge=16, description="Target word pieces per chunk.")
    chunk_overlap_tokens: int = Field(
        default=32, ge=0, description="Word pieces shared by consecutive chunks."
    )

    reuse_identical_uploads: bool = Field(
        default=True,
        description=(
            "An upload whose file has the same SHA-256 and pipeline version (shared/pipeline_version.py) as a "
            "completed source of the same kind copies that source's vectors and rows instead of computing them."
        ),
    )
    max_note_chars: int = Field(default=2_000_000, ge=1, description="Largest note accepted, in characters.")

    whisper_engine: Literal["faster-whisper", "openai-whisper"] = Field(
        default="faster-whisper",
        description="Speech engine: faster-whisper (CTranslate2, faster on CPU) or openai-whisper.",
    )
    whisper_model: Literal["tiny.en", "base"] = Field(
        default="tiny.en",
        description="tiny.en (measured here: more accurate and twice as fast) or multilingual base.",
    )
    model_cache_dir: Path = Field(
        default=Path("var/models"), description="Where assembled or converted model files are cached."
    )
    audio_piece_seconds: float = Field(
        default=600.0, ge=30, description="Recordings are transcribed in pieces this long."
    )
    textbook_pages_per_range: int = Field(
        default=25, ge=1, description="Books are extracted in page ranges this long."
    )
    max_audio_seconds: float = Field(default=4 * 3600, gt=0, description="Longest recording accepted.")
    max_image_pixels: int = Field(
        default=60_000_000, gt=0, description="Largest photo accepted (decompression bombs)."
    )
    max_pdf_pages: int = Field(default=5000, gt=0, description="Largest book accepted.")
    max_file_bytes: int = Field(default=2 * 1024**3, gt=0, description="Largest upload accepted, any kind.")

    stall_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A stage working with no heartbeat for this long is reported as stalled.",
    )

    reconcile_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the reconciler looks for work the broker lost or that stalled.",
    )
    max_redrives: int = Field(
        default=5,
        ge=0,
        description="Re-drives of a stalled stage's input before its source fails as `stalled`.",
    )

    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "LMGPA_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description=(
            "OTLP gRPC endpoint (http://collector:4317) that traces are exported to; also read from the standard "
            "OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT. Unset: no tracer provider is installed and tracing costs nothing."
        ),
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of uploads traced (the upload's trace id decides; later stages follow their parent).",
    )

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(
        default=None, description="If set, the worker serves /health (and indexing its query API) here."
    )

    @model_validator(mode="after")
    def _one_qdrant(self) -> Settings:
        if self.qdrant_url and self.qdrant_path:
            raise ValueError("set LMGPA_QDRANT_URL or LMGPA_QDRANT_PATH, not both")
        return self

    def database_dsn(self) -> str:
        """The PostgreSQL DSN in clear, for the driver only."""
        return self.database_url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process from the environment."""
    return Settings()
