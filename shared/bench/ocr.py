"""Benchmark of OCR with and without preprocessing: `python -m shared.bench.ocr` (from the repository root).

Every generated photo class of `tests.media.photos` (rendered class notes, degraded like phone photos),
a 12-megapixel phone-sized photo, and the real scan /work/shared/data/images/tesseract_phototest.tif
(when present) are read twice: as loaded, and through `preprocess`.  Character accuracy is 1 - CER
against the reference text; seconds are wall time per image for the whole `ocr_image` call (Tesseract
single-threaded) and for `preprocess` alone.  Figures only: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shared.media.images import load_image, preprocess
from shared.media.ocr import OcrResult, character_accuracy, ocr_image

REAL_SCAN = Path("/work/shared/data/images/tesseract_phototest.tif")


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
    prep_seconds: float


def _timed(image: Image.Image, *, preprocess: bool, repeat: int) -> tuple[OcrResult, float]:
    seconds: list[float] = []
    result: OcrResult | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = ocr_image(image, preprocess=preprocess)
        seconds.append(time.perf_counter() - start)
    assert result is not None
    return result, statistics.median(seconds)


def measure(name: str, image: Image.Image, reference: str, *, repeat: int = 1) -> Row:
    """OCR one image both ways and score it against its reference text."""
    raw, raw_seconds = _timed(image, preprocess=False, repeat=repeat)
    pre, pre_seconds = _timed(image, preprocess=True, repeat=repeat)
    prep_times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        preprocess(image)
        prep_times.append(time.perf_counter() - start)
    return Row(
        name=name,
        size=image.size,
        raw_accuracy=character_accuracy(reference, raw.text),
        pre_accuracy=character_accuracy(reference, pre.text),
        raw_confidence=raw.mean_confidence,
        pre_confidence=pre.mean_confidence,
        raw_seconds=raw_seconds,
        pre_seconds=pre_seconds,
        prep_seconds=statistics.median(prep_times),
    )


def samples(*, full_size: bool) -> Iterator[tuple[str, Image.Image, str]]:
    """(name, image, reference text) of every generated class, the 12 Mpx photo and the real scan."""
    from tests.media.photos import full_size_photo, note_photos

    for photo in note_photos():
        yield photo.name, photo.image, photo.text
    if full_size:
        big = full_size_photo()
        yield big.name, big.image, big.text
    if REAL_SCAN.exists():
        gold = REAL_SCAN.with_name("tesseract_phototest.gold.txt").read_text(encoding="utf-8")
        yield "real_scan_tif", load_image(REAL_SCAN), gold


def report(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width table with a mean line."""
    header = f"{'image':<16} {'size':>11} {'acc raw':>8} {'acc pre':>8} {'conf raw':>9} {'conf pre':>9} {'s raw':>7} {'s pre':>7} {'s prep':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        size = f"{row.size[0]}x{row.size[1]}"
        lines.append(
            f"{row.name:<16} {size:>11} {row.raw_accuracy:>8.3f} {row.pre_accuracy:>8.3f} "
            f"{row.raw_confidence:>9.1f} {row.pre_confidence:>9.1f} {row.raw_seconds:>7.2f} {row.pre_seconds:>7.2f} {row.prep_seconds:>7.2f}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<16} {'':>11} {statistics.mean(r.raw_accuracy for r in rows):>8.3f} "
        f"{statistics.mean(r.pre_accuracy for r in rows):>8.3f} "
        f"{statistics.mean(r.raw_confidence for r in rows):>9.1f} "
        f"{statistics.mean(r.pre_confidence for r in rows):>9.1f} "
        f"{statistics.mean(r.raw_seconds for r in rows):>7.2f} {statistics.mean(r.pre_seconds for r in rows):>7.2f} "
        f"{statistics.mean(r.prep_seconds for r in rows):>7.2f}"
    )
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
        "acc = 1 - CER (NFKC, whitespace collapsed); conf = mean Tesseract word confidence; "
        "s raw / s pre = seconds per image for ocr_image without / with preprocessing (OMP_THREAD_LIMIT=1); "
        "s prep = preprocess alone, orientation detection (one Tesseract OSD run) included."
    )


if __name__ == "__main__":
    main()
