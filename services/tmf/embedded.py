"""The embedded database for a laptop and for tests: a SecantusDB server (MongoDB wire protocol)
started as a child process on a free loopback port. It is never imported, only executed."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

EXECUTABLE = "secantusd-py"
MEMORY = ":memory:"


class EmbeddedDatabaseError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _executable() -> str:
    beside_python = Path(sys.executable).parent / EXECUTABLE
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise EmbeddedDatabaseError(
            f"the embedded database ({EXECUTABLE}) is not installed: install it with "
            "pip install 'tmf-sqm[embedded]', or pass --mongodb-uri"
        )
    return found


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM if we are killed, so no orphan keeps the data dir locked.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class EmbeddedDatabase:
    """``storage`` is a directory, or ``:memory:`` for a throw-away database.

    A database in a directory flushes its journal to disk before it acknowledges a commit
    (``--sync-on-commit``), so that nothing it answered is lost if the machine or the process
    dies; ``sync_on_commit=False`` trades that for throughput. ``hold`` are file descriptors the
    database process keeps open for as long as it runs (a lock on its data dir, so that the lock
    outlives a parent that was killed while its database still shuts down)."""

    def __init__(self, storage: str, log_path: Path | None = None, startup_timeout: float = 60.0,
                 sync_on_commit: bool = True, hold: Sequence[int] = ()) -> None:
        self.storage = storage
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.sync_on_commit = sync_on_commit
        self.hold = tuple(hold)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> str:
        self.port = free_port()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        command = [_executable(), "--host", "127.0.0.1", "--port", str(self.port),
                   "--storage-path", self.storage, "--log-level", "WARNING"]
        # A throw-away database has nothing to keep across a crash.
        if self.sync_on_commit and self.storage != MEMORY:
            command.append("--sync-on-commit")
        # The database's test harness switch turns its journal off: never inherit it.
        environment = {k: v for k, v in os.environ.items() if k != "SECANTUS_TEST_FAST_STORAGE"}
        self.process = subprocess.Popen(  # noqa: S603 - fixed executable, our own arguments
            command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=environment, pass_fds=self.hold,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        if not isinstance(log, int):
            log.close()
        self._wait_ready()
        return self.uri

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EmbeddedDatabaseError(
                    f"the embedded database exited with code {self.process.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                client: MongoClient[dict[str, object]]
                with MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.2)
        self.stop()
        raise EmbeddedDatabaseError(f"the embedded database did not answer within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
