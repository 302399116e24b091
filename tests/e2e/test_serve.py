"""``sqm serve`` as a user runs it: a real process on a loopback port, the embedded database as
its child, stopped by signals, started again on the same data dir; and the bad configurations a
newcomer runs into, each reported in one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.sqm_process import (
    INVENTORY,
    READY_TIMEOUT,
    SQM,
    STOP_TIMEOUT,
    Server,
    StartSqm,
    accepts_connections,
    databases_using,
    environment,
    free_port,
    is_running,
)

BAD_CONFIG_TIMEOUT = 60.0  # a safety bound only


def assert_database_gone(server: Server) -> None:
    assert not is_running(server.database_pid), (
        f"the embedded database (pid {server.database_pid}) still runs after sqm serve exited"
    )
    assert not accepts_connections(server.database_port), (
        f"something still accepts connections on the embedded database's port {server.database_port}"
    )


# --- the value chain a user registers -----------------------------------------------------------


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{INVENTORY}/service", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def node_key(node: dict[str, Any]) -> tuple[str, str, int, tuple[str, ...]]:
    return node["@referredType"], node["id"], node["depth"], tuple(node["path"])


def snapshot(client: httpx.Client, ids: dict[str, str], hub_id: str) -> dict[str, Any]:
    """Everything a user can read back about the value chain, to compare across a restart."""
    services = {}
    for name, service_id in ids.items():
        response = client.get(f"{INVENTORY}/service/{service_id}")
        assert response.status_code == 200, response.text
        services[name] = {"etag": response.headers.get("etag"), "body": response.json()}
    listing = client.get(f"{INVENTORY}/service", params={"sort": "id"})
    suppliers = client.get(f"{INVENTORY}/service", params={"relatedParty.role": "supplier"})
    graphs = {
        "dependency": client.get(f"{INVENTORY}/service/{ids['vpn']}/dependency"),
        "serviceImpact": client.get(f"{INVENTORY}/service/{ids['core']}/impact"),
        "resourceImpact": client.get(f"{INVENTORY}/resourceImpact/link-a"),
        "hub": client.get(f"{INVENTORY}/hub/{hub_id}"),
    }
    for response in (listing, suppliers, *graphs.values()):
        assert response.status_code == 200, response.text
    return {
        "services": services,
        "listing": listing.json(),
        "listingTotal": listing.headers.get("x-total-count"),
        "suppliers": suppliers.json(),
        **{name: response.json() for name, response in graphs.items()},
    }


def test_value_chain_is_served_and_survives_a_restart(sqm: StartSqm, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = sqm(data_dir)
    assert server.ready_line == f"tmf-sqm ready on http://127.0.0.1:{server.port}"

    with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as client:
        health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "up"
        assert health.json()["database"]["status"] == "up"
        assert INVENTORY in [api["basePath"] for api in health.json()["apis"]]

        core = create(
            client,
            {"name": "IP core", "category": "RFS", "state": "active", "serviceSpecification": {"id": "spec-core"}},
        )
        access_a = create(
            client,
            {
                "name": "access site A",
                "category": "RFS",
                "state": "active",
                "serviceSpecification": {"id": "spec-access"},
                "relatedParty": [{"id": "partner-a", "role": "supplier", "@referredType": "Organization"}],
                "supportingResource": [{"id": "link-a", "name": "access link A"}],
            },
        )
        access_b = create(
            client,
            {
                "name": "access site B",
                "category": "RFS",
                "state": "active",
                "serviceSpecification": {"id": "spec-access"},
                "supportingResource": [{"id": "link-b", "name": "access link B"}],
            },
        )
        vpn = create(
            client,
            {
                "name": "ACME IP-VPN",
                "category": "CFS",
                "state": "active",
                "serviceSpecification": {"id": "spec-vpn"},
                "relatedParty": [{"id": "acme", "role": "customer", "@referredType": "Organization"}],
                "supportingService": [{"id": access_a["id"]}, {"id": access_b["id"]}, {"id": core["id"]}],
            },
        )
        ids = {"core": core["id"], "accessA": access_a["id"], "accessB": access_b["id"], "vpn": vpn["id"]}
        assert len(set(ids.values())) == 4
        assert vpn["href"] == f"{server.url}{INVENTORY}/service/{vpn['id']}"

        # A listener that never answers (.invalid never resolves); it is removed before any
        # change after the restart, so nothing is ever due to it.
        hub = client.post(f"{INVENTORY}/hub", json={"callback": "https://listener.invalid/tmf/events"})
        assert hub.status_code == 201, hub.text
        hub_id = hub.json()["id"]

        suppliers = client.get(f"{INVENTORY}/service", params={"relatedParty.role": "supplier"})
        assert suppliers.status_code == 200, suppliers.text
        assert [s["id"] for s in suppliers.json()] == [access_a["id"]]
        assert suppliers.headers["x-total-count"] == "1"

        dependency = client.get(f"{INVENTORY}/service/{vpn['id']}/dependency")
        assert dependency.status_code == 200, dependency.text
        graph = dependency.json()
        assert graph["direction"] == "dependency"
        assert (graph["root"]["id"], graph["root"]["depth"]) == (vpn["id"], 0)
        v, a, b, c = vpn["id"], access_a["id"], access_b["id"], core["id"]
        assert sorted(map(node_key, graph["node"])) == sorted(
            [
                ("Service", a, 1, (v, a)),
                ("Service", b, 1, (v, b)),
                ("Service", c, 1, (v, c)),
                ("Resource", "link-a", 2, (v, a, "link-a")),
                ("Resource", "link-b", 2, (v, b, "link-b")),
            ]
        )
        partner = next(n for n in graph["node"] if n["id"] == a)
        assert partner["relatedParty"][0]["id"] == "partner-a"

        impact = client.get(f"{INVENTORY}/resourceImpact/link-a")
        assert impact.status_code == 200, impact.text
        graph = impact.json()
        assert graph["direction"] == "impact"
        assert graph["root"]["id"] == "link-a"
        assert graph["root"]["@referredType"] == "Resource"
        assert sorted(map(node_key, graph["node"])) == sorted(
            [
                ("Service", a, 1, ("link-a", a)),
                ("Service", v, 2, ("link-a", a, v)),
            ]
        )
        assert [s["id"] for s in graph["customerFacingService"]] == [v]

        before = snapshot(client, ids, hub_id)
        assert sorted(s["id"] for s in before["listing"]) == sorted(ids.values())
        assert before["listingTotal"] == "4"
        assert all(s["etag"] for s in before["services"].values())

        # Stopped while the client still holds its keep-alive connection, as a user's would.
        assert server.stop(signal.SIGTERM) == 0, server.stderr()
    assert_database_gone(server)
    assert "Traceback" not in server.stderr()

    # Same data dir and same port, so that hrefs and everything else must read back unchanged.
    again = sqm(data_dir, port=server.port)
    assert again.database_pid != server.database_pid
    with httpx.Client(base_url=again.url, timeout=30, headers=again.operator_headers()) as client:
        assert client.get("/health").json()["status"] == "up"
        after = snapshot(client, ids, hub_id)
        assert after == before

        # Versions carried over: the old ETag still guards a write, which then moves it on.
        assert client.delete(f"{INVENTORY}/hub/{hub_id}").status_code == 204
        assert client.get(f"{INVENTORY}/hub/{hub_id}").status_code == 404

        old_etag = before["services"]["core"]["etag"]
        patched = client.patch(
            f"{INVENTORY}/service/{core['id']}",
            json={"name": "IP core 2"},
            headers={"If-Match": old_etag, "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "IP core 2"
        assert patched.headers["etag"] != old_etag
    assert again.stop(signal.SIGTERM) == 0, again.stderr()
    assert_database_gone(again)


def test_sigint_stops_server_and_embedded_database(sqm: StartSqm, tmp_path: Path) -> None:
    server = sqm(tmp_path / "data")
    assert accepts_connections(server.database_port)
    with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as client:
        assert client.get("/health").status_code == 200

    assert server.stop(signal.SIGINT) == 0, server.stderr()
    assert_database_gone(server)
    assert not accepts_connections(server.port)
    assert "Traceback" not in server.stderr()
    assert databases_using(tmp_path) == []
    # Nobody is to look for this database any more.
    assert not (tmp_path / "data" / "serve.json").exists()


def test_serve_json_tells_where_the_database_answers(sqm: StartSqm, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = sqm(data_dir)
    announced = json.loads((data_dir / "serve.json").read_text())
    assert announced == {"pid": server.process.pid,
                         "database_uri": f"mongodb://127.0.0.1:{server.database_port}/?directConnection=true"}
    # Another command reaches the database through it: a person registers a client there, as
    # README shows, which then gets a token from the server and calls an API with it.
    added = subprocess.run([str(SQM), "client", "add", "bss", "--party", "operator", "--role", "operator",
                            "--data-dir", str(data_dir)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           cwd=tmp_path, env=environment(), timeout=READY_TIMEOUT, check=False)
    assert added.returncode == 0, added.stderr
    credentials = json.loads(added.stdout)
    granted = httpx.post(f"{server.url}/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(credentials["client_id"], credentials["client_secret"]), timeout=30)
    assert granted.status_code == 200, granted.text
    assert granted.json()["token_type"].lower() == "bearer"
    headers = {"Authorization": f"Bearer {granted.json()['access_token']}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        created = create(client, {"name": "probe", "state": "active", "serviceSpecification": {"id": "spec"}})
        assert client.get(f"{INVENTORY}/service/{created['id']}").status_code == 200
    # The server's database holds what it stored.
    with MongoClient(announced["database_uri"], serverSelectionTimeoutMS=10_000) as database:
        assert database["sqm"]["service"].find_one({"_id": created["id"]}) is not None


def test_second_server_on_a_data_dir_in_use_is_refused_without_touching_it(sqm: StartSqm, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = sqm(data_dir)
    files_before = sorted(p.relative_to(data_dir) for p in (data_dir / "db").rglob("*"))
    log_before = (data_dir / "database.log").read_bytes()

    result = run_bad(tmp_path, "--port", str(free_port()), "--data-dir", str(data_dir),
                     running=(first.database_pid,))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sqm: data dir {data_dir} in use by another sqm serve (pid {first.process.pid})"]
    # No second database was started on the files: the log has no new line and the first
    # server still serves, announced as before.
    assert (data_dir / "database.log").read_bytes() == log_before
    assert sorted(p.relative_to(data_dir) for p in (data_dir / "db").rglob("*")) == files_before
    assert json.loads((data_dir / "serve.json").read_text())["pid"] == first.process.pid
    with httpx.Client(base_url=first.url, timeout=30, headers=first.operator_headers()) as client:
        assert client.get("/health").json()["status"] == "up"


def test_a_server_killed_alone_does_not_block_a_restart(sqm: StartSqm, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = sqm(data_dir)
    with httpx.Client(base_url=first.url, timeout=30, headers=first.operator_headers()) as client:
        created = create(client, {"name": "kept", "state": "active", "serviceSpecification": {"id": "spec"}})
    # Its database is told to stop when it dies, and holds the data dir until it has.
    first.process.kill()
    assert first.process.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL

    again = sqm(data_dir)
    # The stale serve.json was replaced.
    assert json.loads((data_dir / "serve.json").read_text())["pid"] == again.process.pid
    assert not is_running(first.database_pid)
    with httpx.Client(base_url=again.url, timeout=30, headers=again.operator_headers()) as client:
        assert client.get(f"{INVENTORY}/service/{created['id']}").status_code == 200


# --- bad configuration --------------------------------------------------------------------------


def run_bad(tmp_path: Path, *args: str, running: tuple[int, ...] = (), **settings: object,
            ) -> subprocess.CompletedProcess[str]:
    """Runs ``sqm serve`` with a configuration it must refuse; ``running`` are the embedded
    databases that were already running before and must be the only ones after."""
    try:
        result = subprocess.run(
            [str(SQM), "serve", "--host", "127.0.0.1", *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=environment(**settings),
            timeout=BAD_CONFIG_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sqm serve {' '.join(args)} still ran after {BAD_CONFIG_TIMEOUT:.0f} s: {exc.stderr!r}")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "ready" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    messages = [line for line in result.stderr.splitlines() if line.startswith("sqm: ")]
    assert len(messages) == 1, result.stderr
    # Nothing may keep running behind a failed start.
    assert sorted(databases_using(tmp_path)) == sorted(running)
    return result


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bad(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "data"))
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("sqm: ")
    assert str(port) in message
    assert "in use" in message


def test_unwritable_data_dir_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    data_dir = blocker / "sub"
    result = run_bad(tmp_path, "--port", str(free_port()), "--data-dir", str(data_dir))
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("sqm: ")
    assert str(data_dir) in message
    assert "data dir" in message
    assert blocker.read_text() == "not a directory"


def test_unreachable_mongodb_is_reported(tmp_path: Path) -> None:
    result = run_bad(
        tmp_path,
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--mongodb-uri",
        "mongodb://127.0.0.1:1/",
    )
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("sqm: ")
    assert "MongoDB" in message
    # With a URI given, no embedded database is started and the data dir is left alone.
    assert not (tmp_path / "data").exists()


# --- readiness ----------------------------------------------------------------------------------

ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"


def test_an_alarm_sent_right_after_the_ready_line_opens_a_problem(sqm: Any, tmp_path: Path) -> None:
    server = sqm(tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as client:
        # Nothing between the ready line and the alarm but the inventory entry it is about.
        link = create(client, {"name": "access", "category": "CFS", "state": "active",
                               "serviceSpecification": {"id": "spec-access"},
                               "supportingResource": [{"id": "link-ready"}]})
        raised = client.post(f"{ALARMS}/alarm", json={
            "alarmType": "communicationsAlarm", "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
            "alarmedObject": {"id": "link-ready", "@referredType": "Resource"}, "sourceSystemId": "nms",
            "state": "raised", "alarmRaisedTime": "2026-11-25T10:00:00Z"})
        assert raised.status_code == 201, raised.text

        deadline = time.monotonic() + READY_TIMEOUT  # a safety bound, not a timing
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            found = client.get(f"{PROBLEMS}/serviceProblem", params={"rootCauseResource.id": "link-ready"}).json()
            time.sleep(0.05)
        assert len(found) == 1, "the alarm raised right after the ready line opened no problem"
        assert [a["id"] for a in found[0]["underlyingAlarm"]] == [raised.json()["id"]]
        assert [s["id"] for s in found[0]["affectedService"]] == [link["id"]]

        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert {s["status"] for s in ready.json()["subscriptions"]} == {"ready"}
        assert client.get("/health/live").status_code == 200
    assert server.stop(signal.SIGTERM) == 0, server.stderr()
@pytest.mark.parametrize(("uri", "complaint"), [
    ("mongodb://127.0.0.1:1/?fsync=true&colour=blue", "Unknown option"),
    ("mongodb://127.0.0.1:1/?journal=maybe", "journal"),
    ("127.0.0.1:27017", "mongodb://"),
])
def test_bad_uri_in_the_environment_names_the_variable(tmp_path: Path, uri: str, complaint: str) -> None:
    result = run_bad(tmp_path, "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                     mongodb_uri=uri)
    # One line and nothing before it: no warning of the driver's.
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("sqm: SQM_MONGODB_URI is not a valid MongoDB URI: "), message
    assert complaint in message
    assert "--mongodb-uri" not in message
    assert not (tmp_path / "data").exists()


def test_bad_uri_in_the_flag_names_the_flag(tmp_path: Path) -> None:
    result = run_bad(tmp_path, "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                     "--mongodb-uri", "mongodb://127.0.0.1:1/?colour=blue",
                     mongodb_uri="mongodb://ignored.invalid/")
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("sqm: --mongodb-uri is not a valid MongoDB URI: "), message
    assert "SQM_MONGODB_URI" not in message


def test_unreachable_mongodb_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    result = run_bad(tmp_path, "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                     mongodb_uri="mongodb://127.0.0.1:1/")
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("sqm: cannot reach the MongoDB that SQM_MONGODB_URI names"), message
    assert "--mongodb-uri" not in message


def test_version() -> None:
    result = subprocess.run([str(SQM), "--version"], capture_output=True, text=True, timeout=BAD_CONFIG_TIMEOUT,
                            env=environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sqm {metadata.version('tmf-sqm')}"
