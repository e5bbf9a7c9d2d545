"""split_into_parts: bounded parts, no character lost or repeated, segments cut but never merged."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events.models import TextSegment
from shared.events.parts import MAX_PART_CHARS, split_into_parts

# Words, spaces, line breaks and blank lines, plus some non-ASCII letters.
TEXT = st.lists(st.sampled_from([*"abcdefghij ÄßéΩ漢\n", "\n\n", "  "]), max_size=80).map("".join)


@st.composite
def segments(draw: st.DrawFn) -> list[TextSegment]:
    """Segments whose page is their 1-based position, so every piece can be traced to its segment."""
    texts = draw(st.lists(TEXT, max_size=8))
    out: list[TextSegment] = []
    for i, text in enumerate(texts):
        start = draw(st.none() | st.floats(min_value=0, max_value=7200, allow_nan=False))
        out.append(
            TextSegment(
                text=text,
                page=i + 1,
                start_seconds=start,
                end_seconds=None if start is None else start + draw(st.floats(0, 30, allow_nan=False)),
                confidence=draw(st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(segments(), st.integers(min_value=1, max_value=60))
def test_parts_are_bounded_lossless_and_keep_segment_attributes(
    originals: list[TextSegment], max_chars: int
) -> None:
    parts = split_into_parts(originals, max_chars=max_chars)

    assert parts, "there is always at least one part"
    for part in parts:
        assert sum(len(s.text) for s in part) <= max_chars
    if originals:
        assert all(part for part in parts), "no empty part when there is text"

    pieces = [s for part in parts for s in part]
    assert "".join(s.text for s in pieces) == "".join(s.text for s in originals)

    # Never merged: pieces come in segment order and each holds text of exactly one segment.
    pages = [s.page for s in pieces]
    assert pages == sorted(pages)
    assert set(pages) == {s.page for s in originals}
    for original in originals:
        mine = [s for s in pieces if s.page == original.page]
        assert "".join(s.text for s in mine) == original.text
        for piece in mine:
            assert piece.model_copy(update={"text": original.text}) == original


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT.filter(bool), min_size=1, max_size=6), st.integers(min_value=1, max_value=40))
def test_parts_are_filled_greedily(texts: list[str], max_chars: int) -> None:
    parts = split_into_parts([TextSegment(text=t) for t in texts], max_chars=max_chars)

    # A new part only starts when the next piece would not fit in the previous one.
    for previous, current in itertools.pairwise(parts):
        assert sum(len(s.text) for s in previous) + len(current[0].text) > max_chars


def test_small_text_is_one_part_unchanged() -> None:
    segment = TextSegment(text="Photosynthesis converts light energy into chemical energy.", page=3)
    assert split_into_parts([segment]) == [[segment]]


@pytest.mark.parametrize("separator", ["\n\n", " "])
def test_long_text_is_cut_at_whitespace_and_kept_whole(separator: str) -> None:
    paragraph = (
        "The fundamental theorem of calculus links differentiation and integration: "
        "if F is an antiderivative of f on [a, b], the integral of f from a to b equals F(b) - F(a)."
        + separator
    )
    text = paragraph * (3 * MAX_PART_CHARS // len(paragraph))

    parts = split_into_parts([TextSegment(text=text)])

    assert len(parts) >= 3
    assert all(len(part) == 1 for part in parts)
    assert "".join(part[0].text for part in parts) == text
    for part in parts[:-1]:
        assert len(part[0].text) <= MAX_PART_CHARS
        # Cut after whitespace: no word is split between two parts.
        assert part[0].text[-1].isspace()


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    dna = "ACGT" * 40
    parts = split_into_parts([TextSegment(text=dna, page=2)], max_chars=64)
    assert [len(p[0].text) for p in parts] == [64, 64, 32]
    assert "".join(p[0].text for p in parts) == dna
    assert all(p[0].page == 2 for p in parts)
