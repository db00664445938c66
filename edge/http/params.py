"""Query parameters shared by the read routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.errors import BadRequest


def int_param(params: Mapping[str, Any], key: str, default: Any, low: int, high: int) -> Any:
    """An integer in [low, high], or `default` when absent; anything else is a 400 naming the key."""
    text = params.get(key)
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got {str(text)[:40]!r}", field=key) from None
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low} and {high}", field=key)
    return value
