"""OpenTelemetry traces: one trace per upload, a span per stage, the context carried in the Kafka headers.

Off unless an OTLP endpoint is configured (``LMGPA_OTLP_ENDPOINT`` or the standard ``OTEL_EXPORTER_OTLP_*``):
then no SDK provider is installed, nothing of the SDK is even imported, and every helper here returns at its
first line (no span objects, no header parsing).

Why not FastStream's ``KafkaTelemetryMiddleware``: a batch consumer's span there starts a new trace per batch
(linked to its messages), which breaks "one trace per upload" at the embedding worker, and a message the
reconciler re-drives from the outbox has lost its headers. Here each event of a batch gets its own span under
its own upload's trace, and the context is also kept in the event (``Envelope.traceparent``), which the outbox
stores with the payload, so a re-drive continues the same trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.events.models import Envelope, SourceRef

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord
    from opentelemetry.sdk.trace import TracerProvider

    from shared.settings import Settings

E = TypeVar("E", bound=Envelope)
TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def configure_tracing(settings: Settings, *, service: str) -> bool:
    """Install an SDK provider exporting over OTLP gRPC if an endpoint is set; True if tracing is now on."""
    if not settings.otlp_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"lmgpa-{service}", "service.namespace": "lmgpa"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    install(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Trace with this provider from now on (configure_tracing's, or a test's in-memory one)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("lmgpa")


def uninstall() -> None:
    """Stop tracing: back to the no-op state (tests)."""
    global _tracer, _provider
    _tracer = None
    _provider = None


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def shutdown() -> None:
    """Export what is buffered and stop the provider (a worker's last act)."""
    if _provider is not None:
        _provider.shutdown()
    uninstall()


def _parent(record: ConsumerRecord[Any, Any] | None, event: Envelope) -> otel_context.Context | None:
    """The publisher's context: the Kafka header first, else the copy kept in the event (a re-drive)."""
    carrier: dict[str, str] = {}
    for key, value in (record.headers if record is not None else None) or ():
        if key == TRACEPARENT and value:
            carrier[TRACEPARENT] = (
                value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            )
    if not carrier and event.traceparent:
        carrier[TRACEPARENT] = event.traceparent
    return _PROPAGATOR.extract(carrier) if carrier else None


def start_stage_span(
    service: str,
    event: Envelope,
    record: ConsumerRecord[Any, Any] | None = None,
    *,
    batch_size: int | None = None,
) -> Span | None:
    """Begin the span of one event's handling by a stage, as a child of its publisher's span (None: off)."""
    if _tracer is None:
        return None
    ref: SourceRef | None = getattr(event, "source", None)
    source_id = ref.source_id if ref is not None else getattr(event, "source_id", None)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation": "process",
        "messaging.destination.name": event.TOPIC,
        "lmgpa.stage": service,
        "lmgpa.event_type": event.event_type,
        "lmgpa.event_id": str(event.event_id),
        "lmgpa.correlation_id": str(event.correlation_id),
    }
    if source_id is not None:
        attributes["lmgpa.source_id"] = str(source_id)
    if ref is not None:
        attributes["lmgpa.kind"] = ref.kind
    if record is not None:
        attributes["messaging.kafka.destination.partition"] = record.partition
        attributes["messaging.kafka.message.offset"] = record.offset
    if batch_size is not None:
        attributes["messaging.batch.message_count"] = batch_size
    return _tracer.start_span(
        f"{service} {event.event_type}",
        context=_parent(record, event),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


@contextmanager
def active(span: Span | None) -> Iterator[None]:
    """Make a span current (what is published inside carries it) without ending it; no-op for None."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def mark_failed(span: Span | None, error_code: str) -> None:
    """Mark a stage span as the one where its source failed for good, with the error code."""
    if span is None:
        return
    span.set_attribute("lmgpa.error_code", error_code)
    span.set_status(Status(StatusCode.ERROR, error_code))


def end(span: Span | None, *, error: BaseException | None = None) -> None:
    """End a stage span; an error escaping it (the delivery was not committed) is recorded on it."""
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


@contextmanager
def stage_span(
    service: str, event: Envelope, record: ConsumerRecord[Any, Any] | None = None
) -> Iterator[Span | None]:
    """The span of one event's handling, current for its duration (None and no cost when tracing is off)."""
    if _tracer is None:
        yield None
        return
    span = start_stage_span(service, event, record)
    try:
        with active(span):
            yield span
    except BaseException as error:
        end(span, error=error)
        raise
    end(span)


@contextmanager
def root_span(name: str, **attributes: str) -> Iterator[Span | None]:
    """A new trace begun here (the CLI's `ingest`, playing the backend); None when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span


def stamp(event: E) -> E:
    """The event with the current span's context in ``traceparent`` (the event itself when nothing traces)."""
    if _tracer is None:
        return event
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    value = carrier.get(TRACEPARENT)
    if value is None or value == event.traceparent:
        return event
    return event.model_copy(update={TRACEPARENT: value})


def headers(traceparent: str | None) -> dict[str, str]:
    """The Kafka header that carries an event's trace context (none without one)."""
    return {TRACEPARENT: traceparent} if traceparent else {}


def headers_of_payload(payload: bytes) -> dict[str, str]:
    """The trace header of a stored event's JSON (an outbox row the reconciler publishes again)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return {}
    value = body.get(TRACEPARENT) if isinstance(body, dict) else None
    return headers(value) if isinstance(value, str) else {}
