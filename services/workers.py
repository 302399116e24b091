"""Several processes serving one port (``sqm serve --workers N``).

The parent binds the port and starts the workers; each builds the whole app (its own database
client, event dispatcher and background tasks) and accepts connections on the shared socket.
The dispatchers share the outbox through its leases: a delivery is claimed by one dispatcher
at a time, under an owner unique to its process, so workers never send the same delivery twice
at once, and a worker that dies leaves its claims to the others when the lease ends.

The first worker starts alone, and the others only once it is ready: the first start of a
suite makes the token issuer's signing key and the suite's own hub subscriptions, which the
later workers then find instead of racing to make their own. The embedded database, when
there is one, belongs to the parent, which starts it before and stops it after the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable

import httpx

# Seconds a worker may take to become ready (build the app, reach the database, subscribe).
READY_TIMEOUT_SECONDS = 120.0
# How long stopping workers may take before they are killed.
STOP_TIMEOUT_SECONDS = 20.0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(sock: socket.socket, apis: list[str] | None, with_gateway: bool, log_level: str) -> None:
    # A fresh interpreter (spawned): the settings come from the environment the parent prepared.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import uvicorn

    from gateway.wiring import in_process
    from services.app import create_app
    from services.tmf.api import issuer_of
    from services.tmf.logging import configure_logging
    from services.tmf.settings import Settings

    configure_logging(log_level)
    settings = Settings.from_env()
    app = create_app(settings, apis=apis)
    front = in_process(app, issuer_of(app), settings.public_url,
                       (settings.mongodb_uri, settings.database)) if with_gateway else app
    config = uvicorn.Config(front, log_config=None, log_level="warning", lifespan="on", server_header=False)
    # The parent stops workers with SIGTERM; uvicorn shuts down gracefully on it.
    uvicorn.Server(config).run(sockets=[sock])


class Workers:
    """``count`` worker processes serving ``sock``; see the module's description."""

    def __init__(self, sock: socket.socket, count: int, apis: list[str] | None, with_gateway: bool,
                 log_level: str) -> None:
        self.sock = sock
        self.count = count
        self.args = (apis, with_gateway, log_level)
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._context = multiprocessing.get_context("spawn")

    def _start_one(self) -> None:
        process = self._context.Process(target=_worker, args=(self.sock, *self.args), daemon=False)
        process.start()
        self.processes.append(process)

    def _wait_ready(self, url: str, process: multiprocessing.process.BaseProcess) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if not process.is_alive():
                    return False
                try:
                    if client.get(url).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        return False

    def start(self, ready_url: str) -> bool:
        """Start the first worker, wait until ``ready_url`` answers 200, then start the rest.
        False when the first worker died or never became ready."""
        self._start_one()
        if not self._wait_ready(ready_url, self.processes[0]):
            return False
        for _ in range(self.count - 1):
            self._start_one()
        return True

    def wait(self, should_stop: Callable[[], bool]) -> int:
        """Until every worker has ended or ``should_stop()``; a worker that dies is not replaced
        (its claimed deliveries go to the others when their leases end). The exit code is 0
        when every worker ended cleanly."""
        while any(p.is_alive() for p in self.processes) and not should_stop():
            time.sleep(0.2)
        return 0 if all(p.exitcode in (0, None) for p in self.processes) else 1

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
