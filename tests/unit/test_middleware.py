"""The shared ASGI middleware (services/tmf/middleware.py), driven directly as ASGI apps."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from services.tmf.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    TrailingSlashMiddleware,
    json_body_problem,
    json_depth_exceeds,
    number_problem,
)

Message = dict[str, Any]

# ------------------------------------------------------------------ json_depth_exceeds


@pytest.mark.parametrize(("body", "limit", "exceeds"), [
    (b"", 0, False),
    (b"{}", 1, False),
    (b"{}", 0, True),
    (b'{"a": [1, {"b": []}]}', 4, False),
    (b'{"a": [1, {"b": []}]}', 3, True),
    (b"[" * 5 + b"]" * 5, 5, False),
    (b"[" * 6 + b"]" * 6, 5, True),
    (b"[[],[],[],[]]", 2, False),
    # Brackets inside strings are text.
    (b'{"a": "[[[[[[[[{{{{{{"}', 1, False),
    (b'["]]]]", [[[1]]]]', 4, False),
    (b'["]]]]", [[[1]]]]', 3, True),
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    (b'{"a": "\\"[[[[[["}', 1, False),
    (b'{"a": "\\\\", "b": [[[[]]]]}', 5, False),
    (b'{"a": "\\\\", "b": [[[[]]]]}', 4, True),
    (b'["\\\\\\"[[[["]', 1, False),
    # A quote that opens no string literal (it has no end) hides nothing.
    (b'"[[[[', 1, True),
    (b'["a"] "[[[[', 2, True),
    (b'["a", "b"]' * 1000, 1, False),
])
def test_json_depth_exceeds(body: bytes, limit: int, exceeds: bool) -> None:
    assert json_depth_exceeds(body, limit) is exceeds


# ------------------------------------------------------------------ json_body_problem


@pytest.mark.parametrize("body", [
    b'{"a": NaN}', b"[Infinity]", b"[-Infinity]", b'{"a": [1, {"b": NaN}]}',
    b"[1e400]", b"[-1e400]", b"[1E+400]", b"[1e0400]", b"[1.7976931348623159e308]",
    b"[123456789012345678e299]", b"[0.0000001e316]", b"[1" + b"0" * 400 + b".5]",
    b"[1e" + b"9" * 5000 + b"]",
    b"[9223372036854775808]", b"[-9223372036854775809]", b"[18446744073709551616]",
    b'{"x": "\\\\", "y": 99999999999999999999}', b"[1" + b"0" * 5000 + b"]",
])
def test_json_body_problem_refuses_numbers_that_cannot_be_stored(body: bytes) -> None:
    assert json_body_problem(body, 32) is not None
    assert json_body_problem(body, 32, numbers=False) is None


@pytest.mark.parametrize("body", [
    b"[9223372036854775807]", b"[-9223372036854775808]", b"[1.7976931348623157e308]",
    b"[-1.7976931348623157e308]", b"[1e308]", b"[1e99]", b"[1.5e3, 2e-3]", b"[1e-400]", b"[0e99999999]",
    b"[0.000e400]", b"[0.1234567890123456789012345]", b"[12345678901234567890.5]",
    b"[0.0000001e314]", b"[true, false, null, 0, -0, 1.5]",
    # Text is text, whatever it spells.
    b'{"name": "NaN Infinity -Infinity 1e999 99999999999999999999 Nordic IP-VPN"}',
    b'{"a\\"": "\\" NaN 1e999"}',
    # Malformed literals are left to the JSON parser's own message.
    b"[1.2.3e]", b"[-]",
])
def test_json_body_problem_accepts_storable_json(body: bytes) -> None:
    assert json_body_problem(body, 32) is None


def test_json_body_problem_says_what_and_where() -> None:
    message = json_body_problem(b'{"value": 9223372036854775808}', 32)
    assert message is not None
    assert "9223372036854775808" in message and "64-bit" in message and "byte 10" in message
    message = json_body_problem(b'{"value": NaN}', 32)
    assert message is not None and "NaN" in message and "byte 10" in message
    message = json_body_problem(b'[[[[1e400]]]]', 3)
    assert message == "the JSON body nests deeper than 3 levels"


def test_number_problem_bounds() -> None:
    assert number_problem(b"9223372036854775807") is None
    assert number_problem(b"9223372036854775808") is not None
    assert number_problem(b"-9223372036854775808") is None
    assert number_problem(b"-9223372036854775809") is not None
    assert number_problem(b"1.7976931348623157e308") is None
    assert number_problem(b"1.797693134862316e308") is not None
    assert number_problem(b"not a number") is None


# ------------------------------------------------------------------ an ASGI harness


@dataclass
class Inner:
    """A tiny ASGI app that records what reached it and echoes the request body."""

    calls: int = 0
    scope: Scope | None = None
    body: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: [(b"content-type", b"text/plain")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scope = scope
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class Result:
    messages: list[Message]
    receive_calls: int

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def http_scope(method: str = "POST", path: str = "/tmf-api/serviceInventory/v4/service",
               headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers or [], "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


def run(app: Any, scope: dict[str, Any], chunks: list[bytes] | None = None, *,
        disconnect_after: int | None = None) -> Result:
    """Drive ``app`` with the body ``chunks`` (or a disconnect after that many chunks)."""
    incoming: list[Message] = []
    parts = chunks if chunks is not None else [b""]
    for i, chunk in enumerate(parts):
        if disconnect_after is not None and i == disconnect_after:
            break
        incoming.append({"type": "http.request", "body": chunk, "more_body": i < len(parts) - 1})
    sent: list[Message] = []
    receive_calls = 0

    async def receive() -> Message:
        nonlocal receive_calls
        receive_calls += 1
        if incoming:
            return incoming.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return Result(sent, receive_calls)


def tmf_error(result: Result) -> dict[str, Any]:
    assert result.headers[b"content-type"].startswith(b"application/json")
    assert int(result.headers[b"content-length"]) == len(result.body)
    body: dict[str, Any] = json.loads(result.body)
    assert set(body) == {"code", "reason", "message", "status", "@type"}
    assert body["code"] == body["status"] == str(result.status)
    assert body["@type"] == "Error"
    return body


# ------------------------------------------------------------------ BodyLimitMiddleware


class TestBodyLimit:
    def test_small_body_reaches_the_app_intact(self) -> None:
        inner = Inner()
        payload = json.dumps({"name": "vpn", "note": [{"text": "ünïcode ✓"}]}).encode()
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(), [payload])
        assert result.status == 200
        assert inner.body == payload
        assert result.body == payload

    def test_chunked_body_is_replayed_whole(self) -> None:
        inner = Inner()
        chunks = [b'{"name": ', b'"vp', b'n", "x": [1, 2', b"]}"]
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(), chunks)
        assert result.status == 200
        assert inner.body == b"".join(chunks)

    def test_body_of_exactly_the_limit_is_accepted(self) -> None:
        inner = Inner()
        payload = b'"' + b"a" * 98 + b'"'
        headers = [(b"content-length", b"100")]
        result = run(BodyLimitMiddleware(inner, max_bytes=100, max_depth=4), http_scope(headers=headers), [payload])
        assert result.status == 200
        assert inner.body == payload

    def test_declared_length_over_the_limit_is_refused_unread(self) -> None:
        inner = Inner()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"101")]
        result = run(BodyLimitMiddleware(inner, max_bytes=100, max_depth=4), http_scope(headers=headers), [b"{}"])
        assert result.status == 413
        assert inner.calls == 0
        assert result.receive_calls == 0
        body = tmf_error(result)
        assert body["reason"] == "Payload too large"
        assert "100 bytes" in body["message"]

    @pytest.mark.parametrize("headers", [[], [(b"content-length", b"10")], [(b"content-length", b"ten")]])
    def test_streamed_size_over_the_limit_is_refused(self, headers: list[tuple[bytes, bytes]]) -> None:
        inner = Inner()
        chunks = [b"[" + b"1," * 20, b"2," * 20, b"3]"]
        result = run(BodyLimitMiddleware(inner, max_bytes=50, max_depth=4), http_scope(headers=headers), chunks)
        assert result.status == 413
        assert inner.calls == 0
        assert tmf_error(result)["status"] == "413"

    @pytest.mark.parametrize("content_type", [b"application/json", b"application/merge-patch+json",
                                              b"application/json-patch+json", None])
    def test_unstorable_number_is_a_bad_request(self, content_type: bytes | None) -> None:
        inner = Inner()
        headers = [(b"content-type", content_type)] if content_type else []
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(headers=headers),
                     [b'{"value": ', b"NaN}"])
        assert result.status == 400
        assert inner.calls == 0
        assert "NaN" in tmf_error(result)["message"]

    def test_text_that_is_not_json_is_not_read_as_numbers(self) -> None:
        inner = Inner()
        headers = [(b"content-type", b"text/plain")]
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(headers=headers),
                     [b"Infinity and 99999999999999999999"])
        assert result.status == 200
        assert inner.calls == 1

    def test_deep_json_is_a_bad_request(self) -> None:
        inner = Inner()
        payload = b'{"a":' * 5 + b"1" + b"}" * 5
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(), [payload])
        assert result.status == 400
        assert inner.calls == 0
        body = tmf_error(result)
        assert body["reason"] == "Bad request"
        assert "deeper than 4 levels" in body["message"]

    def test_depth_at_the_limit_is_accepted(self) -> None:
        inner = Inner()
        payload = b'{"a":' * 4 + b"1" + b"}" * 4
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(), [payload])
        assert result.status == 200
        assert inner.body == payload

    def test_brackets_in_strings_do_not_count(self) -> None:
        inner = Inner()
        payload = json.dumps({"text": "[" * 100 + '\\"' + "{" * 100}).encode()
        result = run(BodyLimitMiddleware(inner, max_bytes=4096, max_depth=4), http_scope(), [payload])
        assert result.status == 200
        assert inner.body == payload

    def test_body_that_is_not_utf8_is_a_bad_request(self) -> None:
        inner = Inner()
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(), [b'{"a": "\xff"}'])
        assert result.status == 400
        assert inner.calls == 0
        assert tmf_error(result)["reason"] == "Bad request"

    @pytest.mark.parametrize("method", ["PATCH", "PUT", "POST"])
    def test_every_method_with_a_body_is_checked(self, method: str) -> None:
        inner = Inner()
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(method),
                     [b"[[[[[[]]]]]]"])
        assert result.status == 400
        assert inner.calls == 0

    @pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
    def test_bodiless_methods_pass_through(self, method: str) -> None:
        inner = Inner()
        headers = [(b"content-length", b"100000")]
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(method, headers=headers),
                     [b"[[[[[[[[]]]]]]]]"])
        assert result.status == 200
        assert inner.calls == 1
        assert inner.body == b"[[[[[[[[]]]]]]]]"

    def test_other_scope_types_pass_through(self) -> None:
        inner = Inner()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        assert run(BodyLimitMiddleware(inner, max_bytes=1, max_depth=1), scope).messages == []
        assert inner.calls == 1
        assert inner.scope is scope

    def test_client_disconnect_ends_quietly(self) -> None:
        inner = Inner()
        result = run(BodyLimitMiddleware(inner, max_bytes=1024, max_depth=4), http_scope(),
                     [b"[1,", b"2]"], disconnect_after=1)
        assert result.messages == []
        assert inner.calls == 0


# ------------------------------------------------------------------ TrailingSlashMiddleware


class TestTrailingSlash:
    @pytest.mark.parametrize(("path", "expected"), [
        ("/tmf-api/serviceInventory/v4/service/", "/tmf-api/serviceInventory/v4/service"),
        ("/tmf-api/serviceInventory/v4/service//", "/tmf-api/serviceInventory/v4/service"),
        ("/tmf-api/serviceInventory/v4/service", "/tmf-api/serviceInventory/v4/service"),
        ("/", "/"),
        ("//", "/"),
    ])
    def test_path_and_raw_path(self, path: str, expected: str) -> None:
        inner = Inner()
        scope = http_scope("GET", path)
        assert run(TrailingSlashMiddleware(inner), scope).status == 200
        assert inner.scope is not None
        assert inner.scope["path"] == expected
        assert inner.scope["raw_path"] == expected.encode()
        # The caller's scope is not rewritten in place.
        assert scope["path"] == path

    def test_scope_without_raw_path(self) -> None:
        inner = Inner()
        scope = http_scope("GET", "/a/")
        del scope["raw_path"]
        run(TrailingSlashMiddleware(inner), scope)
        assert inner.scope is not None
        assert inner.scope["path"] == "/a"
        assert "raw_path" not in inner.scope

    def test_other_scope_types_are_untouched(self) -> None:
        inner = Inner()
        scope = {"type": "websocket", "path": "/a/", "raw_path": b"/a/", "headers": []}
        run(TrailingSlashMiddleware(inner), scope)
        assert inner.scope is scope
        assert scope["path"] == "/a/"


# ------------------------------------------------------------------ RequestContextMiddleware

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class TestRequestContext:
    @pytest.mark.parametrize("given", ["abc-123", "A.b_c-9", "x" * 64, "0"])
    def test_sane_client_id_is_kept_and_echoed(self, given: str) -> None:
        inner = Inner()
        scope = http_scope("GET", headers=[(b"x-request-id", given.encode())])
        result = run(RequestContextMiddleware(inner), scope)
        assert result.headers[b"x-request-id"] == given.encode()
        assert inner.scope is not None
        assert inner.scope["state"]["request_id"] == given

    @pytest.mark.parametrize("given", [
        b"", b"x" * 65, b"has space", b"abc\n", b"abc\r\nSet-Cookie: x=1", b"<script>", b"id;drop", b"caf\xe9",
    ])
    def test_insane_client_id_is_replaced(self, given: bytes) -> None:
        inner = Inner()
        result = run(RequestContextMiddleware(inner), http_scope("GET", headers=[(b"x-request-id", given)]))
        echoed = result.headers[b"x-request-id"].decode()
        assert GENERATED_ID.fullmatch(echoed)
        assert inner.scope is not None
        assert inner.scope["state"]["request_id"] == echoed

    def test_missing_id_is_generated_fresh_per_request(self) -> None:
        first = run(RequestContextMiddleware(Inner()), http_scope("GET")).headers[b"x-request-id"]
        second = run(RequestContextMiddleware(Inner()), http_scope("GET")).headers[b"x-request-id"]
        assert GENERATED_ID.fullmatch(first.decode())
        assert GENERATED_ID.fullmatch(second.decode())
        assert first != second

    def test_response_headers_are_kept(self) -> None:
        inner = Inner(headers=[(b"content-type", b"application/json"), (b"etag", b'"3"')])
        result = run(RequestContextMiddleware(inner), http_scope("GET", headers=[(b"x-request-id", b"r1")]))
        assert result.messages[0]["headers"] == [
            (b"content-type", b"application/json"), (b"etag", b'"3"'), (b"x-request-id", b"r1"),
        ]
        assert result.body == b""

    def test_id_is_echoed_on_middleware_errors_too(self) -> None:
        app = RequestContextMiddleware(BodyLimitMiddleware(Inner(), max_bytes=1024, max_depth=2))
        result = run(app, http_scope(headers=[(b"x-request-id", b"req-7")]), [b"[[[1]]]"])
        assert result.status == 400
        assert result.headers[b"x-request-id"] == b"req-7"

    def test_other_scope_types_pass_through(self) -> None:
        inner = Inner()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        run(RequestContextMiddleware(inner), scope)
        assert inner.scope is scope
        assert "state" not in scope

    def test_errors_from_the_app_propagate(self) -> None:
        async def failing(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            run(RequestContextMiddleware(failing), http_scope("GET"))
