"""Benchmark of OCR with and without preprocessing: `python -m shared.bench.ocr` (from the repository root).

Every generated photo class of `tests.media.photos` (rendered class notes, degraded like phone photos),
a 12-megapixel phone-sized photo, and the real scan tests/data/images/tesseract_phototest.tif are read
twice: as loaded, and through `preprocess`.  Character accuracy is 1 - CER against the reference text;
seconds are wall time per image for the whole `ocr_image` call (Tesseract single-threaded); CPU seconds
(this process plus the Tesseract children) are also shown because they hardly move when other jobs share
the machine.  Figures only: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from PIL import Image

from shared.bench import sample_file
from shared.media.images import load_image, preprocess
from shared.media.ocr import OcrResult, character_accuracy, ocr_image


@dataclass(frozen=True)
class Row:
    """Figures for one image, read without and with preprocessing."""

    name: str
    size: tuple[int, int]
    raw_accuracy: float
    pre_accuracy: float
    raw_confidence: float
    pre_confidence: float
    raw_seconds: float
    pre_seconds: float
    raw_cpu: float
    pre_cpu: float
    prep_cpu: float


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the Tesseract runs)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _timed(image: Image.Image, *, preprocess: bool, repeat: int) -> tuple[OcrResult, float, float]:
    """The result, median wall seconds and median CPU seconds of ocr_image."""
    wall: list[float] = []
    cpu: list[float] = []
    result: OcrResult | None = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), _cpu()
        result = ocr_image(image, preprocess=preprocess)
        wall.append(time.perf_counter() - start)
        cpu.append(_cpu() - start_cpu)
    assert result is not None
    return result, statistics.median(wall), statistics.median(cpu)


def measure(name: str, image: Image.Image, reference: str, *, repeat: int = 1) -> Row:
    """OCR one image both ways and score it against its reference text."""
    raw, raw_seconds, raw_cpu = _timed(image, preprocess=False, repeat=repeat)
    pre, pre_seconds, pre_cpu = _timed(image, preprocess=True, repeat=repeat)
    prep_cpu: list[float] = []
    for _ in range(repeat):
        start_cpu = _cpu()
        preprocess(image)
        prep_cpu.append(_cpu() - start_cpu)
    return Row(
        name=name,
        size=image.size,
        raw_accuracy=character_accuracy(reference, raw.text),
        pre_accuracy=character_accuracy(reference, pre.text),
        raw_confidence=raw.mean_confidence,
        pre_confidence=pre.mean_confidence,
        raw_seconds=raw_seconds,
        pre_seconds=pre_seconds,
        raw_cpu=raw_cpu,
        pre_cpu=pre_cpu,
        prep_cpu=statistics.median(prep_cpu),
    )


def samples(*, full_size: bool) -> Iterator[tuple[str, Image.Image, str]]:
    """(name, image, reference text) of every generated class, the 12 Mpx photo and the real scan."""
    from tests.media.photos import full_size_photo, note_photos

    for photo in note_photos():
        yield photo.name, photo.image, photo.text
    if full_size:
        big = full_size_photo()
        yield big.name, big.image, big.text
    gold = sample_file("images", "tesseract_phototest.gold.txt").read_text(encoding="utf-8")
    yield "real_scan_tif", load_image(sample_file("images", "tesseract_phototest.tif")), gold


def report(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width table with a mean line."""
    columns: tuple[tuple[str, int, int, Callable[[Row], float]], ...] = (
        ("acc raw", 8, 3, lambda r: r.raw_accuracy),
        ("acc pre", 8, 3, lambda r: r.pre_accuracy),
        ("conf raw", 9, 1, lambda r: r.raw_confidence),
        ("conf pre", 9, 1, lambda r: r.pre_confidence),
        ("wall raw", 9, 2, lambda r: r.raw_seconds),
        ("wall pre", 9, 2, lambda r: r.pre_seconds),
        ("cpu raw", 8, 2, lambda r: r.raw_cpu),
        ("cpu pre", 8, 2, lambda r: r.pre_cpu),
        ("cpu prep", 9, 2, lambda r: r.prep_cpu),
    )
    header = f"{'image':<16} {'size':>11}" + "".join(f" {title:>{width}}" for title, width, _, _ in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        size = f"{row.size[0]}x{row.size[1]}"
        cells = "".join(f" {value(row):>{width}.{digits}f}" for _, width, digits, value in columns)
        lines.append(f"{row.name:<16} {size:>11}{cells}")
    lines.append("-" * len(header))
    means = "".join(
        f" {statistics.mean(value(row) for row in rows):>{width}.{digits}f}"
        for _, width, digits, value in columns
    )
    lines.append(f"{'mean':<16} {'':>11}{means}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="runs per image; the median time is shown")
    parser.add_argument("--no-full-size", action="store_true", help="skip the 12-megapixel photo")
    args = parser.parse_args(argv)
    rows = [
        measure(name, image, text, repeat=args.repeat)
        for name, image, text in samples(full_size=not args.no_full_size)
    ]
    print(report(rows))
    print(
        "acc = 1 - CER (NFKC, whitespace collapsed); conf = mean Tesseract word confidence;\n"
        "wall = seconds per image for ocr_image without (raw) / with (pre) preprocessing, OMP_THREAD_LIMIT=1;\n"
        "cpu = CPU seconds of Python plus the Tesseract processes (steady under load, unlike wall);\n"
        "cpu prep = preprocess alone, its Tesseract orientation (OSD) run included."
    )


if __name__ == "__main__":
    main()
