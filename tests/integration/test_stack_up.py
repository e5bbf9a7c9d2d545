"""A `dev up` that fails leaves nothing running: the servers it had already started are stopped again."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.devstack import servers, stack

pytestmark = pytest.mark.integration


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
