"""Whether a note is text: one check for every note, from the CLI or in an upload event, and how a note file's
bytes become text."""

from __future__ import annotations

import codecs

from shared.errors import PermanentError

NOT_TEXT = "not_text"
MAX_BAD_SHARE = 0.01
"""Share of a note's characters that may be control characters, undecodable bytes (U+FFFD) or lone surrogates;
real text has next to none, while a ZIP (a DOCX), an image or random bytes have far more. A NUL is never text
(as for git and grep: the sign of a binary file, such as a ZIP's headers around uncompressed XML)."""

_BOMS = (
    # UTF-32 first: its little-endian mark begins with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BAD = dict.fromkeys(
    [
        *(c for c in range(32) if chr(c) not in "\t\n\r\f\v"),  # tabs, newlines and page breaks are text
        *range(0x7F, 0xA0),  # DEL and the C1 controls (cp1252 bytes read as Latin-1)
        *range(0xD800, 0xE000),  # lone surrogates (undecodable bytes of a command line)
        0xFFFD,  # what the decoder put in place of bytes that are not UTF-8
    ]
)
_LOOKS_LIKE = (
    ("PK\x03\x04", "a ZIP archive: a DOCX, ODT or EPUB?"),
    ("%PDF-", "a PDF: ingest it as a textbook"),
    ("\ufffdPNG", "a PNG image: ingest it as a photo"),
    ("GIF8", "a GIF image"),
)


def decode_note(data: bytes) -> str:
    """A note file's text: UTF-8, or the encoding its byte-order mark names (UTF-8, UTF-16, UTF-32), without the
    mark; bytes that do not decode become U+FFFD, for `not_text_reason` to count."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    return data.decode("utf-8", errors="replace")


def not_text_reason(text: str) -> str | None:
    """Why this is not a note's text (too many control or undecodable characters), or None if it is text."""
    bad = len(text) - len(text.translate(_BAD))
    if "\x00" not in text and bad <= max(1, MAX_BAD_SHARE * len(text)):
        return None
    looks = next((f" (it looks like {what})" for magic, what in _LOOKS_LIKE if text.startswith(magic)), "")
    return (
        f"the note is not text: {bad:,} of its {len(text):,} characters ({bad / len(text):.1%}) are control "
        f"characters{', NUL among them,' if chr(0) in text else ''} or bytes that are not UTF-8{looks}; upload "
        "a document or image as its own kind, or save it as plain text"
    )


def require_text(text: str) -> None:
    """Raise PermanentError('not_text') unless the note is text."""
    reason = not_text_reason(text)
    if reason is not None:
        raise PermanentError(NOT_TEXT, reason)
