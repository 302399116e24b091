"""``sqm client add|list|remove`` as a person runs them: a separate process on the suite's
database, whether given by URI, announced by a running suite in ``serve.json``, or started
from the data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from starlette.testclient import TestClient

from services.cli import main
from services.tmf.auth import AuthSettings, TokenIssuer
from services.tmf.auth.issuer import issuer_app

# Only a stall of minutes fails this: starting the embedded database on a busy machine takes seconds.
TIMEOUT = 300


def sqm(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SQM_")}
    environment["SQM_DATABASE"] = database
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=TIMEOUT, check=False)


def stored(uri: str, database: str) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        return list(client[database]["oauth_client"].find())


@pytest.fixture
def database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token_endpoint(mongo_uri: str, database: str) -> Iterator[TestClient]:
    issuer = TokenIssuer(AuthSettings(issuer="http://testserver"))
    with TestClient(issuer_app(issuer, mongo_uri, database), base_url="http://testserver") as client:
        yield client


def only_json_object(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    document = json.loads(lines[0])
    assert isinstance(document, dict)
    return document


def test_add_list_remove_against_a_mongodb_uri(mongo_uri: str, database: str, token_endpoint: TestClient) -> None:
    added = sqm("client", "add", "acme-bss", "--party", "acme", "--role", "customer", "--mongodb-uri", mongo_uri,
                database=database)
    assert added.returncode == 0, added.stderr
    credentials = only_json_object(added.stdout)
    assert set(credentials) == {"client_id", "client_secret"}
    client_id, secret = credentials["client_id"], credentials["client_secret"]

    # Stored hashed: the secret appears nowhere in the stored document.
    [document] = stored(mongo_uri, database)
    assert document["_id"] == client_id
    assert secret not in json.dumps(document, default=str)
    assert document["secret_hash"].startswith("scrypt$")

    listed = sqm("client", "list", "--mongodb-uri", mongo_uri, database=database)
    assert listed.returncode == 0, listed.stderr
    clients = json.loads(listed.stdout)
    assert [(c["client_id"], c["name"], c["party_id"], c["role"]) for c in clients] == [
        (client_id, "acme-bss", "acme", "customer")]
    assert secret not in listed.stdout and "secret_hash" not in listed.stdout

    form = {"grant_type": "client_credentials"}
    response = token_endpoint.post("/oauth2/token", data=form, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    assert response.json()["scope"].split() == [
        "serviceInventory.read", "slaManagement.read", "alarmManagement.read", "serviceProblemManagement.read"]

    removed = sqm("client", "remove", client_id, "--mongodb-uri", mongo_uri, database=database)
    assert removed.returncode == 0, removed.stderr
    assert stored(mongo_uri, database) == []
    response = token_endpoint.post("/oauth2/token", data=form, auth=(client_id, secret))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"

    again = sqm("client", "remove", client_id, "--mongodb-uri", mongo_uri, database=database)
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr.splitlines() == [f"sqm: no client with id '{client_id}'; sqm client list shows them"]


def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, database: str,
               *args: str) -> tuple[int, str, str]:
    """The same command without a new interpreter, for the cases that are about arguments."""
    monkeypatch.setenv("SQM_DATABASE", database)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scopes_given_on_the_command_line_replace_the_defaults(
        mongo_uri: str, database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = in_process(capsys, monkeypatch, database, "client", "add", "nms", "--party", "partner-a",
                                "--role", "partner", "--scope", "alarmManagement.write", "--scope",
                                "alarmManagement.read", "--mongodb-uri", mongo_uri)
    assert code == 0, err
    [document] = stored(mongo_uri, database)
    assert document["_id"] == only_json_object(out)["client_id"]
    assert document["scopes"] == ["alarmManagement.read", "alarmManagement.write"]
    code, out, err = in_process(capsys, monkeypatch, database, "client", "add", "nms", "--party", "partner-a",
                                "--role", "partner", "--mongodb-uri", mongo_uri)
    assert code == 2 and out == ""
    assert err.splitlines() == ["sqm: a client named 'nms' already exists; remove it first or choose another name"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--scope", "inventory.write"], "sqm: unknown scope inventory.write"),
    (["--party", "$bad"], "sqm: the party id must be"),
])
def test_bad_arguments_are_one_line_and_touch_no_database(
        tmp_path: Path, args: list[str], fragment: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = in_process(capsys, monkeypatch, "unused", "client", "add", "x", "--role", "partner",
                                "--party", "p", *args, "--data-dir", str(tmp_path / "d"))
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(fragment)
    assert not (tmp_path / "d").exists()


def test_an_unknown_role_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["client", "add", "x", "--party", "p", "--role", "admin"])
    assert exited.value.code == 2
    assert "invalid choice: 'admin'" in capsys.readouterr().err


def test_a_running_suite_is_reached_through_serve_json(tmp_path: Path, mongo_uri: str, database: str) -> None:
    # This test's own process stands for the running suite: its pid is alive.
    (tmp_path / "serve.json").write_text(json.dumps({"pid": os.getpid(), "database_uri": mongo_uri}))
    added = sqm("client", "add", "bss", "--party", "acme", "--role", "operator", "--data-dir", str(tmp_path),
                database=database)
    assert added.returncode == 0, added.stderr
    assert [d["_id"] for d in stored(mongo_uri, database)] == [only_json_object(added.stdout)["client_id"]]
    assert not (tmp_path / "db").exists()  # no embedded database was started


def test_without_a_running_suite_the_embedded_database_of_the_data_dir_is_used(
        tmp_path: Path, mongo_uri: str, database: str) -> None:
    # A suite that stopped without cleaning up left its serve.json; that pid is gone.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True, timeout=TIMEOUT)
    (tmp_path / "serve.json").write_text(json.dumps({"pid": int(finished.stdout), "database_uri": mongo_uri}))
    added = sqm("client", "add", "bss", "--party", "acme", "--role", "partner", "--data-dir", str(tmp_path),
                database=database)
    assert added.returncode == 0, added.stderr
    client_id = only_json_object(added.stdout)["client_id"]
    assert stored(mongo_uri, database) == []
    assert (tmp_path / "db").is_dir()
    # The client is in the data dir's database, where sqm serve will find it.
    listed = sqm("client", "list", "--data-dir", str(tmp_path), database=database)
    assert listed.returncode == 0, listed.stderr
    assert [c["client_id"] for c in json.loads(listed.stdout)] == [client_id]
