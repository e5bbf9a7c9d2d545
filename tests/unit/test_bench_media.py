"""The media bench's pure parts: its table, the accuracy beside each stage, and a phase's log lines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from shared.bench.corpus import children_cpu_seconds, ratio_text, table_lines
from shared.bench.media import (
    Medium,
    accuracy,
    await_log_lines,
    mean,
    median_round,
    where_engine_reads,
)


def row(**extra: float | None) -> dict[str, float | None]:
    base: dict[str, float | None] = {
        "busy_seconds": 10.0,
        "cpu_seconds": 20.0,
        "wall_seconds": 12.5,
        "engine_seconds": 9.0,
        "engine_cpu_seconds": 18.0,
        "ratio_busy": 0.9,
        "ratio_cpu": 0.9,
        "ratio_wall": 0.72,
        "other_cpu_seconds": 0.4,
    }
    return {**base, **extra}


def test_table_has_a_header_and_a_row_per_stage_with_its_ratios() -> None:
    lines = table_lines({"transcription": row(), "ocr": row(ratio_cpu=None)})
    assert len(lines) == 3
    assert lines[0].split()[:4] == ["stage", "busy", "s", "CPU"]
    cells = lines[1].split()
    assert cells[0] == "transcription" and cells[1:4] == ["10.0", "20.0", "12.5"]
    assert cells[6:9] == ["0.90x", "0.90x", "0.72x"]
    assert lines[2].split()[7] == "-"  # no CPU figure: no ratio


def test_ratio_text_and_mean() -> None:
    assert ratio_text(1.234) == "1.23x"
    assert ratio_text(None) == "-"
    assert mean([]) is None
    assert mean([0.5, 1.0]) == 0.75


def test_accuracy_compares_both_texts_with_the_reference_and_skips_photos_without_one(tmp_path: Path) -> None:
    media = [
        Medium("a.jpg", tmp_path / "a.jpg", "the derivative of x"),
        Medium("b.jpg", tmp_path / "b.jpg", None),
    ]
    result = accuracy(media, {"a": "the derivative of x"}, {"a": "tha dcrivative af x"})
    assert set(result["per_photo"]) == {"a"}
    assert result["per_photo"]["a"]["stage"] == 1.0
    assert result["per_photo"]["a"]["engine"] < 1.0
    assert result["stage_mean"] == 1.0 and result["engine_mean"] == result["per_photo"]["a"]["engine"]


def log_line(ts: str, busy_ms: float) -> str:
    return json.dumps({"event": "event_processed", "timestamp": ts, "busy_ms": busy_ms}) + "\n"


def test_log_lines_are_awaited_until_one_ends_after_the_stage_finished(tmp_path: Path) -> None:
    log = tmp_path / "ocr-0.log"
    log.write_text(log_line("2026-01-01T00:00:00+00:00", 100))
    since = {log.name: log.stat().st_size}
    finished = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)

    async def scenario() -> list[dict[str, object]]:
        waiting = asyncio.create_task(await_log_lines(tmp_path, since, "ocr", finished, 10.0))
        await asyncio.sleep(0.2)
        with log.open("a") as out:
            out.write(log_line("2026-01-01T00:00:03+00:00", 200))  # before the finish: not the last yet
        await asyncio.sleep(0.2)
        assert not waiting.done()
        with log.open("a") as out:
            out.write(log_line("2026-01-01T00:00:06+00:00", 300))
        return await asyncio.wait_for(waiting, 5.0)

    entries = asyncio.run(scenario())
    assert [e["busy_ms"] for e in entries] == [200, 300]  # the earlier phase's line is not read


def test_log_lines_wait_gives_up_with_what_was_logged(tmp_path: Path) -> None:
    (tmp_path / "ocr-0.log").write_text(log_line("2026-01-01T00:00:01+00:00", 100))
    finished = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    entries = asyncio.run(await_log_lines(tmp_path, {}, "ocr", finished, 0.1))
    assert [e["busy_ms"] for e in entries] == [100]


def test_children_cpu_counts_a_child_once_it_was_waited_for() -> None:
    before = children_cpu_seconds()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert children_cpu_seconds() - before >= 0.25


def test_a_process_cpu_counts_its_ended_children_only_when_asked() -> None:
    from shared.bench.corpus import process_cpu_seconds
    from shared.devstack.stack import StackState, WorkerProcess

    state = StackState(
        home="/nonexistent",
        postgres={},
        broker={},
        chroma={},
        env={},
        workers=[WorkerProcess(service="ocr", replica=0, pid=os.getpid(), log_path="/dev/null")],
    )
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    ended = children_cpu_seconds()
    without = process_cpu_seconds(state)["ocr"]
    with_children = process_cpu_seconds(state, waited_children=True)["ocr"]
    assert with_children - without >= ended - 0.05  # ...and the children's CPU is not in the default figure
    assert ended >= 0.25


def test_the_ratio_where_tesseract_alone_reads_counts_only_photos_both_read_right() -> None:
    per_photo = {
        "clean": {"stage": 1.0, "engine": 0.99},
        "upside_down": {"stage": 1.0, "engine": 0.1},  # Tesseract alone is wrong: left out
        "blurred": {"stage": 0.5, "engine": 0.97},  # the stage is wrong: left out
        "scan": {"stage": 0.96, "engine": 0.95},
    }
    stage = {"clean": 0.4, "upside_down": 1.4, "blurred": 0.5, "scan": 0.3}
    engine = {"clean": 0.35, "upside_down": 0.5, "blurred": 0.2, "scan": 0.28}
    result = where_engine_reads(stage, engine, per_photo)
    assert result["photos"] == ["clean", "scan"]
    assert result["stage_seconds"] == 0.7 and result["engine_seconds"] == 0.63 and result["ratio"] == 0.9


def test_the_median_round_is_the_middle_ratio_and_the_lower_middle_of_an_even_count() -> None:
    assert median_round([0.87, 1.05, 0.92]) == 2
    assert median_round([0.92, 0.83]) == 1
    assert median_round([0.9, None, 1.0, 0.95]) == 0  # a missing ratio counts as the lowest
    assert median_round([1.1]) == 0
