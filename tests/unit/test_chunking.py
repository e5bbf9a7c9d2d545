"""Tests of the token-aware chunker, with the real all-MiniLM-L6-v2 tokenizer and with a fake one."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.chunking import (
    Chunk,
    HfTokenCounter,
    Segment,
    TokenCounter,
    chunk_segments,
    default_model_path,
    normalize_whitespace,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Dense technical prose: about 2.6 word pieces per word with all-MiniLM-L6-v2.
DENSE = (
    "Phosphorylation of the mitogen-activated protein kinases ERK1/2 at Thr202/Tyr204 by MEK1/2 requires "
    "Ras-GTP-dependent recruitment of c-Raf (Raf-1) to the plasma membrane; in HEK293T cells, EGF "
    "(100 ng/mL, 5 min) increased pERK/ERK ratios 4.7-fold (p < 0.001, n = 6), whereas the MEK inhibitor "
    "U0126 (10 uM) abolished the response. Co-immunoprecipitation with anti-FLAG M2 agarose, followed by "
    "SDS-PAGE (4-12% Bis-Tris) and immunoblotting, showed that KSR1 scaffolds B-Raf:MEK1 heterodimers, "
    "consistent with cryo-EM structures (PDB 7JUR, 3.9 A)."
)


@pytest.fixture(scope="module")
def counter() -> HfTokenCounter:
    return HfTokenCounter()


# Loaded once for the property tests, which cannot take function-scoped fixtures.
REAL = HfTokenCounter()


class CharCounter:
    """One token per non-whitespace character: makes the packing logic easy to reason about."""

    def __init__(self, max_tokens: int = 1000) -> None:
        self._max_tokens = max_tokens

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def encode_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


def _flat(text: str) -> str:
    return " ".join(text.split())


def unique_words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def sentences(words: Sequence[str], every: int) -> str:
    out = []
    for i, word in enumerate(words):
        out.append(word + ("." if (i + 1) % every == 0 else ""))
    return " ".join(out)


def assert_no_text_lost(segments: Sequence[Segment], chunks: Sequence[Chunk]) -> None:
    """Every input word appears, in order, in the chunks once overlaps are removed."""
    target = " ".join(word for segment in segments for word in segment.text.split())
    # Positions of `target` covered so far; several are possible when the text repeats itself.
    reach = {0}
    for chunk in chunks:
        piece = _flat(chunk.text)
        assert piece, chunk
        nxt: set[int] = set()
        for p in reach:
            # The chunk starts inside what is covered (overlap), right at its end (a word cut in two), or
            # after the single space that ends a word; and it must add text.
            high = p + 1 if p < len(target) and target[p] == " " else p
            q = target.find(piece, max(0, p - len(piece) + 1))
            while q != -1 and q <= high:
                nxt.add(q + len(piece))
                q = target.find(piece, q + 1)
        assert nxt, f"chunk {chunk.index} {piece[:60]!r} does not continue the text"
        reach = nxt
    assert len(target) in reach or not target


def assert_fits(chunks: Sequence[Chunk], counter: HfTokenCounter, window: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == chunk.text.strip()
        assert counter.count(chunk.text) == chunk.token_count, chunk
        assert chunk.token_count <= window
        assert chunk.token_count <= counter.max_tokens


def overlap_words(a: str, b: str) -> int:
    """Words at the end of `a` that start `b` (texts of unique words only)."""
    wa, wb = a.split(), b.split()
    for k in range(min(len(wa), len(wb)), 0, -1):
        if wa[-k:] == wb[:k]:
            return k
    return 0


# --- the tokenizer port ---------------------------------------------------------------------------------


def test_real_counter_reads_model_limits(counter: HfTokenCounter) -> None:
    assert default_model_path() == HfTokenCounter.default_model_path()
    assert (default_model_path() / "tokenizer.json").is_file()
    assert counter.max_seq_length == 256
    assert counter.num_special_tokens == 2
    assert counter.max_tokens == 254


def test_real_counter_measures_long_text_whole(counter: HfTokenCounter) -> None:
    # tokenizer.json ships with truncation at 128: a long text must still be measured whole.
    text = " ".join(["word"] * 1000)
    assert counter.count(text) == 1000
    assert len(counter.encode_offsets(text)) == 1000
    assert counter.encode_offsets("Hello wörld") == [(0, 5), (6, 11)]


def test_the_problem_is_real(counter: HfTokenCounter) -> None:
    words = (DENSE + " ") * 3
    naive = " ".join(words.split()[:200])
    # The model keeps 254 content pieces: a naive 200-word chunk of this text loses more than half.
    assert counter.count(naive) > counter.max_tokens
    segments = [Segment(words)]
    chunks = chunk_segments(segments, counter)
    assert len(chunks) > 1
    assert_fits(chunks, counter, 200)
    assert_no_text_lost(segments, chunks)


# --- packing with the real tokenizer ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n \u00a0 \u2029"])
def test_empty_input_gives_no_chunk(counter: HfTokenCounter, text: str) -> None:
    assert chunk_segments([], counter) == []
    assert chunk_segments([Segment(text), Segment(text, page=2)], counter) == []


def test_short_text_is_one_chunk_with_normalised_whitespace(counter: HfTokenCounter) -> None:
    segment = Segment("  Hello,\t\tworld!\r\n\r\n\n  Second   paragraph\nline two.  ", page=3)
    [chunk] = chunk_segments([segment], counter)
    assert chunk == Chunk(
        index=0,
        text="Hello, world!\n\nSecond paragraph\nline two.",
        token_count=counter.count(segment.text),
        page_start=3,
        page_end=3,
        start_seconds=None,
        end_seconds=None,
    )


def test_normalize_whitespace_keeps_every_word() -> None:
    text = "a\u00a0b\x1fc \x1cd\r\ne\u2028\u2028f\v\fg  \n \n  h"
    assert normalize_whitespace(text) == "a b c\nd\ne\n\nf\n\ng\n\nh"
    assert normalize_whitespace(text).split() == text.split()


def test_cuts_at_sentence_ends(counter: HfTokenCounter) -> None:
    text = sentences(unique_words(2000), every=12)
    chunks = chunk_segments([Segment(text)], counter, target_tokens=200, overlap_tokens=0)
    assert len(chunks) > 5
    assert_fits(chunks, counter, 200)
    for chunk in chunks[:-1]:
        assert chunk.text.endswith(".")
        # A sentence end is sought only in the last quarter of the window.
        assert chunk.token_count >= 150
    assert_no_text_lost([Segment(text)], chunks)


def test_prefers_a_paragraph_break_to_a_later_sentence_end(counter: HfTokenCounter) -> None:
    first = sentences(unique_words(60, "a"), every=10)  # about 180 pieces
    second = sentences(unique_words(200, "b"), every=10)
    chunks = chunk_segments([Segment(first + "\n\n" + second)], counter, overlap_tokens=0)
    assert chunks[0].text == first


def test_cuts_at_a_word_boundary_without_sentences(counter: HfTokenCounter) -> None:
    words = unique_words(1500)
    chunks = chunk_segments([Segment(" ".join(words))], counter, target_tokens=100, overlap_tokens=0)
    assert_fits(chunks, counter, 100)
    # No overlap: the chunks' words are exactly the input's words.
    assert [w for c in chunks for w in c.text.split()] == words
    assert all(c.token_count > 95 for c in chunks[:-1])


def test_consecutive_chunks_overlap_by_about_overlap_tokens(counter: HfTokenCounter) -> None:
    words = unique_words(3000)
    text = " ".join(words)
    chunks = chunk_segments([Segment(text)], counter, target_tokens=200, overlap_tokens=32)
    assert_fits(chunks, counter, 200)
    for a, b in itertools.pairwise(chunks):
        shared = " ".join(b.text.split()[: overlap_words(a.text, b.text)])
        assert 16 <= counter.count(shared) <= 32
    assert_no_text_lost([Segment(text)], chunks)


def test_overlap_never_exceeds_half_the_window(counter: HfTokenCounter) -> None:
    text = " ".join(unique_words(500))
    chunks = chunk_segments([Segment(text)], counter, target_tokens=40, overlap_tokens=500)
    assert_fits(chunks, counter, 40)
    for a, b in itertools.pairwise(chunks):
        assert counter.count(" ".join(b.text.split()[: overlap_words(a.text, b.text)])) <= 20
    assert_no_text_lost([Segment(text)], chunks)


def test_target_is_capped_by_the_model(counter: HfTokenCounter) -> None:
    text = DENSE * 20
    chunks = chunk_segments([Segment(text)], counter, target_tokens=10_000)
    # The window is the model's 254, not the default target of 200.
    assert max(c.token_count for c in chunks) > 200
    assert_fits(chunks, counter, counter.max_tokens)
    assert_no_text_lost([Segment(text)], chunks)


def test_a_word_longer_than_the_window_is_cut_by_word_pieces(counter: HfTokenCounter) -> None:
    # A URL-like word: punctuation keeps it in many pieces (an alphanumeric run over 100 characters is one
    # [UNK] for BERT and would fit anyway).
    long_word = "https://example.org/" + "/".join(f"part{i}-x{i * 7}" for i in range(400))
    segments = [Segment(f"before it {long_word} after it")]
    chunks = chunk_segments(segments, counter, target_tokens=120, overlap_tokens=20)
    assert len(chunks) > 5
    assert_fits(chunks, counter, 120)
    assert_no_text_lost(segments, chunks)
    # The word's fragments follow each other without a gap or a repeat.
    assert "".join(_flat(c.text) for c in chunks[1:-1]) in long_word


def test_a_short_word_is_not_cut_because_of_the_overlap() -> None:
    # Window 10, overlap 4: repeating "bb" would leave 8 tokens for a 9-character word, so the overlap
    # gives way rather than the word being cut.
    text = "aaaa bb ccccccccc"
    chunks = chunk_segments([Segment(text)], CharCounter(), target_tokens=10, overlap_tokens=4)
    assert [c.text for c in chunks] == ["aaaa bb", "ccccccccc"]
    # With room for it, the overlap is kept.
    chunks = chunk_segments([Segment("aaaa bb cccccccc")], CharCounter(), target_tokens=10, overlap_tokens=4)
    assert [c.text for c in chunks] == ["aaaa bb", "bb cccccccc"]


def test_text_without_spaces_is_cut_between_characters(counter: HfTokenCounter) -> None:
    cjk = "这是一个没有空格的很长的中文句子。" * 60
    chunks = chunk_segments([Segment(cjk)], counter, target_tokens=64)
    assert_fits(chunks, counter, 64)
    assert "".join(c.text for c in chunks) == cjk


def test_characters_the_tokenizer_drops_are_kept(counter: HfTokenCounter) -> None:
    words = []
    for i in range(400):
        words.append(f"w{i}")
        if i % 7 == 0:
            words.append("\x00")
        if i % 11 == 0:
            words.append("\u0301")
    segments = [Segment(" ".join(words)), Segment("\x00 \ufeff", page=None), Segment("\x00", page=4)]
    chunks = chunk_segments(segments, counter, target_tokens=30, overlap_tokens=5)
    assert_fits(chunks, counter, 30)
    assert_no_text_lost(segments, chunks)
    # A page with nothing the tokenizer keeps still gets its (empty-to-the-model) chunk.
    assert chunks[-1].text == "\x00" and chunks[-1].token_count == 0 and chunks[-1].page_start == 4


def test_chunks_never_cross_pages(counter: HfTokenCounter) -> None:
    pages = [
        Segment(sentences(unique_words(n, f"p{p}x"), every=9), page=p) for p, n in enumerate([5, 400, 90])
    ]
    chunks = chunk_segments(pages, counter, target_tokens=100, overlap_tokens=16)
    assert_fits(chunks, counter, 100)
    assert_no_text_lost(pages, chunks)
    for chunk in chunks:
        assert chunk.page_start == chunk.page_end
        assert chunk.page_start is not None
        assert all(w.startswith(f"p{chunk.page_start}x") for w in chunk.text.split())
    assert [c.page_start for c in chunks] == sorted(c.page_start for c in chunks if c.page_start is not None)
    assert chunks[0].text == pages[0].text


def test_segments_of_one_page_are_packed_together(counter: HfTokenCounter) -> None:
    segments = [Segment("First block.", page=1), Segment("Second block.", page=1)]
    [chunk] = chunk_segments(segments, counter)
    assert chunk.text == "First block.\n\nSecond block."
    assert (chunk.page_start, chunk.page_end) == (1, 1)


def test_deterministic(counter: HfTokenCounter) -> None:
    segments = [Segment(DENSE * 10, page=1), Segment(DENSE * 3, page=2)]
    assert chunk_segments(segments, counter) == chunk_segments(segments, counter)


@pytest.mark.parametrize(("target", "overlap"), [(0, 0), (10, -1)])
def test_invalid_arguments(counter: HfTokenCounter, target: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_segments([Segment("x")], counter, target_tokens=target, overlap_tokens=overlap)


def test_a_book_chunks_in_well_under_two_seconds(counter: HfTokenCounter) -> None:
    paragraph = DENSE + "\n\n" + sentences(unique_words(300), every=15) + "\n\n"
    pages = [Segment(paragraph, page=p) for p in range(300)]
    words = sum(len(p.text.split()) for p in pages)
    assert words > 100_000
    started = time.perf_counter()
    chunks = chunk_segments(pages, counter)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{words} words took {elapsed:.2f}s"
    assert max(c.token_count for c in chunks) <= 200


# --- pure packing logic with a fake tokenizer -----------------------------------------------------------


def test_fake_counter_packs_words_into_the_window() -> None:
    text = "aaa bbb ccc ddd eee fff ggg"
    chunks = chunk_segments([Segment(text)], CharCounter(), target_tokens=7, overlap_tokens=0)
    assert [c.text for c in chunks] == ["aaa bbb", "ccc ddd", "eee fff", "ggg"]
    assert [c.token_count for c in chunks] == [6, 6, 6, 3]


def test_fake_counter_overlap_starts_at_a_word() -> None:
    text = "aa bb cc dd ee ff gg hh"
    chunks = chunk_segments([Segment(text)], CharCounter(), target_tokens=8, overlap_tokens=2)
    assert [c.text for c in chunks] == ["aa bb cc dd", "dd ee ff gg", "gg hh"]


def test_fake_counter_max_tokens_caps_the_target() -> None:
    chunks = chunk_segments([Segment("abcdefghij klm")], CharCounter(max_tokens=4), target_tokens=100)
    assert [c.text for c in chunks] == ["abcd", "efgh", "ij", "klm"]


def test_fake_counter_sentence_end_in_the_last_quarter() -> None:
    text = "aaaa bbbb cccc dddd eeee ffff ggg. hhhh iiii jjjj"
    chunks = chunk_segments([Segment(text)], CharCounter(), target_tokens=36, overlap_tokens=0)
    assert chunks[0].text == "aaaa bbbb cccc dddd eeee ffff ggg."


def test_fake_counter_time_spans_of_a_transcript() -> None:
    segments = [
        Segment("aaa bbb", start_seconds=0.0, end_seconds=2.0),
        Segment("ccc ddd", start_seconds=2.0, end_seconds=4.5),
        Segment("eee fff", start_seconds=4.5, end_seconds=7.0),
    ]
    chunks = chunk_segments(segments, CharCounter(), target_tokens=9, overlap_tokens=0)
    # Timed segments flow into each other with a plain space.
    assert [c.text for c in chunks] == ["aaa bbb ccc", "ddd eee fff"]
    assert [(c.start_seconds, c.end_seconds) for c in chunks] == [(0.0, 4.5), (2.0, 7.0)]
    assert all(c.page_start is None and c.page_end is None for c in chunks)


def test_fake_counter_untimed_segments_are_separate_paragraphs() -> None:
    chunks = chunk_segments([Segment("note one."), Segment("note two.")], CharCounter())
    assert [c.text for c in chunks] == ["note one.\n\nnote two."]


# --- properties -------------------------------------------------------------------------------------------

_letters = st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"])
_word = st.one_of(
    st.text(_letters, min_size=1, max_size=12),
    st.sampled_from(["the", "naïve", "café", "x²", "don't", "e.g.", "end.", "U0126", "😀", "中文字"]),
    st.text(st.sampled_from("abcxyz-/.0123"), min_size=20, max_size=160),  # long words
)
_space = st.sampled_from([" ", " ", " ", "\n", "\n\n", "\t", "\u00a0", " \r\n "])


@st.composite
def _text(draw: st.DrawFn, max_words: int = 120) -> str:
    words = draw(st.lists(_word, max_size=max_words))
    spaces = draw(st.lists(_space, min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, spaces, strict=True))


@st.composite
def _segments(draw: st.DrawFn) -> list[Segment]:
    count = draw(st.integers(1, 12))
    paged = draw(st.booleans())
    page = 1
    out = []
    for i in range(count):
        if paged:
            page += draw(st.integers(0, 1))  # several segments can share a page
            out.append(Segment(draw(_text(40)), page=page))
        else:
            out.append(Segment(draw(_text(40)), start_seconds=float(i), end_seconds=float(i) + 1.0))
    return out


_PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY_SETTINGS
@given(text=_text(), target=st.integers(8, 300), overlap=st.integers(0, 64))
def test_property_one_text_fits_and_loses_nothing(text: str, target: int, overlap: int) -> None:
    segments = [Segment(text)]
    chunks = chunk_segments(segments, REAL, target_tokens=target, overlap_tokens=overlap)
    assert_fits(chunks, REAL, min(target, REAL.max_tokens))
    assert_no_text_lost(segments, chunks)
    assert (chunks == []) == (text.split() == [])


@_PROPERTY_SETTINGS
@given(segments=_segments(), target=st.integers(8, 120), overlap=st.integers(0, 40))
def test_property_segments_keep_pages_and_times(segments: list[Segment], target: int, overlap: int) -> None:
    chunks = chunk_segments(segments, REAL, target_tokens=target, overlap_tokens=overlap)
    assert_fits(chunks, REAL, target)
    assert_no_text_lost(segments, chunks)
    pages = {s.page for s in segments if s.text.split()}
    for chunk in chunks:
        assert chunk.page_start == chunk.page_end
        if chunk.page_start is not None:
            page_words = " ".join(w for s in segments if s.page == chunk.page_start for w in s.text.split())
            assert _flat(chunk.text) in page_words
        else:
            assert chunk.start_seconds is not None and chunk.end_seconds is not None
            assert chunk.start_seconds < chunk.end_seconds
    assert {c.page_start for c in chunks} == pages
    assert [c.page_start or 0 for c in chunks] == sorted(c.page_start or 0 for c in chunks)


@settings(max_examples=200, deadline=None)
@given(text=_text(), target=st.integers(1, 40), overlap=st.integers(0, 40))
def test_property_fake_counter_exact_windows(text: str, target: int, overlap: int) -> None:
    fake = CharCounter(max_tokens=1000)
    chunks = chunk_segments([Segment(text)], fake, target_tokens=target, overlap_tokens=overlap)
    assert_no_text_lost([Segment(text)], chunks)
    for chunk in chunks:
        assert chunk.token_count == len(fake.encode_offsets(chunk.text)) <= target
        # Never cut inside a word unless the word alone is longer than the window.
        for word in chunk.text.split()[1:-1]:
            assert word in text.split()
        if len(chunk.text.split()) > 1:
            first, last = chunk.text.split()[0], chunk.text.split()[-1]
            assert first in text.split() or len(max(text.split(), key=len)) > target
            assert last in text.split() or len(max(text.split(), key=len)) > target


def assert_counter_protocol(counter: TokenCounter) -> int:
    return counter.max_tokens


def test_both_counters_satisfy_the_port(counter: HfTokenCounter) -> None:
    assert assert_counter_protocol(counter) == 254
    assert assert_counter_protocol(CharCounter(7)) == 7
