"""``sqm user add|list|remove`` on the suite's database by URI, run in this process: the
password from standard input, stored as an argon2id hash and checked by the console's store."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from console.store import ConsoleStore
from services.cli import main


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def user_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``sqm`` run in this process (the command's own code, without a new interpreter's start)."""

    def run(*args: str, database: str, stdin: str = "") -> Ran:
        monkeypatch.setenv("SQM_DATABASE", database)
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


async def password_ok(uri: str, database: str, name: str, password: str) -> bool:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        return await ConsoleStore(client[database]).check_password(name, password) is not None
    finally:
        await client.close()


def test_add_list_remove_with_the_password_from_stdin(mongo_uri: str, user_command: Any) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    added = user_command("user", "add", "pia", "--party", "partner-a", "--role", "partner", "--password-stdin",
                "--mongodb-uri", mongo_uri, database=database, stdin="a long enough secret\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"name": "pia", "party_id": "partner-a", "role": "partner"}
    with MongoClient(mongo_uri) as client:
        [record] = client[database]["console_user"].find()
    assert record["password_hash"].startswith("$argon2id$")
    assert "a long enough secret" not in json.dumps(record, default=str)
    assert asyncio.run(password_ok(mongo_uri, database, "pia", "a long enough secret"))
    assert not asyncio.run(password_ok(mongo_uri, database, "pia", "a long enough secreT"))

    again = user_command("user", "add", "pia", "--party", "partner-a", "--role", "partner", "--password-stdin",
                "--mongodb-uri", mongo_uri, database=database, stdin="another secret\n")
    assert again.returncode == 2 and "exists already" in again.stderr

    listed = user_command("user", "list", "--mongodb-uri", mongo_uri, database=database)
    assert [u["name"] for u in json.loads(listed.stdout)] == ["pia"]
    assert "password" not in listed.stdout

    assert user_command("user", "remove", "pia", "--mongodb-uri", mongo_uri, database=database).returncode == 0
    gone = user_command("user", "remove", "pia", "--mongodb-uri", mongo_uri, database=database)
    assert gone.returncode == 2 and "no user named" in gone.stderr


def test_bad_input_is_one_line_and_exit_code_2(mongo_uri: str, user_command: Any) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    short = user_command("user", "add", "x", "--party", "acme", "--role", "customer", "--password-stdin",
                "--mongodb-uri", mongo_uri, database=database, stdin="short\n")
    assert short.returncode == 2 and short.stderr.startswith("sqm: the password must be")
    party = user_command("user", "add", "x", "--party", "bad party", "--role", "customer", "--password-stdin",
                "--mongodb-uri", mongo_uri, database=database, stdin="long enough password\n")
    assert party.returncode == 2 and "party id" in party.stderr
