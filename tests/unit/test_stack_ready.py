"""A worker is ready when its own process says so, not when an earlier run's line is in the same log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.devstack.stack import WORKER_READY_LINE, WorkerProcess, wait_ready


def test_an_earlier_runs_ready_line_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "search-0.log"
    log.write_text(f'{{"event": "{WORKER_READY_LINE}"}}\n{{"event": "worker_stopped"}}\n')
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        worker = WorkerProcess("search", 0, sleeper.pid, str(log), log_offset=log.stat().st_size)
        with pytest.raises(RuntimeError, match="did not start"):
            wait_ready(worker, timeout=1.0)
        with log.open("a") as out:
            out.write(f'{{"event": "{WORKER_READY_LINE}"}}\n')
        wait_ready(worker, timeout=5.0)  # this process's own line
    finally:
        sleeper.kill()
        sleeper.wait()
