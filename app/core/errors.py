"""Domain errors that carry their HTTP status, rendered in one JSON envelope.

    AppError
    ├── InvalidInput      422  input that passed the schema but not the domain rules
    ├── Unauthenticated   401  no token, an unknown one, or a revoked one
    ├── Forbidden         403  a visible resource the caller's role may not change
    ├── NotFound          404  absent, or not visible to the caller
    ├── Conflict          409  a unique name taken, or a state that forbids the change
    ├── PayloadTooLarge   413
    └── Unavailable       503  an integration the request needs is down

Every error response is `{"error": {"code", "message", "details"}}`; a request never ends in a
500 because of its input.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of the errors that the API renders with their own status."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def envelope(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(AppError):
    status_code = 422
    code = "invalid_input"

    @classmethod
    def for_field(cls, field: str, message: str) -> InvalidInput:
        """An error naming the one field that is wrong."""
        return cls(f"{field}: {message}", [{"field": field, "message": message}])


class Unauthenticated(AppError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class Unavailable(AppError):
    status_code = 503
    code = "unavailable"
