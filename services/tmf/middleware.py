"""ASGI middleware shared by every API: request ids and access logs, request size and JSON
nesting limits, and trailing-slash tolerance on collection paths."""

from __future__ import annotations

import re
import time
import uuid
from itertools import accumulate
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import JSON, error_bytes

log = structlog.get_logger("tmf.access")
# Where the body the limit check read is kept for handlers that need its exact bytes (a signed
# event's signature covers them): connexion's request proxy cannot read a consumed body again.
RAW_BODY = "raw_body"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: "$" would accept a trailing newline


async def _send_error(send: Send, status: int, reason: str, message: str) -> None:
    body = error_bytes(status, reason, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Binds a request id (the client's ``X-Request-ID`` when it is sane) to every log line,
    echoes it in the response, and writes one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))


# One pass over the raw bytes, matching only what needs a look: a string literal (skipped
# whole), a bracket, a number literal that could be out of range (19 digits in a row, or an
# exponent of three digits or more: anything shorter stays far below 1e308; the look-behind
# keeps the match at the literal's start), or the first letter
# of a bare NaN / Infinity (valid JSON has no capital letter outside strings). Ordinary numbers
# never leave the regular expression engine.
_TOKEN = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"'
    rb"|[\[\]{}]"
    rb"|(?<![0-9.eE+-])-?(?=[0-9])[0-9.]*?(?:[eE][+-]?[0-9]{3}|[0-9]{19})[0-9.eE+-]*"
    rb"|[NI]",
    re.DOTALL,
)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NESTING = {0x5B: 1, 0x7B: 1, 0x5D: -1, 0x7D: -1}  # [ { ] }
_NOT_BRACKETS = bytes(c for c in range(256) if c not in _NESTING)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_NUMBER = re.compile(rb"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
INT64_MAX = 2**63 - 1
_INT64_LIMITS = {b"": str(INT64_MAX).encode(), b"-": str(INT64_MAX + 1).encode()}
_DOUBLE_MAX_EXPONENT = 308  # the largest double is about 1.8e308


def number_problem(literal: bytes) -> str | None:
    """Why a JSON number literal cannot be stored faithfully: an integer outside the signed
    64-bit range, or a number a double turns into infinity. None when it is fine, or when it is
    not a well-formed number at all (the JSON parser refuses those with its own message)."""
    match = _NUMBER.fullmatch(literal)
    if match is None:
        return None
    sign, whole, fraction, exponent_sign, exponent = match.groups()
    shown = literal[:40].decode("ascii") + ("..." if len(literal) > 40 else "")
    if fraction is None and exponent is None:
        limit = _INT64_LIMITS[sign]
        if len(whole) > len(limit) or (len(whole) == len(limit) and whole > limit):
            return (f"the integer {shown} is outside the signed 64-bit range "
                    f"({-INT64_MAX - 1} to {INT64_MAX}); send a smaller number, or a string if it is an identifier")
        return None
    fraction = fraction or b""
    if not (whole + fraction).strip(b"0"):
        return None  # zero, whatever its exponent
    # The decimal exponent of the leading significant digit, from the literal's shape alone.
    leading = len(whole) - 1 if whole != b"0" else -(len(fraction) - len(fraction.lstrip(b"0"))) - 1
    written = (exponent or b"0").lstrip(b"0") or b"0"
    if len(written) > 18:
        # Far beyond anything the digits before it could offset (they are bounded by the body size).
        overflows = exponent_sign != b"-"
    else:
        magnitude = leading + (-int(written) if exponent_sign == b"-" else int(written))
        overflows = magnitude > _DOUBLE_MAX_EXPONENT or (
            magnitude == _DOUBLE_MAX_EXPONENT and float(literal) in (float("inf"), float("-inf")))
    if overflows:
        return (f"the number {shown} is too large for a double-precision number; "
                "send a finite number up to about 1.8e308")
    return None


def _plainly_fine(body: bytes, max_depth: int, numbers: bool) -> bool:
    """Whether a body has none of what :func:`json_body_problem` looks for, decided with a few
    passes of the bytes methods over the text outside string literals instead of a Python step
    per token: a body it cannot clear (a bare capital letter, a run of 19 digits or a
    three-digit exponent, brackets too deep) is looked at token by token."""
    if b"\\" not in body and body.count(b'"') % 2 == 0:
        # Without escapes, string literals are exactly the text between quote pairs.
        outside = b"".join(body.split(b'"')[::2])
    else:
        outside = _STRING.sub(b"", body)
    if numbers:
        if b"N" in outside or b"I" in outside:
            return False
        shapes = outside.translate(_DIGITS_TO_ZERO)
        if b"0" * 19 in shapes or b"e000" in shapes or b"e+000" in shapes or b"e-000" in shapes:
            return False
    brackets = outside.translate(None, _NOT_BRACKETS)
    return not brackets or max(accumulate(map(_NESTING.__getitem__, brackets))) <= max_depth


def json_body_problem(body: bytes, max_depth: int, *, numbers: bool = True) -> str | None:
    """What makes a JSON body unacceptable before any parser sees it, or None: brackets
    nesting deeper than ``max_depth`` outside string literals (a hostile body never reaches a
    recursive parser) and, with ``numbers``, the bare ``NaN`` / ``Infinity`` / ``-Infinity``
    Python's parser accepts but JSON does not, and number literals that cannot be stored
    faithfully (see :func:`number_problem`). Linear in the size of the body."""
    if _plainly_fine(body, max_depth, numbers):
        return None
    depth = 0
    for token in _TOKEN.finditer(body):
        first = body[token.start()]
        if first == 0x22:  # a string literal
            continue
        if first in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                return f"the JSON body nests deeper than {max_depth} levels"
        elif first in (0x5D, 0x7D):  # ] }
            depth -= 1
        elif not numbers:
            continue
        elif first in (0x4E, 0x49):  # N I
            return (f"the JSON body holds a bare NaN or Infinity (byte {token.start()}); JSON numbers are "
                    "finite: send a number, or null where the attribute allows it")
        else:
            problem = number_problem(token.group())
            if problem is not None:
                return f"{problem} (byte {token.start()})"
    return None


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` outside string literals."""
    return json_body_problem(body, limit, numbers=False) is not None


RAW_BODY = "raw_body"


def raw_body(scope: Scope) -> bytes | None:
    """The request body exactly as received, once :class:`BodyLimitMiddleware` has read it."""
    body = scope.get("state", {}).get(RAW_BODY)
    return body if isinstance(body, bytes) else None


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` (413), bodies that are not UTF-8, JSON nested deeper
    than ``max_depth``, and JSON numbers that would be stored as garbage (NaN, infinities,
    integers beyond 64 bits) (400), before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "DELETE", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            await _send_error(send, 400, "Bad request",
                              f"the body is not UTF-8 text (byte {exc.start}); JSON bodies must be UTF-8")
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"json").lower()
        problem = json_body_problem(body, self.max_depth, numbers=b"json" in content_type)
        if problem is not None:
            await _send_error(send, 400, "Bad request", problem)
            return
        # Kept for whoever needs the exact bytes after the body has been parsed (a listener checks
        # the producer's signature over them): the stream itself can be read only once.
        scope.setdefault("state", {})[RAW_BODY] = body
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "Payload too large",
                          f"the body is larger than {self.max_bytes} bytes; send less per request")


class TrailingSlashMiddleware:
    """``/service/`` is the same collection as ``/service``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            raw: Any = scope.get("raw_path")
            if isinstance(raw, bytes):
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
