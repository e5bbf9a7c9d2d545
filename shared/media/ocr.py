"""Tesseract OCR of photos and scans: text in lines and paragraphs, with per-word confidence."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import pytesseract  # type: ignore[import-untyped]
from PIL import Image

from shared.errors import PermanentError, TransientError
from shared.media import images

LOW_CONFIDENCE: Final[float] = 60.0


@dataclass(frozen=True)
class OcrWord:
    """One recognised word and Tesseract's confidence in it (0-100)."""

    text: str
    confidence: float


@dataclass(frozen=True)
class OcrLine:
    """One line of text; its confidence is the mean of its words'."""

    text: str
    confidence: float
    words: tuple[OcrWord, ...]


@dataclass(frozen=True)
class OcrResult:
    """A page's text (lines joined by newlines, paragraphs by a blank line) and how sure Tesseract was."""

    text: str
    lines: tuple[OcrLine, ...]
    mean_confidence: float
    low_confidence_words: int


@dataclass(frozen=True)
class _Token:
    paragraph: tuple[int, int, int]
    line: int
    word: OcrWord


def ocr_image(image: Image.Image, *, lang: str = "eng", preprocess: bool = True) -> OcrResult:
    """Read the text of a photo or scan with Tesseract (single-threaded), after preprocessing unless told not to."""
    _check_languages(lang)
    if not preprocess:
        return _recognise(images.as_rgb_or_l(image), lang)  # the modes an uncompressed PNM can hold
    prepared = images.preprocess(image)
    if images.looks_upside_down(prepared):
        # Read first the way the lines' ascenders say is up: an upside-down photo read once, not twice (the
        # half-turned reading below brings a wrong guess back).
        prepared = prepared.rotate(180, expand=True)
    result = _recognise(prepared, lang)
    if result.lines and result.mean_confidence >= LOW_CONFIDENCE:
        # Read as an upright page reads (90-96% mean confidence here; a turned one: 30-45%): orientation
        # detection, a Tesseract run that costs more than the reading itself, has nothing to correct.
        return result
    if result.lines:
        # An unconvincing reading is most often a page the wrong way up (the layout analysis turns a sideways
        # page a quarter, but cannot tell which way round, and the ascender test can be fooled): the half turn
        # is read before orientation detection, which costs more than a reading (upside-down bench photo:
        # 1.42 s with detection first).
        turned = _recognise(prepared.rotate(180, expand=True), lang)
        if turned.lines and turned.mean_confidence >= LOW_CONFIDENCE:
            return turned
        if turned.mean_confidence > result.mean_confidence:
            result = turned
    upright = images.turn_upright(prepared)
    if upright is not prepared:  # detection is confident the page is turned (a quarter the other way round)
        again = _recognise(upright, lang)
        if not result.lines or again.mean_confidence > result.mean_confidence:
            return again
    return result


def _recognise(image: Image.Image, lang: str) -> OcrResult:
    images.limit_tesseract_threads()
    try:
        with images.tesseract_input(image) as path:
            tsv: str = pytesseract.image_to_data(path, lang=lang, output_type=pytesseract.Output.STRING)
    except pytesseract.TesseractError as error:
        if isinstance(error.status, int) and error.status < 0:
            # Tesseract was killed by a signal, not failed by the image: a SIGTERM or Ctrl-C sent to the worker's
            # process group reaches it too. The photo is fine; its delivery is retried or redelivered.
            raise TransientError("ocr_interrupted", f"tesseract killed by signal {-error.status}") from error
        # The same image and languages fail the same way every time: retrying cannot help.
        raise PermanentError("ocr_failed", f"tesseract ({lang}): {error.message}") from error
    return _result(_tokens(tsv))


@lru_cache(maxsize=1)
def _installed_languages() -> frozenset[str]:
    return frozenset(pytesseract.get_languages())


def _check_languages(lang: str) -> None:
    installed = _installed_languages()
    missing = [name for name in lang.split("+") if name not in installed]
    if missing:
        raise PermanentError(
            "unsupported_language",
            f"Tesseract has no {'+'.join(missing)} data (installed: {', '.join(sorted(installed))})",
        )


def _tokens(tsv: str) -> list[_Token]:
    """Words of Tesseract's TSV output (level 5 rows with a real confidence), in reading order."""
    rows = tsv.splitlines()
    if not rows:
        return []
    header = rows[0].split("\t")
    column = {name: index for index, name in enumerate(header)}
    tokens: list[_Token] = []
    for row in rows[1:]:
        cells = row.split("\t")
        if len(cells) < len(header):
            cells += [""] * (len(header) - len(cells))
        text = cells[column["text"]].strip()
        try:
            confidence = float(cells[column["conf"]])
        except ValueError:
            continue
        if confidence < 0 or not text:  # -1: a page, block, paragraph or line row, not a word
            continue
        paragraph = (
            int(cells[column["page_num"]]),
            int(cells[column["block_num"]]),
            int(cells[column["par_num"]]),
        )
        word = OcrWord(text=text, confidence=min(100.0, max(0.0, confidence)))
        tokens.append(_Token(paragraph=paragraph, line=int(cells[column["line_num"]]), word=word))
    return tokens


def _result(tokens: Iterable[_Token]) -> OcrResult:
    paragraphs: dict[tuple[int, int, int], dict[int, list[OcrWord]]] = {}
    for token in tokens:
        paragraphs.setdefault(token.paragraph, {}).setdefault(token.line, []).append(token.word)
    lines: list[OcrLine] = []
    paragraph_texts: list[str] = []
    for paragraph_lines in paragraphs.values():
        texts: list[str] = []
        for words in paragraph_lines.values():
            line = OcrLine(
                text=" ".join(word.text for word in words),
                confidence=_mean(word.confidence for word in words),
                words=tuple(words),
            )
            lines.append(line)
            texts.append(line.text)
        paragraph_texts.append("\n".join(texts))
    all_words = [word for line in lines for word in line.words]
    return OcrResult(
        text="\n\n".join(paragraph_texts),
        lines=tuple(lines),
        mean_confidence=_mean(word.confidence for word in all_words),
        low_confidence_words=sum(1 for word in all_words if word.confidence < LOW_CONFIDENCE),
    )


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def character_accuracy(reference: str, hypothesis: str) -> float:
    """1 - character error rate after Unicode (NFKC) and whitespace normalisation, clipped to [0, 1]."""
    ref = _normalise(reference)
    hyp = _normalise(hypothesis)
    if not ref:
        return 1.0 if not hyp else 0.0
    # jiwer (rapidfuzz underneath) is only needed for measuring, so the worker does not import it.
    import jiwer

    return max(0.0, 1.0 - float(jiwer.cer(ref, hyp)))


def _normalise(text: str) -> str:
    # NFKC folds ligatures (the "fi" glyph) and full-width forms into plain letters.
    return " ".join(unicodedata.normalize("NFKC", text).split())
