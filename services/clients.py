"""``sqm client add|list|remove``: the OAuth clients of the built-in token issuer.

The commands use the same database as ``sqm serve``: ``--mongodb-uri`` (or ``SQM_MONGODB_URI``)
when given; otherwise the embedded database of ``--data-dir``, either through the suite that is
running on it (it announces its database in ``<data-dir>/serve.json``) or by starting the
embedded database for the duration of the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, PyMongoError

from services.tmf.auth import ROLES, SCOPES, AuthSettings, TokenIssuer
from services.tmf.auth.issuer import check_client
from services.tmf.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from services.tmf.errors import Conflict
from services.tmf.settings import SettingsError

SERVE_FILE = "serve.json"
Database = AsyncDatabase[dict[str, Any]]


class CommandError(Exception):
    """Reported as one ``sqm: ...`` line with exit code 2."""


def add_parser(commands: Any) -> None:
    """Add ``client`` with its subcommands to the ``sqm`` command's subparsers."""
    client = commands.add_parser("client", help="manage the OAuth clients of the built-in token issuer")
    actions = client.add_subparsers(dest="client_command", required=True)
    common = database_options()
    add = actions.add_parser("add", parents=[common],
                             help="register a client and print its id and secret (the secret is shown only once)")
    add.add_argument("name", help="a unique name for the client")
    add.add_argument("--party", required=True, help="the party the client acts for")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="the party's role; service is the identity of one of the suite's own processes "
                          "when it runs on its own (sqm serve --api), for SQM_CLIENT_ID and SQM_CLIENT_SECRET")
    add.add_argument("--scope", action="append", metavar="SCOPE",
                     help=f"a scope the client may ask for (repeatable; default by role): {', '.join(SCOPES)}")
    actions.add_parser("list", parents=[common], help="list the clients as JSON (without secrets)")
    remove = actions.add_parser("remove", parents=[common],
                                help="remove a client: no new tokens, and its tokens expire within their lifetime")
    remove.add_argument("client_id", help="the client's id, as add printed it")


def run(args: argparse.Namespace) -> int:
    """Carry out a ``sqm client`` subcommand; 0 on success, 2 with one ``sqm:`` line otherwise."""
    try:
        settings = AuthSettings.from_env()
        if args.client_command == "add":
            check_client(args.name, args.party, args.role, args.scope)
    except ValueError as exc:
        return command_failed(exc)
    return run_on_database(args, lambda database: _command(args, database, settings),
                           indent=None if args.client_command == "add" else 2)


def database_options() -> argparse.ArgumentParser:
    """The options of every command that works on the suite's database: where that database is."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default="./.sqm", help="the data dir of sqm serve (default ./.sqm)")
    common.add_argument("--mongodb-uri", default=None,
                        help="use this MongoDB instead of the embedded database (or set SQM_MONGODB_URI)")
    return common


def command_failed(problem: Exception) -> int:
    """Report ``problem`` as one ``sqm:`` line; the exit code of a command that failed."""
    print(f"sqm: {problem}", file=sys.stderr)
    return 2


def run_on_database(args: argparse.Namespace, command: Callable[[Database], Awaitable[Any]],
                    indent: int | None = 2) -> int:
    """Run ``command`` on the suite's database, located by ``args`` (``database_options``), and
    print what it returns as JSON; 0 on success, 2 with one ``sqm:`` line otherwise."""
    try:
        with _database_uri(args) as uri:
            output = asyncio.run(_on_database(uri, os.environ.get("SQM_DATABASE", "sqm"), command))
    except (CommandError, SettingsError, EmbeddedDatabaseError) as exc:
        return command_failed(exc)
    if output is not None:
        print(json.dumps(output, indent=indent), flush=True)
    return 0


async def _on_database(uri: str, name: str, command: Callable[[Database], Awaitable[Any]]) -> Any:
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000,
                                                                         tz_aware=True)
    except ConfigurationError as exc:
        raise CommandError(f"the MongoDB URI is not valid: {exc}") from None
    try:
        return await command(client[name])
    except PyMongoError:
        raise CommandError("cannot reach MongoDB within 5 s; check --mongodb-uri or --data-dir") from None
    finally:
        await client.close()


def running_suite_database(data_dir: Path) -> str | None:
    """The database URI a running ``sqm serve`` announced for ``data_dir``, if it still runs."""
    try:
        announced = json.loads((data_dir / SERVE_FILE).read_text())
        pid, uri = int(announced["pid"]), announced["database_uri"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(uri, str) or not uri.startswith("mongodb://") or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a suite that did not stop cleanly
    except PermissionError:
        pass  # alive, under another user
    return uri


@contextmanager
def _database_uri(args: argparse.Namespace) -> Iterator[str]:
    uri = args.mongodb_uri or os.environ.get("SQM_MONGODB_URI", "")
    if uri:
        yield uri
        return
    data_dir = Path(args.data_dir).resolve()
    running = running_suite_database(data_dir)
    if running is not None:
        yield running
        return
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"data dir {data_dir} cannot be created: {exc.strerror}") from None
    with EmbeddedDatabase(str(data_dir / "db"), log_path=data_dir / "database.log") as embedded:
        yield embedded.uri


async def _command(args: argparse.Namespace, database: Database, settings: AuthSettings) -> Any:
    issuer = TokenIssuer(settings)
    issuer.connect(database)
    await issuer.clients.ensure_indexes()
    if args.client_command == "add":
        try:
            created = await issuer.register(args.name, args.party, args.role, args.scope)
        except (ValueError, Conflict) as exc:
            raise CommandError(str(exc)) from None
        return {"client_id": created.client_id, "client_secret": created.client_secret}
    if args.client_command == "list":
        return [_listed(c) for c in await issuer.clients.list()]
    if not await issuer.clients.remove(args.client_id):
        raise CommandError(f"no client with id {args.client_id!r}; sqm client list shows them")
    return None


def _listed(client: dict[str, Any]) -> dict[str, Any]:
    return {"client_id": client["_id"], "name": client["name"], "party_id": client["party_id"],
            "role": client["role"], "scopes": client["scopes"], "created": client["created"].isoformat()}
