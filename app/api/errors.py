"""One place that turns every failure into the JSON error envelope with the right status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import AppError

logger = logging.getLogger(__name__)

# SQLSTATE character_not_in_repertoire: what PostgreSQL answers for a NUL in a text value.
_NUL_IN_TEXT = "22021"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def _response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    # Body fields are named as the client wrote them ("name", "components.workers.memory");
    # query, path and header parameters keep their location ("query.limit").
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return _response(exc.status_code, exc.code, exc.message, exc.details, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        details.append(
            {
                "field": _field(tuple(error.get("loc", ()))),
                "message": message,
                "type": error.get("type"),
            }
        )
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return _response(422, "invalid_input", summary or "invalid input", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # Only the framework raises HTTPException, and its 400 means a body that could not be
        # read (e.g. not UTF-8); malformed JSON is already a 422, so this is invalid input too.
        details = [{"field": "body", "message": str(exc.detail), "type": "body_unreadable"}]
        return _response(422, "invalid_input", f"body: {exc.detail}", details)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; Allow must list them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method that some route serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route_methods
    return sorted(methods)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    # PostgreSQL cannot store NUL in text (SQLSTATE 22021), yet JSON strings, paths and query
    # strings can all carry one; that is the client's input, not our failure.
    if getattr(exc.orig, "sqlstate", None) == _NUL_IN_TEXT:
        message = "text values must not contain the NUL character (\\u0000)"
        return _response(422, "invalid_input", message, [{"message": message, "type": "nul"}])
    raise exc


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return _response(500, "internal_error", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that render every error in the envelope."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the envelope for the given statuses."""
    descriptions = {
        401: "Missing, invalid or revoked token",
        403: "The token's role may not do this",
        404: "Not found, or not visible to this token",
        409: "Conflict",
        413: "Payload over the size limit",
        422: "Invalid input; details name the fields",
        503: "A needed integration is unavailable",
    }
    return {
        s: {"model": ErrorResponse, "description": descriptions.get(s, "Error")} for s in statuses
    }


API_ERRORS = error_responses(401, 403, 404, 409, 413, 422)
