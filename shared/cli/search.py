"""`lmgpa search`: ask the search API when the stack runs one (the model stays loaded there), else embed here."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.settings import Settings


class SearchApiUnavailable(RuntimeError):
    """The search API did not answer (not running, or not ready)."""


def search_via_api(
    settings: Settings,
    query: str,
    *,
    user_id: uuid.UUID,
    class_id: uuid.UUID | None,
    content_type: str | None,
    limit: int,
    mode: str | None = None,
    include_shared: bool = False,
) -> list[dict[str, Any]]:
    """POST /v1/search to LMGPA_SEARCH_URL; hits in the shape search_chunks returns."""
    assert settings.search_url
    body = {
        "user_id": str(user_id),
        "class_id": str(class_id) if class_id else None,
        "query": query,
        "content_types": [content_type] if content_type else None,
        "limit": limit,
        "mode": mode,
        "include_shared": include_shared,
    }
    try:
        response = httpx.post(f"{settings.search_url.rstrip('/')}/v1/search", json=body, timeout=30)
    except httpx.TransportError as error:
        raise SearchApiUnavailable(f"{settings.search_url}: {error}") from error
    if response.status_code == 503:
        raise SearchApiUnavailable(f"{settings.search_url}: {response.text[:200]}")
    response.raise_for_status()
    return [
        {
            "score": hit["score"],
            "score_kind": hit["score_kind"],
            "shared_by": hit["shared_by"],
            "document_id": hit["document_id"],
            "source_id": hit["source_id"],
            "content_type": hit["content_type"],
            "text": hit["text"],
            "metadata": hit["metadata"],
        }
        for hit in response.json()["hits"]
    ]
