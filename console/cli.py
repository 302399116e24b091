"""``sqm user add|list|remove``: the people who log in to the console (same database handling
as ``sqm client``: ``--mongodb-uri``, or the embedded database of ``--data-dir``)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from services.clients import CommandError, Database, command_failed, database_options, run_on_database
from services.tmf.auth.identity import CLIENT_ROLES

from .store import ConsoleStore, UserExists, check_user


def add_parser(commands: Any) -> None:
    """Add ``user`` with its subcommands to the ``sqm`` command's subparsers."""
    user = commands.add_parser("user", help="manage the people who log in to the console at /console")
    actions = user.add_subparsers(dest="user_command", required=True)
    common = database_options()
    add = actions.add_parser("add", parents=[common], help="add a person; the password is asked for")
    add.add_argument("name", help="the login name")
    add.add_argument("--party", required=True, help="the party the person acts for")
    add.add_argument("--role", required=True, choices=CLIENT_ROLES, help="the party's role")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input instead of a prompt")
    actions.add_parser("list", parents=[common], help="list the people as JSON (without passwords)")
    remove = actions.add_parser("remove", parents=[common], help="remove a person and end their sessions")
    remove.add_argument("name", help="the login name")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise CommandError("the passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    """Carry out a ``sqm user`` subcommand; 0 on success, 2 with one ``sqm:`` line otherwise."""
    password = ""
    if args.user_command == "add":
        try:
            password = _password(args)
            check_user(args.name, args.party, args.role, password)
        except (ValueError, CommandError) as exc:
            return command_failed(exc)
    return run_on_database(args, lambda database: _command(args, database, password))


async def _command(args: argparse.Namespace, database: Database, password: str) -> Any:
    store = ConsoleStore(database)
    if args.user_command == "add":
        try:
            await store.add_user(args.name, args.party, args.role, password)
        except (ValueError, UserExists) as exc:
            raise CommandError(str(exc)) from None
        return {"name": args.name, "party_id": args.party, "role": args.role}
    if args.user_command == "list":
        return await store.list_users()
    if not await store.remove_user(args.name):
        raise CommandError(f"no user named {args.name!r}; sqm user list shows them")
    return None
