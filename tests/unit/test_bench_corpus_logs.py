"""The corpus bench's log reading: a phase counts only its own handled lines, and idle gaps are found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.bench.corpus import (
    CpuMark,
    alone_comparison,
    handled_entries,
    handling_figures,
    handling_timeline,
    log_offsets,
    metric_sum,
    other_cpu,
    worker_entries,
)


def line(event: str, ts: str, busy_ms: float, **extra: object) -> str:
    return json.dumps({"event": event, "timestamp": ts, "busy_ms": busy_ms, **extra}) + "\n"


def test_only_handled_lines_count() -> None:
    text = (
        '{"event": "worker_started"}\n'
        "not json with busy_ms\n"
        + line("event_processed", "2026-01-01T00:00:01Z", 500, waited_ms=100)
        + line("something_else", "2026-01-01T00:00:02Z", 9000)
        + line("batch_processed", "2026-01-01T00:00:03Z", 1500, events=3, waited_ms=300)
    )
    entries = handled_entries(text)
    assert [e["event"] for e in entries] == ["event_processed", "batch_processed"]
    figures = handling_figures(entries)
    assert figures == {"busy_seconds": 2.0, "messages": 4, "wait_p50_seconds": 0.2, "wait_max_seconds": 0.3}


def test_a_phase_reads_its_logs_from_the_offsets_taken_before_it(tmp_path: Path) -> None:
    (tmp_path / "chunking-0.log").write_text(line("event_processed", "2026-01-01T00:00:01Z", 1000))
    (tmp_path / "embedding-0.log").write_text(line("batch_processed", "2026-01-01T00:00:01Z", 2000, events=2))
    since = log_offsets(tmp_path)
    with (tmp_path / "chunking-0.log").open("a") as log:
        log.write(line("event_processed", "2026-01-01T00:01:01Z", 700))
    (tmp_path / "embedding-1.log").write_text(line("batch_processed", "2026-01-01T00:01:02Z", 300, events=1))
    entries = worker_entries(tmp_path, since)
    assert handling_figures(entries["chunking"])["busy_seconds"] == 0.7
    # A file that did not exist before the phase is read whole; the old file's lines are left out.
    assert handling_figures(entries["embedding"])["busy_seconds"] == 0.3
    assert handling_figures(worker_entries(tmp_path)["embedding"])["busy_seconds"] == 2.3


def test_the_timeline_merges_overlaps_and_sums_the_gaps() -> None:
    entries = [
        {"timestamp": "2026-01-01T00:00:10Z", "busy_ms": 10_000},  # 00:00 to 00:10
        {"timestamp": "2026-01-01T00:00:08Z", "busy_ms": 2_000},  # inside the first
        {"timestamp": "2026-01-01T00:00:15Z", "busy_ms": 3_000},  # 00:12 to 00:15: 2 s gap
        {"timestamp": "2026-01-01T00:00:16Z", "busy_ms": 500},  # 00:15.5 to 00:16: 0.5 s gap
    ]
    timeline = handling_timeline(entries)
    assert timeline["idle_seconds"] == 2.5
    assert timeline["longest_gap_seconds"] == 2.0
    assert (timeline["last_end"] - timeline["first_start"]).total_seconds() == 16.0
    assert handling_timeline([])["first_start"] is None


def test_ratios_are_the_engine_over_the_stage() -> None:
    compared = alone_comparison(
        {"busy_seconds": 10.0, "cpu_seconds": 8.0, "wall_seconds": 12.5},
        engine_seconds=9.0,
        engine_cpu_seconds=8.8,
    )
    assert compared["ratio_busy"] == pytest.approx(0.9)
    assert compared["ratio_cpu"] == pytest.approx(1.1)
    assert compared["ratio_wall"] == pytest.approx(0.72)


def test_a_metric_is_summed_over_its_label_sets_only() -> None:
    exposition = (
        "# HELP lmgpa_embedding_batch_seconds Seconds of one model call\n"
        'lmgpa_embedding_batch_seconds_sum{service="embedding"} 12.5\n'
        'lmgpa_embedding_batch_seconds_sum{service="other"} 0.5\n'
        "lmgpa_embedding_batch_seconds_count 3.0\n"
        "lmgpa_embedding_batch_seconds_sum_total 99\n"
    )
    assert metric_sum(exposition, "lmgpa_embedding_batch_seconds_sum") == 13.0
    assert metric_sum(exposition, "lmgpa_embedding_batch_seconds_count") == 3.0
    assert metric_sum(exposition, "lmgpa_missing") == 0.0


def test_other_users_cpu_is_the_machines_less_the_stacks_and_the_benchs() -> None:
    before = CpuMark(processes={"chunking": 10.0, "embedding": 5.0}, bench=2.0, machine=100.0)
    after = CpuMark(processes={"chunking": 14.0, "embedding": 5.5, "indexing": 1.0}, bench=2.5, machine=110.0)
    # 10 s of the machine: 4 + 0.5 + 1 (a process started meanwhile) by the stack, 0.5 by the bench.
    assert other_cpu(before, after) == 4.0
    assert other_cpu(after, after) == 0.0
