"""A worker is ready when its own process says so, not when an earlier run's line is in the same log; one that
exits while starting is reported at once, by the exception its log ends with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli.errors import explain
from shared.devstack.stack import WORKER_READY_LINE, WorkerProcess, WorkerStartError, wait_ready


def test_an_earlier_runs_ready_line_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "search-0.log"
    log.write_text(f'{{"event": "{WORKER_READY_LINE}"}}\n{{"event": "worker_stopped"}}\n')
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        worker = WorkerProcess("search", 0, sleeper.pid, str(log), log_offset=log.stat().st_size)
        with pytest.raises(WorkerStartError, match="worker search-0 was not ready within 1 s"):
            wait_ready(worker, timeout=1.0)
        with log.open("a") as out:
            out.write(f'{{"event": "{WORKER_READY_LINE}"}}\n')
        wait_ready(worker, timeout=5.0)  # this process's own line
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_worker_that_exits_while_starting_is_named_with_its_cause(tmp_path: Path) -> None:
    log = tmp_path / "indexing-0.log"
    log.write_text('{"event": "worker_started"}\n')  # an earlier run's
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write(
            "Traceback (most recent call last):\n"
            '  File "services/indexing/app.py", line 40, in lifespan\n'
            "shared.errors.PermanentError: qdrant_rejected: Qdrant refused the request (409): exists\n"
            "\n"
            "ERROR:    Application startup failed. Exiting.\n"
        )
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    worker = WorkerProcess("indexing", 0, exited.pid, str(log), log_offset=offset)

    with pytest.raises(WorkerStartError) as raised:
        wait_ready(worker, timeout=30.0)  # at once: the process is gone, nothing is waited for

    failure = explain(raised.value)
    assert failure.message == (
        "worker indexing-0 exited while starting: "
        "shared.errors.PermanentError: qdrant_rejected: Qdrant refused the request (409): exists"
    )
    assert failure.hint == f"its log: {log}"
