"""Files that are not text, as a backend might pass them off as a note: a Word document (a ZIP holding
[Content_Types].xml and word/document.xml), a PNG and random bytes; built here, deterministic."""

from __future__ import annotations

import io
import random
import zipfile

from PIL import Image

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>"
)


def docx(*, compression: int = zipfile.ZIP_DEFLATED, paragraphs: int = 40) -> bytes:
    """A minimal Word document: a ZIP with [Content_Types].xml and word/document.xml."""
    body = "".join(
        f"<w:p><w:r><w:t>Paragraph {i}: the citric acid cycle runs in the mitochondrial matrix.</w:t></w:r></w:p>"
        for i in range(paragraphs)
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("word/document.xml", document)
    return buffer.getvalue()


def png() -> bytes:
    """A small noisy PNG image."""
    buffer = io.BytesIO()
    Image.effect_noise((48, 48), 40).save(buffer, "PNG")
    return buffer.getvalue()


def random_bytes(size: int = 4096, *, seed: int = 9) -> bytes:
    """Seeded random bytes."""
    return random.Random(seed).randbytes(size)
