"""Generators of realistic test media (speech, photos of notes, PDFs) with their reference texts, and where
the real third-party samples live."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
"""tests/data/: the real samples (audio/, bad/, images/, pdfs/), with origins and licences in its README.md."""
