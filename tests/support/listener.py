"""A real HTTP listener on loopback that records what a hub delivers, and can be told to fail."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.tmf.embedded import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Listener:
    """``answer`` is the status every POST gets (201 by default); set it to 503 to simulate an
    outage, 410 to unsubscribe."""

    answer: int = 201
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            if self.answer >= 300:
                self.refused += 1
                return Response(status_code=self.answer)
            self.received.append(Received(request.url.path, dict(request.headers), body))
        return Response(status_code=self.answer)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events arrived (a safety bound, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= count:
                return events
            time.sleep(0.02)
        return self.events()

    def start(self) -> Listener:
        self.port = free_port()
        app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_config=None, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("listener did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def eventually(predicate: Callable[[], Any], attempts: int = 600) -> Any:
    """Poll until ``predicate`` holds (deliveries are asynchronous); a safety bound, not a timing."""
    pause = Listener()
    for _ in range(attempts):
        result = predicate()
        if result:
            return result
        pause.wait_for(1, timeout=0.05)
    return predicate()
