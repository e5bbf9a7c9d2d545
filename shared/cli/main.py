"""``lmgpa``: run a worker, the embedded stack, and play the backend (ingest, replay, status, search)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import typer

from shared.devstack import stack
from shared.events import topics
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.cli.progress import StageBars

# Plain help (rich_markup_mode=None): flags read as flags, without a `<bool>` value to type.
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
dev = typer.Typer(
    help="The embedded default stack (no Docker, nothing to configure).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
topics_cli = typer.Typer(help="Kafka topics.", no_args_is_help=True, rich_markup_mode=None)
schemas_cli = typer.Typer(
    help="The generated contract under schemas/.", no_args_is_help=True, rich_markup_mode=None
)
dlq = typer.Typer(
    help="The dead-letter topic: what no worker could handle, and why.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dlq, name="dlq")
app.add_typer(dev, name="dev")
app.add_typer(topics_cli, name="topics")
app.add_typer(schemas_cli, name="schemas")

KIND_OF_SUFFIX = {
    **dict.fromkeys(
        (".m4a", ".mp4", ".aac", ".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".webm"), "audio"
    ),
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".bmp"), "photo"),
    ".pdf": "textbook",
    **dict.fromkeys((".txt", ".md"), "note"),
}
UserOpt = Annotated[uuid.UUID, typer.Option("--user", help="The student's users.id.")]
ClassOpt = Annotated[uuid.UUID, typer.Option("--class", help="The class's classes.id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Kind = Literal["audio", "photo", "textbook", "note"]
SERVER_SETTINGS = ("database_url", "kafka_bootstrap_servers", "chroma_url", "qdrant_url")
"""The settings that say where a server is: never taken from defaults when no stack was found."""


@dataclass
class Session:
    """What this run of the CLI was asked for and found, for the error report at the end."""

    debug: bool = False
    command: str | None = None
    settings: Settings | None = None
    stack_home: Path | None = None
    stack_variables: frozenset[str] = frozenset()
    """The LMGPA_ variables the stack gave (the user set none of them)."""


SESSION = Session()
LONG_RUNNING = frozenset({"worker", "search-api", "mcp"})
"""Commands that run until stopped and log as services do; every other one reports its own errors."""


@app.callback()
def options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="LMGPA_DEBUG", help="Show the traceback of an error.")
    ] = False,
) -> None:
    """Options of every command."""
    SESSION.debug = debug
    SESSION.command = ctx.invoked_subcommand
    if not debug and ctx.invoked_subcommand not in LONG_RUNNING:
        from shared.logging import quiet_clients

        quiet_clients()


def settings(*needs: str) -> Settings:
    """LMGPA_ variables first; any not set are taken from the running dev stack, if there is one. Without a
    stack, the servers a command ``needs`` (Settings field names; default: at least one server) must be set
    explicitly: the CLI never reaches for default ports on its own."""
    home = stack.find_home()
    state = stack.load_state(home) if home is not None else None
    if state is not None:
        SESSION.stack_home = Path(state.home)
        SESSION.stack_variables = frozenset(k for k in state.env if k not in os.environ)
        for key, value in state.env.items():
            os.environ.setdefault(key, value)
    cfg = Settings()
    SESSION.settings = cfg
    if state is None:
        given = cfg.model_fields_set
        missing = [f for f in needs if f not in given] if needs else []
        if missing or (not needs and not given & set(SERVER_SETTINGS)):
            from shared.cli.errors import NoStackError

            raise NoStackError(home, [f"LMGPA_{f.upper()}" for f in (missing or SERVER_SETTINGS)])
    return cfg


def _json_value(value: Any) -> Any:
    """ISO 8601 for every timestamp (always with the T), text for the rest (UUIDs, paths)."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_value))


# ----------------------------------------------------------------------------------------------- operations


@app.command()
def worker(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(topics.SERVICES)}.")]) -> None:
    """Run one worker in the foreground (scale by running more of them)."""
    if name not in topics.SERVICES:
        raise typer.BadParameter(f"unknown worker {name!r}; choose one of {', '.join(topics.SERVICES)}")
    if name not in stack.DEFAULT_WORKERS:
        typer.echo(f"worker {name!r} has no implementation in this release", err=True)
        raise typer.Exit(2)
    module = importlib.import_module(f"services.{name}.app")
    application = module.app
    cfg: Settings = module.runtime.settings
    if cfg.http_port is not None:
        import uvicorn

        uvicorn.run(application, host=cfg.http_host, port=cfg.http_port, log_level="warning")
    else:
        asyncio.run(application.run())


@app.command("search-api")
def search_api() -> None:
    """Serve the search API (POST /v1/search, /health, /ready; OpenAPI at /docs) on LMGPA_HTTP_HOST:PORT."""
    import uvicorn

    cfg = settings()
    port = cfg.http_port or 8080
    uvicorn.run("services.search.app:app", host=cfg.http_host, port=port, log_level="warning")


@app.command("reconciler")
def reconciler() -> None:
    """Run the reconciler in the foreground: it publishes again the stage inputs a broker lost or that stalled
    (from PostgreSQL's outbox), and fails as `stalled` a source past LMGPA_MAX_REDRIVES. Any number may run."""
    from services.reconciler.app import run

    asyncio.run(run(settings("database_url", "kafka_bootstrap_servers")))


@app.command()
def redrive(
    source: Annotated[
        uuid.UUID | None, typer.Argument(help="Publish this source's pending stage input again now.")
    ] = None,
    stalled: Annotated[
        bool, typer.Option("--stalled", help="Run a reconciler pass now: every lost or stalled source.")
    ] = False,
) -> None:
    """Re-drive unfinished work from PostgreSQL (what `lmgpa reprocess` refuses for a busy source)."""
    if (source is None) == (not stalled):
        raise typer.BadParameter("name a SOURCE, or pass --stalled")
    from shared.cli.backend import run_redrive

    report = asyncio.run(run_redrive(settings("database_url", "kafka_bootstrap_servers"), source_id=source))
    if report.skipped:
        typer.echo("another reconciler is in a pass right now: try again in a moment", err=True)
        raise typer.Exit(1)
    if source is not None and not report.redriven:
        typer.echo(f"source {source}: nothing pending to re-drive (finished, or every input already applied)")
        return
    for item in report.redriven:
        typer.echo(
            f"re-drove {item.event.topic} for source {item.event.source_id} "
            f"({item.stage or item.event.consumer}; re-drive {item.redrives + 1})"
        )
    for item in report.given_up:
        typer.echo(f"gave up on source {item.event.source_id}: stalled in {item.stage}")
    if report.broker_lost:
        typer.echo("the broker had lost its log: every pending input was published again")
    if not report.redriven and not report.given_up:
        typer.echo("nothing lost or stalled")


@app.command()
def migrate() -> None:
    """Apply the SQL migrations under schemas/migrations (idempotent)."""
    from shared.db.migrate import apply_migrations

    applied = asyncio.run(apply_migrations(settings("database_url").database_dsn()))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@topics_cli.command("create")
def topics_create(
    partitions: Annotated[int | None, typer.Option(help="Default: LMGPA_TOPIC_PARTITIONS.")] = None,
) -> None:
    """Create every topic of the contract that does not exist yet."""
    from shared.broker import create_topics

    cfg = settings("kafka_bootstrap_servers")
    created = asyncio.run(
        create_topics(cfg.kafka_bootstrap_servers, partitions=partitions or cfg.topic_partitions)
    )
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@schemas_cli.command("generate")
def schemas_generate() -> None:
    """Write the JSON Schema of every event and the AsyncAPI document under schemas/."""
    from shared.events.schemas import write_schemas

    for path in write_schemas():
        typer.echo(f"wrote {path}")


@schemas_cli.command("check")
def schemas_check() -> None:
    """Fail if the committed schemas differ from the models."""
    from shared.events.schemas import stale_schemas

    stale = stale_schemas()
    if stale:
        typer.echo(f"out of date: {', '.join(stale)}; run `lmgpa schemas generate`", err=True)
        raise typer.Exit(1)
    typer.echo("schemas are up to date")


# ---------------------------------------------------------------------------------------------------- dev stack


@dev.command("up")
def dev_up(
    services: Annotated[list[str] | None, typer.Option("--service", help="Start only these workers.")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Processes per worker.")] = 1,
    stop_with_pid: Annotated[
        int | None,
        typer.Option(
            envvar="LMGPA_DEV_STOP_WITH_PID",
            help="Stop the stack once this process has ended (a test run or script that may die before its "
            "teardown); its data stays.",
        ),
    ] = None,
) -> None:
    """Start PostgreSQL, the broker, Chroma, Qdrant and the workers; prints how to reach them."""
    state = stack.up(
        services=tuple(services or stack.DEFAULT_WORKERS), replicas=replicas, stop_with_pid=stop_with_pid
    )
    typer.echo(f"stack up in {state.home}")
    for w in state.workers:
        typer.echo(f"  worker {w.service}-{w.replica}: pid {w.pid}, log {w.log_path}")
    typer.echo('  settings: eval "$(lmgpa dev env)"   stop: lmgpa dev down   (or: make down)')


@dev.command("down")
def dev_down(purge: Annotated[bool, typer.Option(help="Also delete the stack's data.")] = False) -> None:
    """Stop every worker and server of the stack."""
    if not stack.down(purge=purge):
        typer.echo("no stack here" if purge else "no stack is running")
    else:
        typer.echo("stack stopped and its data deleted" if purge else "stack stopped")


@dev.command("demo")
def dev_demo() -> None:
    """Start the stack, ingest the sample notes of two students, show their status and a search each."""
    from shared.devstack.demo import run_demo

    raise typer.Exit(run_demo())


@dev.command("env")
def dev_env() -> None:
    """Print the running stack's settings as shell export lines (eval them to run one more worker)."""
    home = stack.find_home()
    state = stack.load_state(home) if home is not None else None
    if state is None:
        from shared.cli.errors import NoStackError

        raise NoStackError(home)
    for key, value in state.env.items():
        typer.echo(f"export {key}={json.dumps(value)}")


@dev.command("ps")
def dev_ps() -> None:
    """List the stack's processes, whether each is alive, and where to reach it."""
    from shared.devstack.servers import is_running

    state = stack.load_state()
    if state is None:
        typer.echo("no stack is running: start one with `lmgpa dev up`", err=True)
        raise typer.Exit(1)
    rows = [("NAME", "PID", "STATE", "HTTP", "ADDRESS")]
    for name in stack.SERVER_NAMES:
        if getattr(state, name):
            server = state.server(name)
            alive = "up" if is_running(server.pid) else "DOWN"
            rows.append((name, str(server.pid), alive, "-", server.url))
    for w in state.workers:
        address = state.env.get("LMGPA_SEARCH_URL", "") if w.service == stack.SEARCH_API else w.log_path
        alive = "up" if is_running(w.pid) else "DOWN"
        # The worker's /health, /ready and /metrics (the search API's own API) are on this port.
        port = str(w.http_port) if w.http_port is not None else "-"
        rows.append((f"{w.service}-{w.replica}", str(w.pid), alive, port, address))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        )


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (logs, scripts, tests).")
    ] = False,
    window: Annotated[float, typer.Option(help="Seconds the rates are averaged over.", min=1)] = 60.0,
    failures_window: Annotated[
        float, typer.Option("--failures-window", help="Seconds of failures shown.", min=1)
    ] = 3600.0,
    limit: Annotated[int, typer.Option(help="Sources shown in flight (the longest silent first).")] = 15,
) -> None:
    """A live view of the pipeline: each stage's load and rates, sources in flight and stalled, failures by
    error code, dead letters, and each worker's /metrics. Plain terminal output: usable over SSH."""
    from rich.console import Console

    from shared.cli.top import WorkerEndpoint, run

    cfg = settings("database_url")
    state = stack.load_state(SESSION.stack_home) if SESSION.stack_home is not None else None
    workers = [
        WorkerEndpoint(
            f"{w.service}-{w.replica}",
            f"http://{cfg.http_host}:{w.http_port}/metrics" if w.http_port else None,
        )
        for w in (state.workers if state is not None else [])
    ]
    # Not on a terminal (a pipe, a log, a test): wide enough that no column is cut.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a live view ends
        asyncio.run(
            run(
                cfg,
                workers,
                console=console,
                interval=interval,
                once=once,
                window_seconds=window,
                failures_window_seconds=failures_window,
                limit=limit,
            )
        )


# ------------------------------------------------------------------------------------------------ the backend


@app.command()
def ingest(
    path: Annotated[Path | None, typer.Argument(help="A recording, photo, PDF or text file.")] = None,
    user: UserOpt = ...,  # type: ignore[assignment]
    class_: ClassOpt = ...,  # type: ignore[assignment]
    note: Annotated[str | None, typer.Option("--note", help="Ingest this text as a note.")] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="What the source is (default: from the file name).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Default: the file name.")] = None,
    create_owner: Annotated[
        bool, typer.Option("--create-owner", help="Create the user and class if missing.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Block until indexed or failed.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Play the backend: store the file, publish its upload event and (with --wait) report the outcome."""
    from shared.cli.backend import ingest_source

    if (path is None) == (note is None):
        raise typer.BadParameter("give a PATH or --note TEXT (one of them)")
    if path is not None and not path.is_file():
        raise typer.BadParameter(f"no file at {path}")
    chosen = kind or (
        "note" if note is not None else KIND_OF_SUFFIX.get(path.suffix.lower()) if path else None
    )
    if chosen is None:
        raise typer.BadParameter(
            f"cannot tell the kind from the file name: pass --kind ({' | '.join(get_args(Kind))})"
        )
    cfg = settings("database_url", "kafka_bootstrap_servers")
    with _stage_bars(wait and not as_json) as bars:
        result = asyncio.run(
            ingest_source(
                cfg,
                path=path,
                note=note,
                kind=chosen,
                user_id=user,
                class_id=class_,
                title=title,
                create_owner=create_owner,
                wait=wait,
                wait_seconds=timeout,
                on_progress=bars.update if bars else None,
            )
        )
    _report_outcome(result, as_json=as_json, waited=wait)


@app.command()
def watch(
    source_id: Annotated[
        uuid.UUID, typer.Argument(help="The source to follow (as `lmgpa ingest` printed it).")
    ],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to finish.")] = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Follow one source until it is indexed or failed: on a terminal, a progress bar per stage (pages,
    seconds of audio, chunks); otherwise (or with --json) only the outcome, as `ingest --wait` reports it."""
    from shared.cli.backend import watch_source

    cfg = settings("database_url")
    with _stage_bars(not as_json) as bars:
        result = asyncio.run(
            watch_source(cfg, source_id, wait_seconds=timeout, on_progress=bars.update if bars else None)
        )
    _report_outcome(result, as_json=as_json, waited=True)


@contextlib.contextmanager
def _stage_bars(wanted: bool) -> Iterator[StageBars | None]:
    """Progress bars per stage on a terminal; None (today's quiet wait) when not wanted or not a TTY."""
    if not wanted or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console

    from shared.cli.progress import StageBars

    with StageBars(Console()) as bars:
        yield bars


def _report_outcome(result: dict[str, Any], *, as_json: bool, waited: bool) -> None:
    """The one line (or the JSON) `ingest` and `watch` end with, and their exit code."""
    if as_json:
        _emit(result)
    else:
        line = f"{result['kind']} {result['source_id']}: {result['status']}"
        if result.get("error_code"):
            line += f" ({result['error_code']}: {result['error_message']})"
        if result.get("chunk_count") is not None:
            line += f", {_count(result['chunk_count'], 'chunk')}"
        typer.echo(line)
    if waited and result["status"] not in ("completed",):
        raise typer.Exit(1 if result["status"] == "failed" else 2)


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="JSON or JSON Lines files of events.")],
    topic: Annotated[
        str | None, typer.Option(help="Publish to this topic (default: from each event's type).")
    ] = None,
) -> None:
    """Publish event fixtures as they are (invalid ones too: that is how rejections are tested)."""
    from shared.cli.backend import load_fixtures, publish_raw

    events = [item for f in files for item in load_fixtures(f, topic=topic)]
    asyncio.run(publish_raw(settings("kafka_bootstrap_servers"), events))
    typer.echo(f"published {len(events)} event(s)")


@app.command()
def status(
    source_id: Annotated[
        uuid.UUID | None, typer.Argument(help="One source (default: the most recent).")
    ] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user")] = None,
    limit: Annotated[int, typer.Option()] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Each source with its stages: waiting, working (with progress) or done, and why it failed."""
    from shared.cli.backend import fetch_status, render_status

    report = asyncio.run(
        fetch_status(settings("database_url"), source_id=source_id, user_id=user, limit=limit)
    )
    if source_id is not None and not report["sources"] and not report["rejections"]:
        from shared.cli.errors import CliError

        raise CliError(
            f"source {source_id} not found",
            "`lmgpa status` lists the most recent sources (`--user U`: one student's)",
        )
    if as_json:
        _emit(report)
    else:
        typer.echo(render_status(report))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: UserOpt = ...,  # type: ignore[assignment]
    class_: ClassOpt = ...,  # type: ignore[assignment]
    content_type: Annotated[
        str | None, typer.Option("--type", help="transcripts | photos | textbooks | notes")
    ] = None,
    limit: Annotated[int, typer.Option()] = 5,
    store: Annotated[
        str, typer.Option(help="qdrant (the RAG store) | chroma (the debugging store, ranked exactly).")
    ] = "qdrant",
    mode: Annotated[
        str | None,
        typer.Option(
            help="Qdrant's ranking: hybrid (meaning and exact words, fused) | dense (meaning) | sparse (BM25: "
            "exact words); default LMGPA_SEARCH_MODE."
        ),
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared", help="Also the sources classmates share with the student (accepted connections)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The best matches in one student's class, with scores and metadata; never another student's content
    (with --shared: also what classmates share with them, marked with who shares it)."""
    from shared.cli.search import SearchApiUnavailable, search_via_api

    cfg = settings()
    chosen, via = store, "embedded here"
    hits: list[dict[str, Any]] | None = None
    if store == "qdrant" and cfg.search_url:
        try:
            hits = search_via_api(
                cfg,
                query,
                user_id=user,
                class_id=class_,
                content_type=content_type,
                limit=limit,
                mode=mode,
                include_shared=shared,
            )
            via = "search API"
        except SearchApiUnavailable as error:
            typer.echo(f"search API unavailable ({error}); embedding the query here instead", err=True)
    if hits is None:
        from shared.cli.backend import search_chunks

        hits = asyncio.run(
            search_chunks(
                cfg,
                query,
                user_id=user,
                class_id=class_,
                content_type=content_type,
                limit=limit,
                store=chosen,
                mode=mode,
                include_shared=shared,
            )
        )
    if as_json:
        _emit([{**h, "store": chosen, "via": via} for h in hits])
        return
    typer.echo(f"{len(hits)} match(es) from {chosen} ({via}) for {query!r}")
    for rank, hit in enumerate(hits, start=1):
        meta = hit["metadata"]
        where = ""
        if meta.get("page_start"):
            where = f" p.{meta['page_start']}" + (
                f"-{meta['page_end']}" if meta.get("page_end") != meta["page_start"] else ""
            )
        if meta.get("start_seconds") is not None:
            where = (
                f" {_clock(meta['start_seconds'])}-{_clock(meta.get('end_seconds') or meta['start_seconds'])}"
            )
        kind = hit.get("score_kind", "cosine")
        by = f"  shared by {hit['shared_by']}" if hit.get("shared_by") else ""
        typer.echo(
            f"{rank}. {hit['score']:.3f} {kind} [{meta.get('content_type')}] {meta.get('title')!r} #{meta.get('chunk_index')}{where}  ({chosen}){by}"
        )
        excerpt = " ".join(hit["text"].split())
        typer.echo(f"   {excerpt[:160]}{'…' if len(excerpt) > 160 else ''}")


@app.command()
def delete(
    user: UserOpt = ...,  # type: ignore[assignment]
    class_: Annotated[
        uuid.UUID | None, typer.Option("--class", help="Delete this class (or a source in it).")
    ] = None,
    source: Annotated[uuid.UUID | None, typer.Option("--source", help="Delete one source.")] = None,
) -> None:
    """Publish a delete, as the backend does: every vector of the source, class or user leaves both stores."""
    from shared.cli.backend import publish_backend_event
    from shared.events.models import SourceDeleted

    if source is not None and class_ is None:
        raise typer.BadParameter("--source needs its --class")
    event = asyncio.run(
        publish_backend_event(
            settings("kafka_bootstrap_servers"),
            SourceDeleted,
            user_id=user,
            class_id=class_,
            source_id=source,
        )
    )
    typer.echo(f"published {event.scope} delete {event.event_id}")


@app.command()
def reprocess(
    source: Annotated[uuid.UUID, typer.Argument(help="The source to run again.")],
    kind: Annotated[Kind, typer.Option(help="What the source is.")],
    user: UserOpt = ...,  # type: ignore[assignment]
    class_: ClassOpt = ...,  # type: ignore[assignment]
    from_stage: Annotated[
        Literal["upload", "embedding"],
        typer.Option("--from", help="upload (everything) or embedding (stored text)."),
    ] = "upload",
) -> None:
    """Run a finished source again; its vectors are replaced in one step once the new run is complete."""
    from shared.cli.backend import publish_backend_event
    from shared.events.models import SourceReprocessRequested

    event = asyncio.run(
        publish_backend_event(
            settings("kafka_bootstrap_servers"),
            SourceReprocessRequested,
            source_id=source,
            kind=kind,
            user_id=user,
            class_id=class_,
            from_stage=from_stage,
        )
    )
    typer.echo(f"published reprocess {event.event_id} of {kind} {source} from {from_stage}")


@app.command("mcp")
def mcp_server(
    user: UserOpt = ...,  # type: ignore[assignment]
) -> None:
    """Serve the MCP debugging and diagnosis tools on stdin/stdout, bound to one student's data only."""
    from shared.mcp.server import serve_stdio

    asyncio.run(serve_stdio(settings("chroma_url", "database_url", "qdrant_url"), user_id=user))


@dlq.command("list")
def dlq_list(as_json: JsonOpt = False) -> None:
    """Every dead letter: where it came from, why it was parked, how often it was tried."""
    from shared.cli.backend import read_dead_letters

    letters = asyncio.run(read_dead_letters(settings("kafka_bootstrap_servers")))
    if as_json:
        _emit([letter.model_dump(exclude={"original_value_b64"}) for letter in letters])
        return
    typer.echo(f"{len(letters)} dead letter(s)")
    for d in letters:
        typer.echo(
            f"{d.dead_letter_id}  {d.occurred_at:%Y-%m-%d %H:%M:%S}  {d.consumer:<13} {d.error_code:<18} "
            f"{d.original_topic}[{d.original_partition}]@{d.original_offset} attempts {d.attempts}: {d.reason[:120]}"
        )


@dlq.command("replay")
def dlq_replay(
    ids: Annotated[
        list[uuid.UUID] | None, typer.Option("--id", help="Replay only these dead letters.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Publish dead letters' original messages to their original topics again (after a fix)."""
    from shared.cli.backend import read_dead_letters, replay_dead_letters

    if not ids and not all_:
        raise typer.BadParameter("name dead letters with --id, or pass --all")
    cfg = settings("kafka_bootstrap_servers")
    letters = asyncio.run(read_dead_letters(cfg))
    chosen = letters if all_ else [d for d in letters if d.dead_letter_id in set(ids or ())]
    missing = set(ids or ()) - {d.dead_letter_id for d in chosen}
    if missing:
        typer.echo(f"no such dead letter: {', '.join(map(str, missing))}", err=True)
        raise typer.Exit(1)
    typer.echo(f"replayed {asyncio.run(replay_dead_letters(cfg, chosen))} message(s)")


def _count(n: int, noun: str) -> str:
    """'1 chunk', '2 chunks'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{secs:02d}"


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lmgpa`` and ``python -m shared.cli.main``: every error ends as one or two lines with a
    hint and a non-zero exit code; a traceback only with ``--debug`` (or LMGPA_DEBUG=1)."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click

    global SESSION
    SESSION = Session()  # a fresh run (tests call main more than once in a process)
    try:
        code = app(args=args, prog_name="lmgpa", standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()
        code = error.exit_code
    except UsageError as error:
        command = error.ctx.command_path if error.ctx else "lmgpa"
        typer.echo(f"error: {command}: {error.format_message().replace('Value error, ', '')}", err=True)
        typer.echo(f"hint: `{command} --help` lists the options and their values", err=True)
        code = error.exit_code
    except ClickException as error:
        typer.echo(f"error: {error.format_message()}", err=True)
        code = error.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 1
    except (Exception, KeyboardInterrupt) as error:
        from shared.cli.errors import explain

        if SESSION.debug or SESSION.command in LONG_RUNNING:  # a service's log keeps the whole story
            import traceback

            traceback.print_exception(error)
        failure = explain(
            error,
            settings=SESSION.settings,
            stack_home=SESSION.stack_home,
            stack_variables=SESSION.stack_variables,
            command=SESSION.command,
        )
        for line in failure.lines():
            typer.echo(line, err=True)
        code = failure.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
