"""``sqm serve`` as a real process for end-to-end tests: starting it, reading its ready line,
stopping it, and looking at the processes it leaves (read from /proc: psutil is not a
dependency)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth import token_of

SQM = Path(sys.executable).parent / "sqm"
INVENTORY = "/tmf-api/serviceInventory/v4"
DATABASE_EXECUTABLE = "secantusd-py"
# Safety bounds only: nothing here asserts how fast anything is.
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes ----------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    state, ppid, pgrp = raw[raw.rindex(")") + 2 :].split()[:3]
    return state, int(ppid), int(pgrp)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _live(stat: tuple[str, int, int] | None) -> bool:
    return stat is not None and stat[0] not in {"Z", "X"}


def is_running(pid: int, executable: str = DATABASE_EXECUTABLE) -> bool:
    """Whether ``pid`` is still a live (not zombie) process of ``executable``."""
    return _live(_stat(pid)) and any(executable in part for part in _cmdline(pid))


def database_children(parent: int) -> list[int]:
    found = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[1] == parent and is_running(pid):
            found.append(pid)
    return found


def databases_using(path: Path) -> list[int]:
    """Live embedded database processes whose command line mentions ``path``."""
    return [pid for pid in _pids() if is_running(pid) and any(str(path) in arg for arg in _cmdline(pid))]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    members = []
    for pid in _pids():
        stat = _stat(pid)
        if _live(stat) and stat is not None and stat[2] == pgid:
            members.append(pid)
    return members


def option(pid: int, name: str) -> str:
    args = _cmdline(pid)
    return args[args.index(name) + 1]


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def environment(**settings: object) -> dict[str, str]:
    """This process's environment without its ``SQM_*`` variables, plus ``settings``
    (``delivery_lease_seconds=2`` becomes ``SQM_DELIVERY_LEASE_SECONDS=2``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"SQM_{key.upper()}": str(value) for key, value in settings.items()})
    return env


# --- one ``sqm serve`` process ------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    stderr_path: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    ready_line: str = ""
    database_pid: int = 0
    database_port: int = 0
    reader: threading.Thread | None = None
    data_dir: Path | None = None
    # The server's database name: SQM_DATABASE, or the default.
    database: str = "sqm"
    # Given with --mongodb-uri; otherwise the server announces its embedded database in serve.json.
    mongodb_uri: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def database_uri(self) -> str:
        """The server's database: as given, or as the running server announced it for its data
        dir in ``serve.json``."""
        if self.mongodb_uri:
            return self.mongodb_uri
        assert self.data_dir is not None
        return str(json.loads((self.data_dir / "serve.json").read_text())["database_uri"])

    def bearer(self, **claims: Any) -> dict[str, str]:
        """An Authorization header for this server (its own issuer, at its public URL), signed
        with the key it keeps in its database; the operator's unless ``claims`` say otherwise."""
        return {"Authorization": f"Bearer {token_of(self.database_uri(), self.database, self.url, **claims)}"}

    def operator_headers(self) -> dict[str, str]:
        return self.bearer()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"sqm serve printed no ready line within {READY_TIMEOUT:.0f} s:\n{self.stderr()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=STOP_TIMEOUT)
                pytest.fail(f"sqm serve exited with {self.process.returncode} before it was ready:\n{self.stderr()}")
            if line.startswith("tmf-sqm ready"):
                self.ready_line = line.rstrip("\n")
                return

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"sqm serve did not stop within {STOP_TIMEOUT:.0f} s of {sig.name}")

    def start_reading(self) -> None:
        self.reader = threading.Thread(target=pump, args=(self.process.stdout, self.lines), daemon=True)
        self.reader.start()

    def finish(self) -> None:
        """Stop the process if it still runs, and close what reads its output."""
        # Shown by pytest only when the test fails: the server's log explains a 500.
        print(f"--- stderr of sqm serve on port {self.port} ---\n{self.stderr()[-20_000:]}")
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        # The reader ends at EOF, which the exited process has sent; closing the pipe under
        # a reader still inside read() would raise in its thread.
        if self.reader is not None:
            self.reader.join(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None and not (self.reader and self.reader.is_alive()):
            self.process.stdout.close()


def pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


StartSqm = Callable[..., Server]


@contextlib.contextmanager
def embedded_servers(tmp_path: Path) -> Iterator[StartSqm]:
    """Starts ``sqm serve`` with its embedded database and waits for its ready line; whatever is
    still running at the end is stopped, and this fails if an embedded database outlived its
    server. ``own_group=True`` starts the server in a process group of its own, which a test can
    kill as a whole (``os.killpg(server.process.pid, ...)``)."""
    started: list[Server] = []

    def start(data_dir: Path, port: int | None = None, own_group: bool = False, args: Sequence[str] = (),
              **settings: object) -> Server:
        port = port or free_port()
        stderr_path = tmp_path / f"sqm-{len(started)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [str(SQM), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
                 *args],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                cwd=tmp_path, env=environment(**settings), start_new_session=own_group,
            )
        server = Server(process, port, stderr_path, data_dir=data_dir,
                        database=str(settings.get("database", "sqm")))
        started.append(server)
        server.start_reading()
        server.wait_ready()
        children = database_children(process.pid)
        assert len(children) == 1, f"expected one embedded database child, found {children}"
        server.database_pid = children[0]
        server.database_port = int(option(children[0], "--port"))
        return server

    try:
        yield start
    finally:
        leftovers = []
        for server in started:
            server.finish()
            if server.database_pid and is_running(server.database_pid):
                leftovers.append(server.database_pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.database_pid, signal.SIGKILL)
        assert not leftovers, f"embedded databases {leftovers} outlived their sqm serve"
