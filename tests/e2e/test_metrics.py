"""Metrics on the embedded stack: every worker process answers /ready and /metrics on its own port (listed by
`lmgpa dev ps`), and ingesting notes moves the message and stage counters and fills the histograms."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.devstack import stack
from tests.e2e.cli import lmgpa, purge

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

NOTES = 6


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("metrics") / ".lmgpa"
    lmgpa(home, "dev", "up")
    try:
        yield home
    finally:
        purge(home)


def ports(home: Path) -> dict[str, int]:
    """Each process's HTTP port as `lmgpa dev ps` lists it (NAME PID STATE HTTP ADDRESS)."""
    found: dict[str, int] = {}
    for line in lmgpa(home, "dev", "ps").stdout.splitlines()[1:]:
        name, _pid, state, http, *_ = line.split()
        if http != "-":
            assert state == "up", line
            found[name.rsplit("-", 1)[0]] = int(http)
    return found


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: (sample name, sorted labels) -> value."""
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of a sample's series whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_every_worker_serves_ready_health_and_metrics_on_its_own_port(stack_home: Path) -> None:
    found = ports(stack_home)
    state = stack.load_state(stack_home)
    assert state is not None
    assert {w.service for w in state.workers} <= set(found), found
    assert len(set(found.values())) == len(found), f"two processes share a port: {found}"
    for service in stack.DEFAULT_WORKERS:
        port = found[service]
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 204, service
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 204, service
        samples = scrape(port)
        assert total(samples, "lmgpa_worker_ready", service=service) == 1, service
        assert total(samples, "process_resident_memory_bytes") > 0
    # The reconciler has no subscription: its port serves the metrics only (re-drives, stalled sources).
    reconciler = httpx.get(f"http://127.0.0.1:{found[stack.RECONCILER]}/metrics", timeout=10).text
    assert "# TYPE lmgpa_redrives_total counter" in reconciler


def test_ingesting_notes_moves_the_counters_and_fills_the_histograms(stack_home: Path) -> None:
    found = ports(stack_home)
    before = {service: scrape(found[service]) for service in ("upload", "embedding", "indexing")}
    user, klass = str(uuid.uuid4()), str(uuid.uuid4())
    for n in range(NOTES):
        text = f"Note {n}: the derivative of f(g(x)) is f'(g(x)) times g'(x); worked example number {n}."
        out = lmgpa(
            stack_home,
            "ingest",
            "--note",
            text,
            "--user",
            user,
            "--class",
            klass,
            "--create-owner",
            "--wait",
            "--json",
        )
        assert json.loads(out.stdout)["status"] == "completed", out.stdout
    after = {service: scrape(found[service]) for service in ("upload", "embedding", "indexing")}

    def moved(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    topics = {"upload": "lmgpa.source.uploaded.v1", "embedding": "lmgpa.text.extracted.v1"}
    for service, topic in topics.items():
        # FastStream's middleware: every record received and acknowledged, none in progress now.
        assert moved(service, "faststream_received_messages_total", app_name=service, handler=topic) == NOTES
        assert (
            moved(service, "faststream_received_processed_messages_total", app_name=service, status="acked")
            == NOTES
        )
        assert total(after[service], "faststream_received_messages_in_process", app_name=service) == 0
        assert moved(service, "lmgpa_queue_wait_seconds_count", stage=service) == NOTES
        assert moved(service, "lmgpa_stage_duration_seconds_count", stage=service, outcome="ok") >= 1
    # Stage counters: each note is one chunk, embedded and indexed; six sources completed.
    assert moved("embedding", "lmgpa_stage_units_total", stage="embedding", unit="chunks") == NOTES
    assert moved("embedding", "lmgpa_stage_completed_total", stage="embedding") == NOTES
    assert moved("indexing", "lmgpa_stage_units_total", stage="indexing", unit="chunks") == NOTES
    assert moved("indexing", "lmgpa_sources_completed_total") == NOTES
    # Histograms with observations: the batch sizes add up to the chunks, every one in some bucket.
    batches = moved("embedding", "lmgpa_embedding_batch_chunks_count")
    assert 1 <= batches <= NOTES
    assert moved("embedding", "lmgpa_embedding_batch_chunks_sum") == NOTES
    assert moved("embedding", "lmgpa_embedding_batch_chunks_bucket", le="+Inf") == batches
    assert total(after["embedding"], "lmgpa_embedding_chunks_per_second") > 0
    assert moved("indexing", "faststream_received_processed_messages_duration_seconds_count") >= 1
