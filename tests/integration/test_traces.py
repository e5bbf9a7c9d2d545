"""One upload, one trace: a textbook through the real workers (in this process), the real broker, PostgreSQL,
Chroma and Qdrant, with spans caught by an in-memory exporter."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.events.models import SourceUploaded
from shared.storage import LocalStorage
from tests.harness import Harness
from tests.media.pdfs import make_text_pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PAGES = 30
"""More than one page range (LMGPA_TEXTBOOK_PAGES_PER_RANGE, 25): the trace fans out in chunking."""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends while the test runs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


@pytest.fixture
async def chunking(pipeline: Harness) -> AsyncIterator[Any]:
    """The chunking worker beside the session's upload, embedding and indexing workers (textbooks need it)."""
    module = importlib.import_module("services.chunking.app")
    async with module.app.lifespan_context():
        await module.app.start()
        try:
            yield module
        finally:
            await module.app.stop()


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


async def test_one_textbook_upload_is_one_trace_with_a_span_from_every_stage(
    pipeline: Harness, chunking: Any, spans: InMemorySpanExporter, tmp_path: Path, report: Any
) -> None:
    user_id, class_id = await pipeline.new_owner()
    book = tmp_path / "physics.pdf"
    make_text_pdf(book, PAGES)
    stored = LocalStorage(pipeline.settings.storage_root).put(book, user_id=user_id)
    event_id = uuid.uuid4()
    upload = SourceUploaded(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        kind="textbook",
        user_id=user_id,
        class_id=class_id,
        title="Physics, chapters 1-3",
        storage_url=stored.url,
        media_type="application/pdf",
    )
    await pipeline.publish(upload)
    job = await pipeline.wait_job(upload.source_id, timeout=240)
    assert job.status == "completed", job.error_message
    await pipeline.drain()  # every delivery committed: every stage span has ended

    mine = [s for s in spans.get_finished_spans() if _attr(s, "lmgpa.correlation_id") == str(event_id)]
    trace_ids = {s.context.trace_id for s in mine if s.context is not None}
    stages = {_attr(s, "lmgpa.stage") for s in mine}
    by_id = {s.context.span_id: s for s in mine if s.context is not None}
    roots = [s for s in mine if s.parent is None]
    report(
        f"trace {next(iter(trace_ids), 0):032x}: {len(mine)} spans; "
        + ", ".join(
            f"{stage} {sum(_attr(s, 'lmgpa.stage') == stage for s in mine)}" for stage in sorted(stages)
        )
    )
    for s in sorted(mine, key=lambda s: s.start_time or 0):
        parent = by_id.get(s.parent.span_id) if s.parent is not None else None
        report(f"  {s.name:<40} parent: {parent.name if parent else '-'}")

    assert len(trace_ids) == 1, "one upload is one trace"
    assert stages == {"upload", "chunking", "embedding", "indexing"}
    assert [r.name for r in roots] == ["upload SourceUploaded"], "the upload worker began the trace"
    # Every other span hangs from a span of the same trace: the context crossed every topic in the headers.
    orphans = [s.name for s in mine if s.parent is not None and s.parent.span_id not in by_id]
    assert orphans == []
    assert all(s.parent is not None and s.parent.is_remote for s in mine if s not in roots)
    assert sum(_attr(s, "lmgpa.event_type") == "TextbookPagesQueued" for s in mine) >= 2, "fanned out"
    # The trace id is this upload's alone: no span of another source shares it.
    others = [s for s in spans.get_finished_spans() if s not in mine and s.context.trace_id in trace_ids]  # type: ignore[union-attr]
    assert others == []
