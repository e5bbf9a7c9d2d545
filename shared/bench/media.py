"""Transcription and OCR through the real pipeline beside their bare engines: `python -m shared.bench.media`
(make bench-media).

It starts an embedded stack of its own (every worker, in a temporary folder; reuse of identical uploads off) and
stops its embedding and indexing workers, so a stage runs alone on the machine. Then, one after the other:
- transcription: a generated lecture of several minutes (espeak-ng, tests.media.speech, encoded to m4a/AAC as a
  phone records it) uploaded as a recording (kind audio), as the backend would; timed until its transcription
  stage has finished;
- OCR: photos of class notes (tests.media.photos: every degraded phone-photo class as a JPEG, the 12-megapixel
  photo) and a real scan (tests/data/images/tesseract_phototest.tif) uploaded as photos (kind photo); timed
  until every one's ocr stage has finished.
For each stage: its worker's busy seconds (the sum of its handling times, from its JSON log), the worker
process's CPU seconds in that window (its threads, and its children that ended: Tesseract), and the wall time
from publishing to the last stage finished (the upload worker's hand-over included).

After the stack is stopped, the bare engines on the same input, nothing else of the bench running beside them:
- faster-whisper alone: the engine built by the same factory as the worker's (shared.media.speech.make_engine:
  the same model, int8, beam 5, Silero VAD, threads), fed the same file decoded by faster-whisper's own
  `decode_audio`, timed from decoding to the last segment (loading the model is not counted, nor is it in the
  worker's figures). What the worker does beyond it: it probes the file and plans its pieces (PyAV decodes
  short windows to find quiet cuts and decides on speaker channels), decodes each piece with its own PyAV code
  (seek, pre-roll, resampling), transcribes pieces of at most `audio_piece_seconds` (600 s) one by one, and
  stores every piece's segments and the transcript in PostgreSQL. Its samples are faster-whisper's, bit for bit
  (both resample to 16 bits), so on a mono file both transcripts should be the same: a WER gap between them
  means the inputs differ.
- Tesseract alone: `pytesseract.image_to_data` on each image file (Tesseract decodes it itself), the same
  language (eng) and Tesseract's default page segmentation and engine modes as the worker, single-threaded
  (OMP_THREAD_LIMIT=1, as shared.media.images gives the worker's Tesseract). What the worker does beyond it:
  decodes the file with Pillow (EXIF orientation, limits), analyses the layout (light-on-dark, quarter turn,
  skew, line pitch), shrinks big text to a 64-pixel line pitch, denoises, flattens the lighting, stretches the
  contrast, straightens, writes a PNM for Tesseract, and only when that reading is unconvincing (mean
  confidence under 60%) runs Tesseract's orientation detection and reads the page turned as it says, or turned
  half round; then stores the text.
The ratios engine/stage of busy, CPU and wall time (issue 10 asks for at least 0.9; above 1: the stage is
faster than its engine alone, which preprocessing that shrinks a photo can make it). Beside them, the accuracy
of both on the same input (word error rate of the transcripts, character accuracy of the photos' text, against
the texts the media were made from), so a faster figure is not bought with a worse result, and per photo its
handling time beside Tesseract's. Every window prints the CPU seconds processes outside the bench and its stack
used meanwhile (the machine's other users): a figure measured beside a large one is unfair; run it again.
All of it runs in rounds (--rounds, default 3): a fresh stack and the stages, then the engines with that stack
gone, again and again, so that a stage and its engine always run minutes apart at most. A shared machine's speed
drifts (single rounds of the same code gave OCR 0.83x and 0.92x, transcription 0.87x and 1.05x): the tables show
each stage's median round by its busy ratio, and every round's ratios are printed beside it.
Writes JSON (default var/bench/media.json). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from shared.bench import NO_REUSE, own_stack, write_json
from shared.bench.corpus import (
    HELD_BACK,
    CpuMark,
    alone_comparison,
    children_cpu_seconds,
    cpu_mark,
    handling_figures,
    handling_timeline,
    log_offsets,
    other_cpu,
    own_cpu_seconds,
    process_cpu_seconds,
    publish_corpus,
    ratio_text,
    stop_service,
    table_lines,
    wait_stage,
    worker_entries,
)
from shared.devstack import stack
from shared.events.models import SourceKind
from shared.settings import Settings

DEFAULT_JSON = Path("var/bench/media.json")
DEFAULT_AUDIO_SECONDS = 480.0  # espeak-ng speaks faster than the estimate: about 7 minutes
PHOTO_LANGUAGE = "eng"  # the worker's (shared.media.ocr.ocr_image's default)
LOG_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Medium:
    """One input file and the text it was made from (None: no reference)."""

    name: str
    path: Path
    reference: str | None


@dataclass(frozen=True)
class Stage:
    """How a stage is fed and named: the upload kind, its ingest_stages name and its worker service."""

    kind: SourceKind
    stage: str
    service: str


TRANSCRIPTION = Stage(kind="audio", stage="transcription", service="transcription")
OCR = Stage(kind="photo", stage="ocr", service="ocr")


def make_lecture_file(folder: Path, seconds: float) -> Medium:
    """A generated multi-topic lecture of about `seconds` (espeak-ng), encoded as m4a (AAC) like a phone's."""
    try:
        from tests.media.speech import encode, make_lecture
    except ModuleNotFoundError as exc:
        raise SystemExit("run the benchmark from the root of a checkout (make bench-media)") from exc
    wav = folder / "lecture.wav"
    reference = make_lecture(wav, seconds=seconds)
    path = encode(wav, folder / "lecture.m4a", "m4a")
    wav.unlink()
    return Medium("lecture.m4a", path, reference)


def make_photo_files(folder: Path) -> list[Medium]:
    """Every generated phone-photo class and the 12-megapixel photo as JPEGs, and the real scan (TIFF)."""
    from shared.bench import sample_file

    try:
        from tests.media.photos import full_size_photo, note_photos, save_image
    except ModuleNotFoundError as exc:
        raise SystemExit("run the benchmark from the root of a checkout (make bench-media)") from exc
    photos = [*note_photos(), full_size_photo()]
    media = [Medium(f"{p.name}.jpg", save_image(p.image, folder / f"{p.name}.jpg"), p.text) for p in photos]
    scan = sample_file("images", "tesseract_phototest.tif")
    copy = folder / scan.name
    shutil.copyfile(scan, copy)
    gold = scan.with_name("tesseract_phototest.gold.txt")
    media.append(Medium(scan.name, copy, gold.read_text() if gold.exists() else None))
    return media


def audio_seconds(path: Path) -> float:
    """A recording's length (the worker's own probe)."""
    from shared.media.audio import probe_audio

    return probe_audio(path).duration_seconds


def image_size(path: Path) -> tuple[int, int]:
    """An image file's width and height in pixels."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


async def await_log_lines(
    logs: Path, since: dict[str, int], service: str, finished_at: datetime, within: float
) -> list[dict[str, Any]]:
    """A worker's handled lines of a phase, once the line of its last handling is written (each is logged after
    the handling's effects, so after the stage's finish in PostgreSQL)."""
    deadline = time.monotonic() + within
    while True:
        entries = worker_entries(logs, since).get(service, [])
        if any(datetime.fromisoformat(str(e["timestamp"])) >= finished_at for e in entries):
            return entries
        if time.monotonic() > deadline:
            return entries  # what was logged: the busy figure may then miss the last handling
        await asyncio.sleep(0.05)


async def stage_texts(pool: asyncpg.Pool, kind: SourceKind, events: list[Any]) -> dict[str, str]:
    """Each source's stored text (shared.db.sources) by its title (the upload's file stem)."""
    from shared.db import sources

    texts = {}
    for event in events:
        row = await sources.get_source(pool, kind=kind, source_id=event.source_id)
        texts[str(event.title)] = (row.text if row is not None else None) or ""
    return texts


async def measure_stage(
    state: stack.StackState,
    pool: asyncpg.Pool,
    media: list[Medium],
    stage: Stage,
    deadline: float,
) -> dict[str, Any]:
    """Upload the media at once as the stage's kind and wait until every one's stage has finished: its worker's
    busy seconds, process CPU (ended children included) and wall seconds from publishing to the last finish,
    the CPU of processes outside the bench meanwhile, per-source handling times and the stored texts."""
    cfg = state.settings()
    logs = Path(state.home) / "logs"
    since = log_offsets(logs)
    before = cpu_mark(state, waited_children=True)
    own_before = process_cpu_seconds(state).get(
        stage.service, 0.0
    )  # its threads only: to show what ended children add
    events, _, published_at = await publish_corpus(cfg, pool, [m.path for m in media], kind=stage.kind)
    ids = [e.source_id for e in events]
    finished_at = await wait_stage(pool, ids, stage.stage, deadline)
    entries = await await_log_lines(logs, since, stage.service, finished_at, LOG_WAIT_SECONDS)
    after = cpu_mark(state, waited_children=True)
    own_after = process_cpu_seconds(state).get(stage.service, 0.0)
    line = handling_timeline(entries)
    title_of = {str(e.source_id): str(e.title) for e in events}
    per_source: dict[str, float] = {}
    for entry in entries:
        title = title_of.get(str(entry.get("source_id")))
        if title is not None:
            per_source[title] = round(per_source.get(title, 0.0) + float(entry["busy_ms"]) / 1000, 2)
    first_start = line["first_start"] or finished_at
    return {
        **handling_figures(entries),
        "cpu_seconds": round(
            after.processes.get(stage.service, 0.0) - before.processes.get(stage.service, 0.0), 2
        ),
        "cpu_seconds_without_ended_children": round(own_after - own_before, 2),
        "other_cpu_seconds": other_cpu(before, after),
        "wall_seconds": round((finished_at - published_at).total_seconds(), 2),
        "publish_to_first_handling_seconds": round((first_start - published_at).total_seconds(), 2),
        "idle_seconds": line["idle_seconds"],
        "busy_by_source": per_source,
        "texts": await stage_texts(pool, stage.kind, events),
    }


async def run_stages(
    state: stack.StackState, lecture: Medium, photos: list[Medium], wait_seconds: float
) -> dict[str, dict[str, Any]]:
    """With the embedding and indexing workers stopped: the lecture through transcription, then the photos
    through OCR, one stage at a time."""
    pool = await asyncpg.create_pool(state.settings().database_dsn(), min_size=1, max_size=2)
    try:
        for service in HELD_BACK:
            await asyncio.to_thread(stop_service, state, service)
        deadline = time.monotonic() + wait_seconds
        transcription = await measure_stage(state, pool, [lecture], TRANSCRIPTION, deadline)
        ocr = await measure_stage(state, pool, photos, OCR, deadline)
    finally:
        await pool.close()
    return {"transcription": transcription, "ocr": ocr}


def bare_transcription(settings: Settings, path: Path) -> tuple[float, float, str, str]:
    """Wall and CPU seconds faster-whisper alone takes on a file (its own decode_audio, then the engine the
    worker's factory builds), the transcript and the engine's name. Loading the model is not counted."""
    from shared.media.speech import SAMPLE_RATE, make_engine

    if settings.whisper_engine != "faster-whisper":
        raise SystemExit(f"the bare engine here is faster-whisper; the stack runs {settings.whisper_engine}")
    faster_whisper: Any = importlib.import_module(
        "faster_whisper"
    )  # untyped package (see shared.media.speech)
    engine = make_engine(settings.whisper_engine, settings.whisper_model, cache_dir=settings.model_cache_dir)
    cpu, started = own_cpu_seconds(), time.perf_counter()
    audio = faster_whisper.decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    segments = engine.transcribe(audio)
    wall = time.perf_counter() - started
    return wall, own_cpu_seconds() - cpu, " ".join(s.text for s in segments), engine.name


def bare_ocr(media: list[Medium]) -> tuple[float, float, dict[str, float], dict[str, str]]:
    """Wall and CPU seconds (Tesseract's processes included) Tesseract alone takes on every image file, as the
    worker calls it (image_to_data, eng, default modes, OMP_THREAD_LIMIT=1): in all, per file, and its texts."""
    import pytesseract  # type: ignore[import-untyped]

    from shared.media.images import limit_tesseract_threads
    from shared.media.ocr import _result, _tokens

    limit_tesseract_threads()
    pytesseract.get_tesseract_version()  # found once, outside the timing (the worker's first call does too)
    per_file: dict[str, float] = {}
    texts: dict[str, str] = {}
    cpu, started = own_cpu_seconds() + children_cpu_seconds(), time.perf_counter()
    for medium in media:
        began = time.perf_counter()
        tsv: str = pytesseract.image_to_data(
            str(medium.path), lang=PHOTO_LANGUAGE, output_type=pytesseract.Output.STRING
        )
        per_file[medium.path.stem] = round(time.perf_counter() - began, 2)
        texts[medium.path.stem] = tsv
    wall = time.perf_counter() - started
    used = own_cpu_seconds() + children_cpu_seconds() - cpu
    # The TSV read into text the worker's way, after the timing (it is not Tesseract's work).
    return wall, used, per_file, {name: _result(_tokens(tsv)).text for name, tsv in texts.items()}


def mean(values: list[float]) -> float | None:
    """The mean, or None for no values."""
    return round(sum(values) / len(values), 4) if values else None


def accuracy(media: list[Medium], stage: dict[str, str], engine: dict[str, str]) -> dict[str, Any]:
    """Character accuracy of the stage's and the engine's text of each photo against its reference, and means."""
    from shared.media.ocr import character_accuracy

    rows = {
        m.path.stem: {
            "stage": round(character_accuracy(m.reference, stage.get(m.path.stem, "")), 4),
            "engine": round(character_accuracy(m.reference, engine.get(m.path.stem, "")), 4),
        }
        for m in media
        if m.reference is not None
    }
    return {
        "per_photo": rows,
        "stage_mean": mean([r["stage"] for r in rows.values()]),
        "engine_mean": mean([r["engine"] for r in rows.values()]),
    }


def where_engine_reads(
    stage_seconds: dict[str, float],
    engine_seconds: dict[str, float],
    per_photo: dict[str, dict[str, float]],
    *,
    min_accuracy: float = 0.95,
) -> dict[str, Any]:
    """The engine/stage time ratio over the photos Tesseract alone already reads (both accuracies at least
    `min_accuracy`): the stage's overhead where its preprocessing buys nothing, apart from the time it spends
    making the other photos readable."""
    names = [
        name
        for name, acc in per_photo.items()
        if acc["stage"] >= min_accuracy
        and acc["engine"] >= min_accuracy
        and name in stage_seconds
        and name in engine_seconds
    ]
    stage = sum(stage_seconds[name] for name in names)
    engine = sum(engine_seconds[name] for name in names)
    return {
        "photos": names,
        "min_accuracy": min_accuracy,
        "stage_seconds": round(stage, 2),
        "engine_seconds": round(engine, 2),
        "ratio": round(engine / stage, 3) if stage else None,
    }


@dataclass
class Round:
    """One round: the stages through a fresh stack, then the bare engines with that stack gone."""

    stages: dict[str, Any]
    audio_piece_seconds: float
    whisper: tuple[float, float, str, str]
    """faster-whisper alone: wall s, CPU s, transcript, engine name."""
    whisper_others: float
    ocr: tuple[float, float, dict[str, float], dict[str, str]]
    """Tesseract alone: wall s, CPU s, seconds per file, text per file."""
    ocr_others: float


def one_round(home: Path, lecture: Medium, photos: list[Medium], timeout: float) -> Round:
    """Start a stack in `home`, run the stages, stop and purge it, then run the bare engines."""
    # Reuse off in the bench's stack: a later round's identical files would be copied from an earlier source.
    with own_stack(home, env=NO_REUSE, replicas=1, search_api=False) as state:
        cfg = state.settings()
        stages = asyncio.run(run_stages(state, lecture, photos, timeout))
    # The bare engines only now, with the stack gone: nothing else of this bench runs beside them.
    engine_cfg = Settings(whisper_engine=cfg.whisper_engine, whisper_model=cfg.whisper_model)
    marks: list[CpuMark] = [cpu_mark(waited_children=True)]
    whisper = bare_transcription(engine_cfg, lecture.path)
    marks.append(cpu_mark(waited_children=True))
    ocr = bare_ocr(photos)
    marks.append(cpu_mark(waited_children=True))
    return Round(
        stages=stages,
        audio_piece_seconds=cfg.audio_piece_seconds,
        whisper=whisper,
        whisper_others=other_cpu(marks[0], marks[1]),
        ocr=ocr,
        ocr_others=other_cpu(marks[1], marks[2]),
    )


def median_round(ratios: list[float | None]) -> int:
    """The index of the round whose ratio is the median (the lower middle one of an even count)."""
    order = sorted(range(len(ratios)), key=lambda i: ratios[i] or 0.0)
    return order[(len(order) - 1) // 2]


def main() -> None:
    """Run the lecture and the photos through the stack, then the bare engines, round after round; print the
    median round of each stage and every round's ratios, and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--audio-seconds", type=float, default=DEFAULT_AUDIO_SECONDS, help="about how long the lecture lasts"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of stack-then-engines (a shared machine's speed drifts: single rounds of the same code gave "
        "OCR 0.78x to 1.04x)",
    )
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    from tests.media.speech import wer

    with tempfile.TemporaryDirectory(prefix="lmgpa-bench-media-") as tmp:
        folder = Path(tmp)
        lecture = make_lecture_file(folder, args.audio_seconds)
        photos = make_photo_files(folder)
        seconds, lecture_bytes = audio_seconds(lecture.path), lecture.path.stat().st_size
        sizes = {m.path.stem: (*image_size(m.path), m.path.stat().st_size) for m in photos}
        rounds = [
            one_round(folder / f"stack{n}", lecture, photos, args.timeout) for n in range(max(1, args.rounds))
        ]

    compared: list[dict[str, dict[str, Any]]] = []
    for r in rounds:
        whisper_wall, whisper_cpu, _, _ = r.whisper
        ocr_wall, ocr_cpu, _, _ = r.ocr
        compared.append(
            {
                "transcription": alone_comparison(
                    {k: v for k, v in r.stages["transcription"].items() if k != "texts"},
                    engine_seconds=whisper_wall,
                    engine_cpu_seconds=whisper_cpu,
                ),
                "ocr": alone_comparison(
                    {k: v for k, v in r.stages["ocr"].items() if k != "texts"},
                    engine_seconds=ocr_wall,
                    engine_cpu_seconds=ocr_cpu,
                ),
            }
        )
    t_at = median_round([c["transcription"]["ratio_busy"] for c in compared])
    o_at = median_round([c["ocr"]["ratio_busy"] for c in compared])
    t_round, o_round = rounds[t_at], rounds[o_at]
    _, _, engine_transcript, whisper_name = t_round.whisper
    _, _, ocr_per_file, engine_texts = o_round.ocr
    whisper_others, ocr_others = t_round.whisper_others, o_round.ocr_others
    bare_others = round(sum(r.whisper_others + r.ocr_others for r in rounds), 2)
    transcription, ocr = compared[t_at]["transcription"], compared[o_at]["ocr"]
    stage_transcript = t_round.stages["transcription"]["texts"].get(lecture.path.stem, "")
    ocr_texts = o_round.stages["ocr"]["texts"]
    report: dict[str, Any] = {
        "inputs": {
            "audio": {
                "file": lecture.name,
                "seconds": round(seconds, 1),
                "bytes": lecture_bytes,
            },
            "photos": {name: {"width": w, "height": h, "bytes": b} for name, (w, h, b) in sizes.items()},
        },
        "reuse_identical_uploads": False,
        "rounds": compared,
        "transcription": {
            **transcription,
            "round": t_at + 1,
            "engine": whisper_name,
            "engine_other_cpu_seconds": whisper_others,
            "pieces": transcription["messages"] - 1,
            "wer_stage": round(wer(lecture.reference or "", stage_transcript), 4),
            "wer_engine": round(wer(lecture.reference or "", engine_transcript), 4),
            "wer_stage_vs_engine": round(wer(engine_transcript, stage_transcript), 4),
        },
        "ocr": {
            **ocr,
            "round": o_at + 1,
            "engine": "tesseract (pytesseract.image_to_data, eng, OMP_THREAD_LIMIT=1)",
            "engine_other_cpu_seconds": ocr_others,
            "engine_by_photo": ocr_per_file,
            "accuracy": accuracy(photos, ocr_texts, engine_texts),
        },
        "bare_other_cpu_seconds": bare_others,
    }

    pixels = sum(w * h for w, h, _ in sizes.values())
    print(
        f"inputs: a {seconds / 60:.1f}-minute lecture ({lecture.name}, {lecture_bytes / 1e6:.1f} MB, "
        f"espeak-ng); {len(photos)} photos, {pixels / 1e6:.1f} Mpx in all: "
        + ", ".join(f"{name} {w}x{h} {b / 1e3:.0f} kB" for name, (w, h, b) in sizes.items())
    )
    print(
        f"each stage's median round of {len(rounds)} (by its busy ratio): transcription round {t_at + 1}, "
        f"ocr round {o_at + 1}"
    )
    for line in table_lines({"transcription": report["transcription"], "ocr": report["ocr"]}):
        print(line)
    for name in ("transcription", "ocr"):
        print(
            f"{name}, every round (busy / CPU / wall): "
            + "; ".join(
                f"{ratio_text(c[name]['ratio_busy'])} / {ratio_text(c[name]['ratio_cpu'])} / "
                f"{ratio_text(c[name]['ratio_wall'])}"
                for c in compared
            )
        )
    t, o = report["transcription"], report["ocr"]
    o["where_engine_reads"] = where_engine_reads(
        o["busy_by_source"], ocr_per_file, o["accuracy"]["per_photo"]
    )
    print(
        f"transcription: {t['messages']} messages (the plan, then {t['pieces']} piece(s) of at most "
        f"{t_round.audio_piece_seconds:.0f} s); first handling {t['publish_to_first_handling_seconds']:.2f} s after "
        f"publishing; engine {t['engine']} (faster-whisper's decode_audio + transcribe, model load not counted); "
        f"others' CPU beside the engine {whisper_others:.1f} s"
    )
    print(
        f"transcription WER vs the lecture's text: stage {t['wer_stage']:.3f}, engine {t['wer_engine']:.3f} "
        f"(stage vs engine {t['wer_stage_vs_engine']:.3f})"
    )
    print(
        "the worker beyond faster-whisper: probes the file and plans pieces at quiet moments (short PyAV decodes, "
        "speaker channels), decodes each piece with its own PyAV code, stores segments and transcript"
    )
    print(
        f"ocr: {o['messages']} photos; first handling {o['publish_to_first_handling_seconds']:.2f} s after "
        f"publishing; its CPU {o['cpu_seconds']:.1f} s = the worker's own {o['cpu_seconds_without_ended_children']:.1f} "
        f"s + its ended Tesseract processes'; engine {o['engine']}; others' CPU beside the engine {ocr_others:.1f} s"
    )
    acc = o["accuracy"]
    print(f"{'photo':<22} {'stage s':>8} {'engine s':>8} {'stage acc':>9} {'engine acc':>10}")
    for name in sizes:
        row = acc["per_photo"].get(name, {})
        print(
            f"{name:<22} {o['busy_by_source'].get(name, float('nan')):>8.2f} {ocr_per_file[name]:>8.2f} "
            f"{row.get('stage', float('nan')):>9.3f} {row.get('engine', float('nan')):>10.3f}"
        )
    print(
        f"ocr character accuracy, mean: stage {acc['stage_mean']:.3f}, Tesseract alone {acc['engine_mean']:.3f}"
    )
    readable = o["where_engine_reads"]
    print(
        f"on the {len(readable['photos'])} photos Tesseract alone reads right too (both at least "
        f"{readable['min_accuracy']:.2f}: {', '.join(readable['photos'])}): stage {readable['stage_seconds']:.2f} s, "
        f"Tesseract {readable['engine_seconds']:.2f} s, ratio {ratio_text(readable['ratio'])}; the rest of the "
        "stage's time goes to photos Tesseract alone gets wrong"
    )
    print(
        "the worker beyond Tesseract: Pillow decode, layout analysis, text shrunk to a 64 px line pitch, denoise, "
        "lighting flattened, contrast, deskew, PNM hand-over; orientation detection and a turned rerun only "
        "when the first reading's confidence is low"
    )
    print(
        f"the bare engines ran after each round's stack stopped; processes outside the bench used {bare_others:.1f} "
        "CPU-s meanwhile"
    )
    write_json(args.json, report)


if __name__ == "__main__":
    main()
