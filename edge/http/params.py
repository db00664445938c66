"""Query parameters shared by the read routes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
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


def instant_param(params: Mapping[str, Any], key: str, default: datetime) -> datetime:
    """A time as ISO 8601 (UTC when it has no offset) or epoch seconds, or `default` when absent."""
    text = params.get(key)
    if not text:
        return default
    value = text.strip()
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        dt = datetime.fromisoformat(value)
        # in UTC, as every time the API returns; an offset can push year 1 or 9999 out of range
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{key} must be ISO 8601 or epoch seconds, got {text[:40]!r}", field=key) from None
