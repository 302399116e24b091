"""``sqm``: the command that runs the suite."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# connexion imports starlette's test client, which warns about httpx on every start; it says
# nothing to someone running the suite.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import structlog  # noqa: E402
import uvicorn  # noqa: E402
from pymongo import MongoClient, uri_parser  # noqa: E402
from pymongo.errors import ConfigurationError, PyMongoError  # noqa: E402

from console import cli as console_cli  # noqa: E402
from console.settings import ConsoleSettings  # noqa: E402
from gateway.wiring import in_process, standalone  # noqa: E402
from services import clients, workers  # noqa: E402
from services.app import API_NAMES, create_app, select  # noqa: E402
from services.tmf.api import is_ready, issuer_of  # noqa: E402
from services.tmf.auth.settings import AuthSettings  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase, EmbeddedDatabaseError  # noqa: E402
from services.tmf.logging import configure_logging  # noqa: E402
from services.tmf.settings import Settings, SettingsError  # noqa: E402


class StartupError(Exception):
    """Bad configuration: reported in one line, never as a traceback."""


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that the embedded database is stopped on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _stop_cleanly_on_sigterm() -> None:
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with the default
    # handler that kills the process before the embedded database is stopped and waited for, so
    # the database outlives us and keeps the data dir locked against the next start.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn does: connections of a server that just stopped linger in TIME_WAIT on the
        # port, and they must not stop a restart. A socket still listening there does.
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use; choose another with --port") from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data dir {path} is not writable: {exc.strerror}") from None


def _check_database(uri: str, source: str) -> None:
    """``source`` is where the URI came from (the flag or the variable), for the message."""
    try:
        # Strict parsing: the driver itself only warns about an unknown or malformed option, on
        # stderr, and then goes on without it.
        uri_parser.parse_uri(uri)
    except (ConfigurationError, ValueError) as exc:
        raise StartupError(f"{source} is not a valid MongoDB URI: {exc}") from None
    try:
        client: MongoClient[dict[str, object]]
        with warnings.catch_warnings():
            # What is left are the driver's remarks about the server it found; the one line
            # below, or the suite's own logs, say what matters.
            warnings.simplefilter("ignore")
            with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
                client.admin.command("ping")
    except ConfigurationError as exc:
        raise StartupError(f"{source} is not a valid MongoDB URI: {exc}") from None
    except PyMongoError:
        raise StartupError(f"cannot reach the MongoDB that {source} names within 5 s; check it") from None


class DataDirLock:
    """An exclusive lock on a data dir for the life of one ``sqm serve`` (and of its embedded
    database, which inherits it), and ``serve.json``, which tells other commands where that
    database answers. The kernel releases the lock when its holders die, so a crash leaves
    nothing that blocks a restart; a stale ``serve.json`` is simply overwritten."""

    LOCK = "serve.lock"
    ANNOUNCEMENT = "serve.json"
    # A server killed alone leaves its database stopping for a moment; a restart waits for it.
    ORPHAN_WAIT_SECONDS = 20.0

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.fd = -1
        self.announced = False

    def acquire(self) -> None:
        try:
            fd = os.open(self.data_dir / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(f"data dir {self.data_dir} is not writable: {exc.strerror}") from None
        deadline = time.monotonic() + self.ORPHAN_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder(fd)
                if holder is not None and _alive(holder):
                    os.close(fd)
                    raise StartupError(
                        f"data dir {self.data_dir} in use by another sqm serve (pid {holder})") from None
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise StartupError(
                        f"data dir {self.data_dir} is still in use by the database of a sqm serve "
                        f"(pid {holder if holder is not None else 'unknown'}) that has ended; "
                        "stop that database process") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    @staticmethod
    def _holder(fd: int) -> int | None:
        try:
            return int(os.pread(fd, 32, 0).decode().strip())
        except (OSError, ValueError):
            return None

    def announce(self, database_uri: str) -> None:
        """Write ``serve.json`` (``pid`` and ``database_uri``), replacing any left by a crash."""
        target = self.data_dir / self.ANNOUNCEMENT
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps({"pid": os.getpid(), "database_uri": database_uri}) + "\n")
        os.replace(partial, target)
        self.announced = True

    def release(self) -> None:
        if self.announced:
            with contextlib.suppress(OSError):
                (self.data_dir / self.ANNOUNCEMENT).unlink()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _serve(server: uvicorn.Server, host: str, port: int, ready: Callable[[], Awaitable[bool]],
                 what: str = "tmf-sqm") -> None:
    async def announce() -> None:
        # Ready means what GET /health/ready means: serving, and every service subscribed to the
        # hubs it listens to (over HTTP, to this very process once it serves), so that nothing a
        # client sends after this line goes unheard. A producer that cannot be reached holds the
        # line back; the log says which, and /health/ready answers what is missing.
        while not (server.started and await ready()):
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(f"{what} ready on http://{host}:{port}", flush=True)

    watcher = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()


def serve(args: argparse.Namespace) -> int:
    host, port = args.host, args.port
    data_dir = Path(args.data_dir).resolve()
    uri = args.mongodb_uri or os.environ.get("SQM_MONGODB_URI", "")
    uri_source = "--mongodb-uri" if args.mongodb_uri else "SQM_MONGODB_URI"
    overrides: dict[str, Any] = {"unsafe_skip_fsync": True} if args.unsafe_skip_fsync else {}
    embedded: EmbeddedDatabase | None = None
    lock: DataDirLock | None = None
    _stop_cleanly_on_sigterm()
    try:
        try:
            declarations = select(args.api)
        except ValueError as exc:
            raise StartupError(f"--api: {exc}") from None
        os.environ.setdefault("SQM_PUBLIC_URL", f"http://{host}:{port}")
        # The services cooperate through their public APIs, at the public URL: under the
        # all-in-one server that is this process (the SLA service checks covered services in this
        # inventory, the problem service subscribes to this process's alarm and SLA hubs); with
        # one process per API it is the gateway, which routes each call to the process serving it.
        public = os.environ["SQM_PUBLIC_URL"]
        os.environ.setdefault("SQM_INVENTORY_URL", f"{public}/tmf-api/serviceInventory/v4")
        os.environ.setdefault("SQM_ALARM_HUB_URL", f"{public}/tmf-api/alarmManagement/v4")
        os.environ.setdefault("SQM_SLA_HUB_URL", f"{public}/tmf-api/slaManagement/v4")
        # Only the settings of the APIs served here are read and checked; the others keep defaults.
        sections = {section for declaration in declarations for section in declaration.settings}
        settings = Settings.from_env(sections, **overrides)
        configure_logging(settings.log_level)
        if settings.unsafe_skip_fsync:
            structlog.get_logger("sqm").warning(
                "unsafe_skip_fsync", detail="writes are acknowledged before they reach the disk: a crash "
                "or power cut can lose changes already answered 2xx, and their events")
        running = None if uri or not args.api else clients.running_suite_database(data_dir)
        if uri:
            _check_port(host, port)
            _check_database(uri, uri_source)
        elif running is not None:
            # One process per API on one machine: the first one started the embedded database
            # of this data dir, and the others use it.
            _check_port(host, port)
            uri = running
            os.environ.setdefault("SQM_ALLOW_PRIVATE_CALLBACKS", "true")
        else:
            # Before anything else touches the data dir: a second server must leave it alone.
            _check_data_dir(data_dir)
            lock = DataDirLock(data_dir)
            lock.acquire()
            _check_port(host, port)
            # The embedded mode is a laptop or test bench: listeners on this machine are the norm.
            os.environ.setdefault("SQM_ALLOW_PRIVATE_CALLBACKS", "true")
            embedded = EmbeddedDatabase(str(data_dir / "db"), log_path=data_dir / "database.log",
                                        sync_on_commit=not settings.unsafe_skip_fsync, hold=[lock.fd])
            uri = embedded.start()
            lock.announce(uri)
        settings = Settings.from_env(sections, mongodb_uri=uri, **overrides)
        if args.workers > 1:
            return _serve_workers(args, settings)
        app = create_app(settings, apis=[d.name for d in declarations])
        # Without --api, the gateway runs in this process in front of every API.
        front = app if args.api else in_process(app, issuer_of(app), settings.public_url,
                                                  (settings.mongodb_uri, settings.database))
        config = uvicorn.Config(front, host=host, port=port, log_config=None, log_level="warning",
                                lifespan="on", server_header=False)
        server = uvicorn.Server(config)
        asyncio.run(_serve(server, host, port, lambda: is_ready(app)))
        return 0 if server.started else 1
    except (StartupError, SettingsError, EmbeddedDatabaseError) as exc:
        print(f"sqm: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        try:
            if embedded is not None:
                embedded.stop()
        finally:
            if lock is not None:
                lock.release()


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """``serve`` with ``--workers`` above 1: the workers build the app themselves, from the
    environment prepared here (the database this process reached or started)."""
    os.environ["SQM_MONGODB_URI"] = settings.mongodb_uri
    if settings.unsafe_skip_fsync:
        os.environ["SQM_UNSAFE_SKIP_FSYNC"] = "true"
    sock = workers.bind(args.host, args.port)
    pool = workers.Workers(sock, args.workers, args.api, with_gateway=not args.api, log_level=settings.log_level)
    # Asked over the loopback when the port listens on every address.
    probe = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(  # noqa: S104 - compared, not bound
        args.host, f"[{args.host}]" if ":" in args.host else args.host)
    try:
        if not pool.start(f"http://{probe}:{args.port}/health/ready"):
            raise StartupError("the first worker did not become ready; its log lines above say why")
        print(f"tmf-sqm ready on http://{args.host}:{args.port} ({args.workers} workers)", flush=True)
        return pool.wait(lambda: False)
    finally:
        pool.stop()
        sock.close()


def gateway(args: argparse.Namespace) -> int:
    host, port = args.host, args.port
    _stop_cleanly_on_sigterm()
    try:
        uri = args.mongodb_uri or os.environ.get("SQM_MONGODB_URI", "")
        source = "--mongodb-uri" if args.mongodb_uri else "SQM_MONGODB_URI"
        if not uri:
            data_dir = Path(args.data_dir).resolve()
            uri = clients.running_suite_database(data_dir) or ""
            source = f"the database announced in {data_dir / clients.SERVE_FILE}"
            if not uri:
                raise StartupError(f"no database: give --mongodb-uri (or SQM_MONGODB_URI), or start sqm serve "
                                   f"--api ... --data-dir {data_dir} first, whose embedded database the gateway "
                                   "then uses")
        public = os.environ.get("SQM_PUBLIC_URL", f"http://{host}:{port}").rstrip("/")
        configure_logging(os.environ.get("SQM_LOG_LEVEL", "INFO").upper())
        _check_port(host, port)
        _check_database(uri, source)
        app = standalone((uri, os.environ.get("SQM_DATABASE", "sqm")), public)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning",
                                lifespan="on", server_header=False)
        server = uvicorn.Server(config)

        async def started() -> bool:
            return True

        # The event loop uvicorn itself would pick (uvloop when installed): ``asyncio.run`` alone
        # gives the pure-Python loop, whose own overhead was a good part of the hop's cost.
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve(server, host, port, started, "tmf-sqm gateway"))
        return 0 if server.started else 1
    except (StartupError, SettingsError) as exc:
        print(f"sqm: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated):
        return 0


# What ``serve`` puts in place of a variable that is not set, where that differs from the
# settings' own default (see the ``setdefault`` calls in ``serve``).
SERVE_DEFAULTS = {
    "SQM_MONGODB_URI": "(not set: the embedded database)",
    "SQM_PUBLIC_URL": "http://HOST:PORT",
    "SQM_ALLOW_PRIVATE_CALLBACKS": "true with the embedded database, otherwise false",
    "SQM_INVENTORY_URL": "this server's inventory",
    "SQM_ALARM_HUB_URL": "this server's alarm hub",
    "SQM_SLA_HUB_URL": "this server's SLA hub",
    "SQM_CONSOLE_API_URL": "SQM_PUBLIC_URL",
}


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else "(not set)"


def documented_variables() -> list[tuple[str, Any]]:
    """Every ``SQM_*`` variable an API process or the console reads, with its default."""
    return [*Settings.documented(), *AuthSettings.documented(), *ConsoleSettings.documented()]


def environment_defaults() -> list[tuple[str, str]]:
    """Every ``SQM_*`` variable with the default ``sqm serve`` uses, as ``serve --help`` shows it."""
    return [(name, SERVE_DEFAULTS.get(name, _default_text(default))) for name, default in documented_variables()]


def _environment_help() -> str:
    rows = environment_defaults()
    width = max(len(name) for name, _ in rows)
    return ("environment variables and their defaults (a flag wins over its variable; README.md\n"
            "says what each one does):\n" + "\n".join(f"  {name:<{width}}  {default}" for name, default in rows))


SERVE_DESCRIPTION = """\
Run every API of the suite (service inventory, SLA management, alarm intake, service problem
management), with their hubs and event delivery, on one port.

Without --mongodb-uri (or SQM_MONGODB_URI), it starts the embedded database as a child
process, with its data in --data-dir, and keeps that data dir locked while it runs. Every
change is on disk before it is answered, so that a crash loses nothing that was acknowledged.
It prints "tmf-sqm ready on http://HOST:PORT" once it serves, and stops cleanly on Ctrl-C or
SIGTERM. Bad configuration ends with one "sqm: ..." line and exit code 2."""


GATEWAY_DESCRIPTION = """\
The single public entry point in front of one sqm serve --api process per API: routes each
TMF base path to the process of SQM_GATEWAY_UPSTREAMS that serves it
(serviceInventory=http://HOST:PORT,...), limits rates per client (SQM_GATEWAY_RATE_LIMIT,
SQM_GATEWAY_ANONYMOUS_RATE_LIMIT, counters shared by replicas in MongoDB), applies the CORS
policy (SQM_GATEWAY_CORS_ORIGINS), serves the API catalogue at / and the docs at /docs, and
writes an audit line per partner call. Unless SQM_OAUTH_ISSUER names another issuer, it is
the token issuer (/oauth2/token, /oauth2/jwks, metadata) at SQM_PUBLIC_URL, with its clients
(sqm client add) and keys in the same database; the API processes then run with
SQM_OAUTH_ISSUER set to the gateway's public URL. It prints "tmf-sqm gateway ready on
http://HOST:PORT" once it serves."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqm", description="tmf-sqm: TM Forum service quality management")
    parser.add_argument("--version", action="version", version=f"sqm {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run every API on one port", description=SERVE_DESCRIPTION,
                              epilog=_environment_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    run.add_argument("--data-dir", default="./.sqm", help="where the embedded database keeps its data (default ./.sqm)")
    run.add_argument("--mongodb-uri", default=None,
                     help="use this MongoDB instead of the embedded database (or set SQM_MONGODB_URI)")
    run.add_argument("--api", action="append", choices=API_NAMES, metavar="NAME",
                     help="serve only this API, with its hub and event delivery (repeatable; default: every API, "
                          f"with the gateway in front): {', '.join(API_NAMES)}")
    run.add_argument("--workers", type=_positive, default=1,
                     help="processes serving the port (default 1); each runs the whole app and delivers events, "
                          "sharing the deliveries through their leases; the embedded database is started once")
    run.add_argument("--unsafe-skip-fsync", action="store_true",
                     help="acknowledge writes before they reach the disk: faster, but a crash or power cut can "
                          "lose changes already answered 2xx, and their events (or set SQM_UNSAFE_SKIP_FSYNC=true)")
    door = commands.add_parser("gateway", help="the public entry point in front of one process per API",
                               description=GATEWAY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    door.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    door.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    door.add_argument("--mongodb-uri", default=None,
                      help="the suite's MongoDB, for rate-limit counters and the token issuer's clients and keys "
                           "(or set SQM_MONGODB_URI)")
    door.add_argument("--data-dir", default="./.sqm",
                      help="without --mongodb-uri: use the embedded database a sqm serve --api started in this "
                           "data dir (default ./.sqm)")
    clients.add_parser(commands)
    console_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "client":
        return clients.run(args)
    if args.command == "user":
        return console_cli.run(args)
    if args.command == "gateway":
        return gateway(args)
    return serve(args)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _version() -> str:
    try:
        return metadata.version("tmf-sqm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
