"""A note must be text: how a note file's bytes are decoded, and the one check every note passes."""

from __future__ import annotations

import codecs
import zipfile

import pytest

from shared.errors import PermanentError
from shared.text import NOT_TEXT, decode_note, not_text_reason, require_text
from tests.media.documents import docx, png, random_bytes

NOTE = (
    "# Cellular respiration\n\n"
    "Glycolysis splits glucose into two pyruvate molecules in the cytosol.\tNet yield: 2 ATP, 2 NADH.\r\n"
    "Le cycle de Krebs a lieu dans la matrice mitochondriale; l'électron passe à l'oxygène. 🧬🔬\n"
    "Формула: C6H12O6 + 6 O2 → 6 CO2 + 6 H2O (ΔG ≈ \u22122870 kJ/mol). 日本語のメモも。\f\n"
    "- [ ] review the electron transport chain\n"
)


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        pytest.param(docx(), "ZIP archive", id="docx"),
        # Uncompressed: the XML is readable, but the ZIP's headers around it hold NULs.
        pytest.param(docx(compression=zipfile.ZIP_STORED, paragraphs=2000), "ZIP archive", id="stored_docx"),
        pytest.param(png(), "PNG image", id="png"),
        pytest.param(random_bytes(), None, id="random_bytes"),
        pytest.param("Lecture notes".encode("utf-16-le"), None, id="utf16_without_bom"),
        pytest.param("Ça va? Les élèves étudient l'été à Noël.".encode("latin-1"), None, id="latin1"),
    ],
)
def test_binary_or_foreign_bytes_are_not_text(data: bytes, looks_like: str | None) -> None:
    text = decode_note(data)

    reason = not_text_reason(text)

    assert reason is not None and reason.startswith("the note is not text:")
    if looks_like:
        assert looks_like in reason
    with pytest.raises(PermanentError) as refused:
        require_text(text)
    assert refused.value.code == NOT_TEXT == "not_text"
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(NOTE.encode("utf-8"), id="utf8"),
        pytest.param(codecs.BOM_UTF8 + NOTE.encode("utf-8"), id="utf8_bom"),
        pytest.param(NOTE.encode("utf-16"), id="utf16_native_bom"),
        pytest.param(codecs.BOM_UTF16_LE + NOTE.encode("utf-16-le"), id="utf16_le"),
        pytest.param(codecs.BOM_UTF16_BE + NOTE.encode("utf-16-be"), id="utf16_be"),
        pytest.param(codecs.BOM_UTF32_LE + NOTE.encode("utf-32-le"), id="utf32_le"),
    ],
)
def test_a_note_in_any_marked_encoding_is_decoded_exactly(encoded: bytes) -> None:
    text = decode_note(encoded)

    assert text == NOTE
    assert not_text_reason(text) is None
    require_text(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(NOTE, id="accents_emoji_tabs_newlines"),
        pytest.param("", id="empty"),  # empty is a different failure (empty_text), not this one
        pytest.param("x = 1\n" * 500 + "\x1b[1mbold\x1b[0m\n", id="a_few_escapes_in_a_long_note"),
        pytest.param(NOTE * 20 + "broken byte: \ufffd\n", id="one_replacement_character"),
    ],
)
def test_real_text_is_text(text: str) -> None:
    assert not_text_reason(text) is None


def test_a_nul_is_never_text_and_neither_are_many_controls_or_lone_surrogates() -> None:
    assert not_text_reason(NOTE * 50 + "\x00") is not None
    assert not_text_reason("abc\x01\x02\x03def") is not None
    # What an undecodable command-line argument becomes (surrogateescape).
    assert not_text_reason(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1".decode("utf-8", "surrogateescape")) is not None
