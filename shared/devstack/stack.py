"""The embedded default stack: PostgreSQL, the Tansu broker, a Chroma server, a Qdrant server and every worker,
as separate processes on this machine, with its state in one folder so any later command can find it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shared.devstack import servers
from shared.devstack.servers import ServerProcess, ServerStartError
from shared.events.topics import SERVICES
from shared.settings import Settings

STATE_FILE = "stack.json"
DEFAULT_HOME = Path(".lmgpa")
WORKER_READY_LINE = "worker_started"
DEFAULT_WORKERS: tuple[str, ...] = tuple(
    s for s in SERVICES if (Path(__file__).resolve().parents[2] / "services" / s / "app.py").exists()
)
"""Every worker that has an app; the media workers (transcription, OCR, chunking) join with their issue."""
RECONCILER = "reconciler"
"""Re-drives from PostgreSQL what the in-memory broker lost at a restart (or what stalled): one process."""
SEARCH_API = "search"
"""The search API: a process of the stack like a worker, one replica, on the port LMGPA_SEARCH_URL names."""


def find_home(start: Path | None = None) -> Path | None:
    """The stack's folder, found from any directory: $LMGPA_DEV_HOME; else the nearest `.lmgpa` folder in
    ``start`` (default: the current directory) or above it; else the user's own `~/.lmgpa` if it exists.
    None if there is none. The nearest folder wins even when its stack is stopped, so a command never reaches
    past the project it runs in to some other stack."""
    if os.environ.get("LMGPA_DEV_HOME"):
        return Path(os.environ["LMGPA_DEV_HOME"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_HOME).is_dir():
            return folder / DEFAULT_HOME
    user_home = Path.home() / DEFAULT_HOME
    return user_home.resolve() if user_home.is_dir() else None


def default_home() -> Path:
    """Where the stack keeps its state: the one `find_home` finds, else ./.lmgpa (where `dev up` starts one)."""
    return find_home() or DEFAULT_HOME.resolve()


@dataclass
class WorkerProcess:
    """One running worker replica."""

    service: str
    replica: int
    pid: int
    log_path: str
    log_offset: int = 0
    """Where this process's own lines begin in its log (a restarted replica appends to the same file)."""
    http_port: int | None = None
    """Where it serves /health, /ready and /metrics (the search API: its API) on 127.0.0.1; `lmgpa dev ps` lists
    it and `lmgpa top` reads the metrics there."""


@dataclass
class StackState:
    """What is running and how to reach it."""

    home: str
    postgres: dict[str, Any]
    broker: dict[str, Any]
    chroma: dict[str, Any]
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    qdrant: dict[str, Any] = field(default_factory=dict)

    def server(self, name: str) -> ServerProcess:
        """One server's handle."""
        raw = dict(getattr(self, name))
        return ServerProcess(**{**raw, "data_dir": Path(raw["data_dir"]), "log_path": Path(raw["log_path"])})

    def settings(self) -> Settings:
        """The Settings of a process pointed at this stack (what `lmgpa dev env` exports)."""
        fields = {key.removeprefix("LMGPA_").lower(): value for key, value in self.env.items()}
        return Settings(**fields)  # type: ignore[arg-type]

    def save(self) -> None:
        """Write the state file."""
        path = Path(self.home) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=str))


def _server_dict(server: ServerProcess) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(server).items()}


def load_state(home: Path | None = None) -> StackState | None:
    """The running stack's state, or None if there is none."""
    path = (home or default_home()) / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["workers"] = [WorkerProcess(**w) for w in raw.get("workers", [])]
    return StackState(**raw)


SERVER_NAMES = ("postgres", "broker", "chroma", "qdrant")
"""The servers of the stack, in the order they start."""


def stack_env(
    home: Path,
    postgres: ServerProcess,
    broker: ServerProcess,
    chroma: ServerProcess,
    qdrant: ServerProcess,
) -> dict[str, str]:
    """The LMGPA_ settings that point a worker or the CLI at this stack."""
    return {
        "LMGPA_KAFKA_BOOTSTRAP_SERVERS": broker.url,
        "LMGPA_DATABASE_URL": postgres.url,
        "LMGPA_CHROMA_URL": chroma.url,
        "LMGPA_QDRANT_URL": qdrant.url,
        "LMGPA_QDRANT_GRPC_PORT": str(qdrant.grpc_port),
        "LMGPA_STORAGE_ROOT": str(home / "storage"),
        "LMGPA_MODEL_CACHE_DIR": str(home / "models"),
        # Tansu answers a consumer group's join after about half the session timeout: keep it short here.
        "LMGPA_SESSION_TIMEOUT_MS": "4000",
        # Tansu can keep a departed leader after a LeaveGroup (every later join then waits for its SyncGroup
        # forever, seen when all of a group's workers stopped during a rebalance): let sessions expire instead.
        "LMGPA_KAFKA_LEAVE_GROUP_ON_SHUTDOWN": "false",
    }


def start_worker(state: StackState, service: str, replica: int = 0) -> WorkerProcess:
    """Start one worker replica (or the search API) as its own process with the stack's settings."""
    home = Path(state.home)
    log_path = home / "logs" / f"{service}-{replica}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **state.env, "LMGPA_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    env.pop("LMGPA_QDRANT_PATH", None)  # the stack's Qdrant is its server, whatever the caller's shell says
    # Every replica its own port for /health, /ready and /metrics (`lmgpa dev ps` lists them).
    http_port = servers.free_port()
    env["LMGPA_HTTP_HOST"] = "127.0.0.1"
    command = ["worker", service]
    if service == RECONCILER:
        command = ["reconciler"]
    if service == SEARCH_API:
        command = ["search-api"]
        http_port = urlparse(state.env["LMGPA_SEARCH_URL"]).port or http_port
    env["LMGPA_HTTP_PORT"] = str(http_port)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli.main", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return WorkerProcess(
        service=service,
        replica=replica,
        pid=process.pid,
        log_path=str(log_path),
        log_offset=offset,
        http_port=http_port,
    )


WATCHER_PID_FILE = "watch.pid"


def start_watcher(home: Path, owner: int) -> int:
    """Start the detached process that stops the stack once `owner` has ended, unless the stack has one already
    (a `dev up` of a running stack: its first owner holds); returns the watcher's pid."""
    pid_file = home / WATCHER_PID_FILE
    if pid_file.exists():
        running = int(pid_file.read_text())
        if servers.is_running(running):
            return running
    log_path = home / "logs" / "watch.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.devstack.watch", str(home), str(owner)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    return process.pid


def _read_from(path: Path, offset: int) -> str:
    """A log's text from a byte offset on ('' if it does not exist yet)."""
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _answers_ready(port: int) -> bool:
    """Whether GET /ready on the port answers 2xx (a worker: loaded and in its consumer groups)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2.0) as answer:
            return 200 <= int(answer.status) < 300
    except (OSError, ValueError):  # refused, 503 (HTTPError is an OSError), or not HTTP yet
        return False


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


def _cause(lines: list[str]) -> str | None:
    """The line of a worker's log that says why it stopped: the last exception of a traceback, else the last
    line that is not the ASGI server's "startup failed" farewell."""
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()
    for line in reversed(lines):
        if line.strip() and "Application startup failed" not in line:
            return line.strip()
    return None


class WorkerStartError(ServerStartError):
    """A worker exited while starting, or was not ready in time. The first line names the worker and the cause
    (the exception its log ends with); the rest is its log's tail, as for a server."""

    def __init__(self, worker: WorkerProcess, exited: bool, timeout: float) -> None:
        path = Path(worker.log_path)
        lines = _read_from(path, worker.log_offset).splitlines()
        how = "exited while starting" if exited else f"was not ready within {timeout:.0f} s"
        cause = _cause(lines)
        head = f"worker {worker.service}-{worker.replica} {how}" + (f": {cause[:300]}" if cause else "")
        tail = "\n".join(lines[-30:])
        super().__init__(f"{head}\n--- last lines of {path} ---\n{tail}")
        self.worker = worker


def wait_ready(worker: WorkerProcess, *, timeout: float = 180.0) -> None:
    """Wait until a worker has loaded everything and joined the broker (its log says it started and, with a
    port, its /ready answers), or raise WorkerStartError with its log's tail."""
    path = Path(worker.log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Only this process's lines: an earlier run's "worker_started" in the same log proves nothing.
        text = _read_from(path, worker.log_offset)
        if WORKER_READY_LINE in text and (worker.http_port is None or _answers_ready(worker.http_port)):
            return
        if not servers.is_running(worker.pid):
            raise WorkerStartError(worker, exited=True, timeout=timeout)
        time.sleep(0.25)
    raise WorkerStartError(worker, exited=False, timeout=timeout)


def up(
    home: Path | None = None,
    *,
    services: tuple[str, ...] = DEFAULT_WORKERS,
    partitions: int = 6,
    replicas: int = 1,
    search_api: bool = True,
    reconciler: bool = True,
    stop_with_pid: int | None = None,
) -> StackState:
    """Start (or find running) the whole stack with `replicas` processes of each worker; idempotent.

    With `stop_with_pid`, a watcher (shared.devstack.watch) stops the stack once that process has ended: for a
    test run or script that may die before its own teardown. A server that cannot start raises ServerStartError
    with the tail of its log: nothing falls back."""
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = load_state(home)
    fresh = False
    if state is not None and state.qdrant and servers.is_running(state.server("broker").pid):
        alive = [w for w in state.workers if servers.is_running(w.pid)]
        state.workers = alive
        for name, start in (("chroma", servers.start_chroma), ("qdrant", servers.start_qdrant)):
            server = state.server(name)
            if not servers.is_running(server.pid):  # died on its own: the same port and data again
                extra = {"grpc_port": server.grpc_port} if server.grpc_port else {}
                setattr(state, name, _server_dict(start(home, port=server.port, **extra)))
        state.save()
    else:
        if state is not None:
            down(home)  # a half-dead stack (broker gone): stop what is left before starting anew
        state = _start_servers(home)
        fresh = True
    started: list[WorkerProcess] = []
    try:
        asyncio.run(_prepare(state, partitions=partitions))
        running = {(w.service, w.replica) for w in state.workers}
        wanted = [(s, r) for s in services for r in range(replicas)]
        if search_api and "LMGPA_SEARCH_URL" in state.env:
            wanted.append((SEARCH_API, 0))
        if reconciler:
            wanted.append((RECONCILER, 0))
        for service, replica in wanted:
            if (service, replica) not in running:
                started.append(start_worker(state, service, replica))
        state.workers.extend(started)
        state.save()
        for worker in started:
            wait_ready(worker)
        if stop_with_pid is not None:
            start_watcher(home, stop_with_pid)
    except BaseException:
        # A `dev up` that fails leaves nothing of its own running: the whole stack if it started it, else the
        # workers it added to a stack that was already up.
        if fresh:
            down(home)
        else:
            for worker in started:
                stop_worker(worker)
        raise
    return state


def _start_servers(home: Path) -> StackState:
    """Start PostgreSQL, the broker, Chroma and Qdrant and save the state; a server that fails to start stops the
    ones started before it, so nothing is left running without a state file to find it by."""
    started: list[ServerProcess] = []
    try:
        for start in (
            servers.start_postgres,
            servers.start_broker,
            servers.start_chroma,
            servers.start_qdrant,
        ):
            started.append(start(home))
    except BaseException:
        for server in reversed(started):
            if server.name == "postgres":
                servers.stop_postgres(server)
            else:
                servers.stop_process(server)
        raise
    postgres, broker, chroma, qdrant = started
    state = StackState(
        home=str(home),
        postgres=_server_dict(postgres),
        broker=_server_dict(broker),
        chroma=_server_dict(chroma),
        qdrant=_server_dict(qdrant),
        env={
            **stack_env(home, postgres, broker, chroma, qdrant),
            "LMGPA_SEARCH_URL": f"http://127.0.0.1:{servers.free_port()}",
        },
    )
    (home / "storage").mkdir(exist_ok=True)
    state.save()
    return state


async def _prepare(state: StackState, *, partitions: int) -> None:
    # Imported here: the broker's client stack costs about a second, and most CLI commands never need it.
    from shared.broker import create_topics
    from shared.db.migrate import apply_migrations

    await apply_migrations(state.env["LMGPA_DATABASE_URL"])
    await create_topics(state.env["LMGPA_KAFKA_BOOTSTRAP_SERVERS"], partitions=partitions)


def stop_worker(worker: WorkerProcess, *, timeout: float = 30.0) -> None:
    """SIGTERM a worker (in-flight work finishes or is redelivered), then SIGKILL after the timeout."""
    if not servers.is_running(worker.pid):
        return
    os.killpg(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while servers.is_running(worker.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if servers.is_running(worker.pid):
        os.killpg(worker.pid, signal.SIGKILL)


def down(home: Path | None = None, *, purge: bool = False) -> bool:
    """Stop every worker and server of the stack; with purge, delete its data (a stopped stack's too). False if
    there was nothing to stop or delete."""
    home = (home or default_home()).resolve()
    state = load_state(home)
    if state is None:
        # A stopped stack's data (`dev down`, then `dev down --purge`): only a folder with the stack's own
        # cluster in it is taken for a stack's home, so nothing else is ever deleted.
        if purge and servers.remove_stopped_postgres(home):
            shutil.rmtree(home, ignore_errors=True)
            return True
        return False
    for worker in state.workers:
        stop_worker(worker)
    if state.qdrant:
        servers.stop_process(state.server("qdrant"))
    servers.stop_process(state.server("chroma"))
    servers.stop_process(state.server("broker"))
    if purge:
        servers.remove_postgres(state.server("postgres"))  # its data may live outside home (see servers)
    else:
        servers.stop_postgres(state.server("postgres"))
    (home / STATE_FILE).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(home, ignore_errors=True)
    return True
