"""The TMF ``Error`` body, the exceptions that produce it, and the handlers that turn every
failure (ours, connexion's, starlette's) into it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException

log = structlog.get_logger("tmf.errors")

JSON = "application/json;charset=utf-8"


class TmfError(Exception):
    """A failure the client can act on. ``reason`` is a short phrase, ``message`` says what to fix."""

    status = 400
    reason = "Bad request"
    # Response headers the error requires (``WWW-Authenticate`` on a 401).
    headers: Mapping[str, str] | None = None

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.code = code or str(self.status)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.reason, self.message, self.code)


class BadRequest(TmfError):
    status = 400
    reason = "Bad request"


class Unauthorized(TmfError):
    """No usable credentials (RFC 6750): ``challenge`` is the ``WWW-Authenticate`` value."""

    status = 401
    reason = "Unauthorized"

    def __init__(self, message: str, *, challenge: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(TmfError):
    """Authenticated, but not allowed to do this; ``challenge`` is set for a missing scope."""

    status = 403
    reason = "Forbidden"

    def __init__(self, message: str, *, challenge: str | None = None) -> None:
        super().__init__(message)
        if challenge is not None:
            self.headers = {"WWW-Authenticate": challenge}


class NotFound(TmfError):
    status = 404
    reason = "Not found"


class Conflict(TmfError):
    status = 409
    reason = "Conflict"


class ConcurrentChanges(Conflict):
    """Others kept changing the resource while a change without a precondition was applied;
    the client may simply send it again (``Retry-After`` says when)."""

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})


class PreconditionFailed(TmfError):
    status = 412
    reason = "Precondition failed"


class PayloadTooLarge(TmfError):
    status = 413
    reason = "Payload too large"


class UnsupportedMediaType(TmfError):
    status = 415
    reason = "Unsupported media type"


MAX_MESSAGE = 1000


def error_body(status: int, reason: str, message: str, code: str | None = None) -> dict[str, Any]:
    """Build a TMF630 ``Error`` resource."""
    if len(message) > MAX_MESSAGE:
        # Validation messages may quote a whole hostile body; the start says what to fix.
        message = message[: MAX_MESSAGE - 1] + "…"
    return {
        "code": code or str(status),
        "reason": reason,
        "message": message,
        "status": str(status),
        "@type": "Error",
    }


def error_bytes(status: int, reason: str, message: str) -> bytes:
    return json.dumps(error_body(status, reason, message)).encode()


def _response(status: int, reason: str, message: str,
              headers: Mapping[str, str] | None = None) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        body=error_bytes(status, reason, message),
        content_type=JSON,
        headers={**(headers or {}), "Content-Type": JSON},
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handle_tmf_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, TmfError)
    return _response(exc.status, exc.reason, exc.message, exc.headers)


def handle_problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Connexion raises RFC 7807 problems for validation failures; clients of a TMF API expect
    the TMF ``Error`` body instead, with connexion's explanation as the message."""
    assert isinstance(exc, ProblemException)
    status = exc.status or 400
    message = str(exc.detail or exc.title or _reason(status))
    if status == 415:
        message = f"{message}. Send the body as one of the media types the API document lists for this operation."
    return _response(status, exc.title or _reason(status), message)


def http_exception_handler(
    allowed_methods: Callable[[str], list[str]],
) -> Callable[[ConnexionRequest, Exception], ConnexionResponse]:
    """Starlette's routing errors as TMF errors; a 405 lists in ``Allow`` every method the API
    documents for the path (the router alone knows only the first route that matched)."""

    def handle(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        message = str(exc.detail) if exc.detail else _reason(status)
        headers = dict(exc.headers or {})
        if status == 404:
            message = f"No resource or operation at {request.url.path}; check the path against the API document"
        elif status == 405:
            methods = allowed_methods(request.url.path)
            message = f"{request.method} is not allowed on {request.url.path}; use {', '.join(methods)}"
            headers["Allow"] = ", ".join(methods)
        return _response(status, _reason(status), message, headers)

    return handle


def handle_unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    # Connexion runs synchronous handlers in a worker thread, where the exception being handled
    # is no longer current: it is passed explicitly so that the log line carries its traceback.
    log.error("unhandled error", path=request.url.path, method=request.method, exc_info=exc)
    return _response(500, "Internal error", "The server failed to process the request; it has been logged")
