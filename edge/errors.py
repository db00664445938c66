"""One small exception hierarchy; `edge.http.app` maps it to JSON responses in one place."""

from __future__ import annotations

from typing import Any


class FDEdgeError(Exception):
    """An error a client or operator can act on: it carries its HTTP status and a reason code."""

    status: int = 500
    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(FDEdgeError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class Unauthorized(FDEdgeError):
    status, code = 401, "unauthorized"


class Forbidden(FDEdgeError):
    status, code = 403, "forbidden"


class NotFound(FDEdgeError):
    status, code = 404, "not_found"


class Conflict(FDEdgeError):
    status, code = 409, "conflict"


class Gone(FDEdgeError):
    status, code = 410, "gone"


class PayloadTooLarge(FDEdgeError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(FDEdgeError):
    status, code = 415, "unsupported_media_type"


class InvalidReading(FDEdgeError):
    """A reading that cannot be scored; names the row (0-based) and the field."""

    status, code = 422, "invalid_reading"


class Unavailable(FDEdgeError):
    """Storage or model cannot serve right now (disk full, database locked); the server keeps running."""

    status, code = 503, "unavailable"


class StartupError(Exception):
    """Raised before serving when the model, database or settings are unusable; printed, never a traceback."""


class ModelRejected(FDEdgeError):
    """A model the store will not keep or activate: the reason names the file or check that failed."""

    status, code = 422, "model_rejected"
