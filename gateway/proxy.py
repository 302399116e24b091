"""Forwarding a request to the process that serves its API: pooled connections, bounded
timeouts, responses streamed back, and the upstream's own address in ``href``s and
``Location`` replaced by the public URL partners use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.tmf import telemetry
from services.tmf.errors import JSON, error_bytes

from .transport import Origin, Reply, StreamTransport

log = structlog.get_logger("gateway.proxy")
# RFC 9110 §7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host"})
# Bodies we rewrite are read whole; anything larger than this is streamed untouched.
MAX_REWRITTEN_BYTES = 16 * 1024 * 1024
MAX_BUFFERED_BYTES = 1024 * 1024


# The status audited for a call whose client left before its request was read (nginx's code).
CLIENT_GONE = 499


class ClientGone(Exception):
    """The client disconnected in the middle of its request: nothing is left to answer."""


def tmf_error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_bytes(status, reason, message), status_code=status, media_type=JSON,
                    headers=headers)


# Request headers the gateway sets itself.
# ``Expect`` is answered by the gateway's own server as it reads the body; not sent upstream.
_REPLACED = HOP_BY_HOP | {b"expect", b"accept-encoding", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}


def _forwarded_headers(request: Request) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _REPLACED]
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    return [*headers,
            (b"x-forwarded-for", f"{prior}, {client}".encode() if prior else client.encode()),
            (b"x-forwarded-proto", request.url.scheme.encode()),
            (b"x-forwarded-host", request.headers.get("host", "").encode("latin-1")),
            # Rewriting hrefs needs the plain body.
            (b"accept-encoding", b"identity")]


def _response_headers(raw: Iterable[tuple[bytes, bytes]], rewrite: tuple[bytes, bytes] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP:
            continue
        if rewrite is not None and name in {b"location", b"content-location"}:
            value = value.replace(*rewrite)
        headers[key.decode("latin-1")] = value.decode("latin-1")
    return headers


class Pool:
    """Keep-alive connections to every upstream, used at httpx's transport level: the gateway
    passes calls through, so a client's cookie jar (which would carry one partner's cookies to
    the next), redirects and auth flows have no place here, and cost time on every call. The
    transport is the gateway's own, with a compiled HTTP parser (see ``gateway.transport``)."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self.transport = StreamTransport(max_connections)
        self._traced: httpx.AsyncBaseTransport | None = None
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout).as_dict()

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes] | None) -> httpx.Response:
        """The upstream's answer, its body still to be read (or closed)."""
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": self.timeout})
        transport: httpx.AsyncBaseTransport = self.transport
        if telemetry.enabled():  # telemetry: a client span, and traceparent sent upstream
            transport = self._traced = self._traced or telemetry.traced_transport(self.transport)
        response = await transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


class Upstream:
    """One API process reached over HTTP."""

    def __init__(self, name: str, url: str, public_url: str, client: Pool) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.client = client
        self._rewrite = (self.url.encode(), self.public_url.encode()) if self.url != self.public_url else None
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._origin: Origin = (parts.scheme, parts.hostname or "", port)
        self._host_line = b"host: %b\r\n" % parts.netloc.encode("idna")

    async def relay(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Forward one call straight from the ASGI scope to the upstream and its answer back,
        without building request or response objects: the gateway's path for every proxied call
        while tracing is off (``forward`` is the same with a client span). The answer's status."""
        method: str = scope["method"]
        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        head = [b"%b %b HTTP/1.1\r\n" % (method.encode("ascii"), target), self._host_line]
        declared = b""
        chunked = prior = False
        forwarded_for = host = b""
        for name, value in scope["headers"]:
            if name not in _REPLACED:
                head += (name, b": ", value, b"\r\n")
                if name == b"content-length":
                    declared = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"x-forwarded-for":
                forwarded_for, prior = forwarded_for + b", " + value if prior else value, True
            elif name == b"host":
                host = value
        client = scope.get("client")
        address = client[0].encode() if client else b""
        head += (b"x-forwarded-for: ", forwarded_for + b", " + address if prior else address,
                 b"\r\nx-forwarded-proto: ", scope["scheme"].encode(), b"\r\nx-forwarded-host: ", host,
                 b"\r\naccept-encoding: identity\r\n")
        body: bytes | None = None
        stream: AsyncIterator[bytes] | None = None
        try:
            # As ``forward``: a bounded body in one piece, a larger or chunked one streamed, none
            # without either header.
            if declared.isdigit() and int(declared) <= MAX_BUFFERED_BYTES:
                body = await _read_body(receive)
            elif declared or chunked:
                stream = _body_stream(receive)
                if not declared:
                    head.append(b"transfer-encoding: chunked\r\n")
            head.append(b"\r\n")
            reply = await self.client.transport.exchange(
                self._origin, method, b"".join(head), body, self.client.timeout, stream, chunked and not declared)
        except ClientGone:
            return CLIENT_GONE
        except httpx.TimeoutException:
            return await _send_error(send, tmf_error(
                504, "Gateway timeout", f"the {self.name} API did not answer in time; try again"))
        except httpx.HTTPError as exc:
            log.warning("upstream unreachable", api=self.name, error=type(exc).__name__)
            return await _send_error(send, tmf_error(
                502, "Bad gateway", f"the {self.name} API cannot be reached; try again shortly", {"Retry-After": "5"}))
        try:
            return await self._answer(receive, send, method, reply)
        finally:
            await reply.body.aclose()

    async def _answer(self, receive: Receive, send: Send, method: str, reply: Reply) -> int:
        rewrite = self._rewrite
        headers: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        json_body = False
        for key, value in reply.headers:
            name = key.lower()
            if name in HOP_BY_HOP:
                continue
            if name == b"content-length":
                length = value
                continue
            if name == b"content-type":
                json_body = b"json" in value
            elif rewrite is not None and name in (b"location", b"content-location"):
                value = value.replace(*rewrite)
            headers.append((name, value))
        status = reply.status
        if method == "HEAD" or status in (204, 304):
            # No body (RFC 9112 §6.3); a length there describes the resource, not this answer.
            if length is not None:
                headers.append((b"content-length", length))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return status
        body = reply.whole
        small = length is not None and length.isdigit() and int(length) <= MAX_REWRITTEN_BYTES
        if body is None and rewrite is not None and json_body and small:
            try:
                body = b"".join([chunk async for chunk in reply.body])
            except httpx.HTTPError:
                return await _send_error(send, tmf_error(
                    502, "Bad gateway", f"the {self.name} API broke off its answer; try again"))
        if body is not None:
            if rewrite is not None and json_body:
                body = body.replace(*rewrite)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return status
        # Larger than one read, or of unknown length: passed on as it comes, untouched.
        if length is not None:
            headers.append((b"content-length", length))
        await send({"type": "http.response.start", "status": status, "headers": headers})

        async def pass_on() -> None:
            async for chunk in reply.body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        # A client that leaves stops the answer (its connection to the upstream is then closed),
        # rather than leaving the gateway to read the rest for nobody.
        passing, watching = asyncio.ensure_future(pass_on()), asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait((passing, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (passing, watching):
                task.cancel()
            await asyncio.gather(passing, watching, return_exceptions=True)
        if passing.cancelled():
            return CLIENT_GONE
        error = passing.exception()
        if error is not None:
            raise error
        return status

    async def forward(self, request: Request) -> Response:
        target = self.url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        declared = request.headers.get("content-length", "")
        # A body of known, bounded size goes in one piece, as a direct call sends it; larger or
        # chunked ones are streamed through. Without either header there is no body (RFC 9112
        # §6.3), and none is sent: a stream would go out as an empty chunked body.
        content: bytes | AsyncIterator[bytes] | None = None
        if declared.isdigit() and int(declared) <= MAX_BUFFERED_BYTES:
            content = await request.body()
        elif declared or "transfer-encoding" in request.headers:
            content = request.stream()
        try:
            upstream = await self.client.send(request.method, target, _forwarded_headers(request), content)
        except httpx.TimeoutException:
            return tmf_error(504, "Gateway timeout", f"the {self.name} API did not answer in time; try again")
        except httpx.HTTPError as exc:
            log.warning("upstream unreachable", api=self.name, error=type(exc).__name__)
            return tmf_error(502, "Bad gateway", f"the {self.name} API cannot be reached; try again shortly",
                             {"Retry-After": "5"})
        headers = _response_headers(upstream.headers.raw, self._rewrite)
        content_type = upstream.headers.get("content-type", "")
        declared = upstream.headers.get("content-length")
        small = declared is not None and declared.isdigit() and int(declared) <= MAX_REWRITTEN_BYTES
        if self._rewrite is not None and "json" in content_type and small:
            try:
                body = await upstream.aread()
            except httpx.HTTPError:
                return tmf_error(502, "Bad gateway", f"the {self.name} API broke off its answer; try again")
            finally:
                await upstream.aclose()
            headers.pop("content-length", None)
            return Response(body.replace(*self._rewrite), status_code=upstream.status_code, headers=headers)
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=headers,
                                 background=BackgroundTask(upstream.aclose))


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _body_stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_error(send: Send, response: Response) -> int:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
    return response.status_code


def route_table(base_paths: dict[str, str], upstreams: dict[str, Any]) -> list[tuple[str, Any]]:
    """(base path, upstream) pairs, longest base path first so that the most specific wins."""
    pairs = [(base_paths[name], upstream) for name, upstream in upstreams.items()]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)
