"""Tracing: off (no provider, nothing done) without an endpoint; the context carried in headers and events."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.events.models import SourceUploaded
from shared.settings import Settings


def upload(**extra: Any) -> SourceUploaded:
    event_id = uuid.uuid4()
    return SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind="note",
        user_id=uuid.uuid4(),
        class_id=uuid.uuid4(),
        title="t",
        text="some text",
        **extra,
    )


def record(headers: list[tuple[str, bytes]]) -> Any:
    return SimpleNamespace(headers=headers, partition=0, offset=7)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)
    try:
        yield spans
    finally:
        tracing.uninstall()


def test_without_an_endpoint_no_provider_is_installed_and_nothing_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LMGPA_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.uninstall()
    assert tracing.configure_tracing(Settings(), service="upload") is False
    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # the API's no-op proxy, not the SDK
    event = upload()
    assert tracing.stamp(event) is event  # not even a copy
    with tracing.stage_span("upload", event, record([])) as span:
        assert span is None
    assert tracing.start_stage_span("upload", event) is None
    assert tracing.headers(event.traceparent) == {}


def test_the_exporter_module_is_loaded_only_when_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGPA_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    settings = Settings()
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"
    try:
        assert tracing.configure_tracing(settings, service="embedding") is True
        assert tracing.enabled()
        assert "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in sys.modules
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_the_standard_otel_variable_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMGPA_OTLP_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert Settings().otlp_endpoint == "http://collector:4317"


def test_a_span_continues_the_trace_of_the_header(exporter: InMemorySpanExporter) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = upload(traceparent="00-11111111111111111111111111111111-2222222222222222-01")
    with tracing.stage_span("chunking", event, record([("traceparent", parent.encode())])):
        pass
    [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"  # the header wins
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert span.name == "chunking SourceUploaded"


def test_a_redriven_event_without_headers_continues_the_trace_kept_in_it(
    exporter: InMemorySpanExporter,
) -> None:
    """The reconciler publishes the outbox's payload again: the context kept in the event carries the trace."""
    kept = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = upload(traceparent=kept)
    with tracing.stage_span("upload", event, record([])):
        pass
    [span] = exporter.get_finished_spans()
    assert span.context is not None and f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.headers_of_payload(event.model_dump_json().encode()) == {"traceparent": kept}
    assert tracing.headers_of_payload(b"not json") == {}


def test_events_published_inside_a_span_carry_its_context(exporter: InMemorySpanExporter) -> None:
    event = upload()
    with tracing.stage_span("upload", event, record([])) as span:
        stamped = tracing.stamp(event)
    assert span is not None
    context = span.get_span_context()
    assert (
        stamped.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    assert stamped.event_id == event.event_id  # the same event, now with its trace
    assert SourceUploaded.model_validate_json(stamped.model_dump_json()) == stamped


def test_a_failed_stage_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    with tracing.stage_span("upload", upload(), record([])) as span:
        tracing.mark_failed(span, "not_text")
    [finished] = exporter.get_finished_spans()
    assert finished.status.status_code == trace.StatusCode.ERROR
    assert (finished.attributes or {})["lmgpa.error_code"] == "not_text"


def test_an_invalid_traceparent_in_an_event_is_refused() -> None:
    with pytest.raises(ValueError, match="traceparent"):
        upload(traceparent="not-a-trace")
