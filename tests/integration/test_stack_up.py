"""A `dev up` that fails leaves nothing running: the servers it had already started are stopped again; a stack
started for a process stops once that process has ended."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from shared.devstack import servers, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_a_server_that_cannot_start_stops_the_ones_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[servers.ServerProcess] = []
    for name in ("start_postgres", "start_broker", "start_chroma"):
        real = getattr(servers, name)

        def recording(*args: object, _real: object = real, **kwargs: object) -> servers.ServerProcess:
            server: servers.ServerProcess = _real(*args, **kwargs)  # type: ignore[operator]
            started.append(server)
            return server

        monkeypatch.setattr(servers, name, recording)
    monkeypatch.setenv("LMGPA_QDRANT_BIN", str(tmp_path / "no-such-qdrant"))
    with pytest.raises(servers.ServerStartError, match="no Qdrant server binary"):
        stack.up(tmp_path / "stack")
    assert [s.name for s in started] == ["postgres", "broker", "chroma"]
    assert not [s.name for s in started if servers.is_running(s.pid)], "a server outlived the failed up"
    assert stack.load_state(tmp_path / "stack") is None


def test_a_stack_stops_itself_once_the_process_it_was_started_for_has_ended(tmp_path: Path) -> None:
    """`dev up --stop-with-pid`: a test run killed before its teardown leaves no stack running behind it."""
    owner = subprocess.Popen(["sleep", "600"])
    home = tmp_path / "owned"
    state = stack.up(home, services=("upload",), search_api=False, reconciler=False, stop_with_pid=owner.pid)
    watcher = (home / stack.WATCHER_PID_FILE).read_text()
    again = stack.up(home, services=("upload",), search_api=False, reconciler=False, stop_with_pid=owner.pid)
    assert (home / stack.WATCHER_PID_FILE).read_text() == watcher, "one watcher, however often `up` runs"
    assert [w.pid for w in again.workers] == [w.pid for w in state.workers]
    pids = [w.pid for w in state.workers] + [
        state.server(n).pid for n in ("postgres", "broker", "chroma", "qdrant")
    ]
    pids.append(int(watcher))  # the watcher too ends with the stack
    time.sleep(3)
    assert all(servers.is_running(pid) for pid in pids), "the stack runs while its owner does"
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        stack.load_state(home) is not None or any(map(servers.is_running, pids))
    ):
        time.sleep(0.5)
    assert stack.load_state(home) is None
    assert not [pid for pid in pids if servers.is_running(pid)], "a process outlived its stack's owner"
    assert "stopping the stack" in (home / "logs" / "watch.log").read_text()
    stack.down(home, purge=True)  # the data stays after such a stop; this test's own cleanup


def test_the_watcher_ends_with_a_stack_stopped_the_normal_way(tmp_path: Path) -> None:
    from shared.devstack import watch

    assert watch.watch(tmp_path, os.getpid(), poll_seconds=0.01) is False  # no state file: nothing to watch
