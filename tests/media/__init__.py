"""Generators of realistic test media (speech, photos of notes, PDFs) with their reference texts."""
