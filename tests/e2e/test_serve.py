"""``sqm serve`` as a user runs it: a real process on a loopback port, the embedded database as
its child, stopped by signals, started again on the same data dir; and the bad configurations a
newcomer runs into, each reported in one line."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

SQM = Path(sys.executable).parent / "sqm"
INVENTORY = "/tmf-api/serviceInventory/v4"
DATABASE_EXECUTABLE = "secantusd-py"
# Safety bounds only: nothing here asserts how fast anything is.
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0
BAD_CONFIG_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes, read from /proc (psutil is not a dependency) ------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def is_running(pid: int, executable: str = DATABASE_EXECUTABLE) -> bool:
    """Whether ``pid`` is still a live (not zombie) process of ``executable``."""
    stat = _stat(pid)
    if stat is None or stat[0] in {"Z", "X"}:
        return False
    return any(executable in part for part in _cmdline(pid))


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


def option(pid: int, name: str) -> str:
    args = _cmdline(pid)
    return args[args.index(name) + 1]


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture
def sqm(tmp_path: Path) -> Iterator[Any]:
    """Starts ``sqm serve`` and waits for its ready line; whatever is still running at the end of
    the test is stopped, and the test fails if an embedded database outlived its server."""
    started: list[Server] = []

    def start(data_dir: Path, port: int | None = None) -> Server:
        port = port or free_port()
        stderr_path = tmp_path / f"sqm-{len(started)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [str(SQM), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=tmp_path,
                env=_environment(),
            )
        server = Server(process, port, stderr_path)
        started.append(server)
        server.reader = threading.Thread(target=_pump, args=(process.stdout, server.lines), daemon=True)
        server.reader.start()
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
            # Shown by pytest only when the test fails: the server's log explains a 500.
            print(f"--- stderr of sqm serve on port {server.port} ---\n{server.stderr()[-20_000:]}")
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait(timeout=STOP_TIMEOUT)
            # The reader ends at EOF, which the exited process has sent; closing the pipe under
            # a reader still inside read() would raise in its thread.
            reader = server.reader
            if reader is not None:
                reader.join(timeout=STOP_TIMEOUT)
            if server.process.stdout is not None and not (reader and reader.is_alive()):
                server.process.stdout.close()
            if server.database_pid and is_running(server.database_pid):
                leftovers.append(server.database_pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.database_pid, signal.SIGKILL)
        assert not leftovers, f"embedded databases {leftovers} outlived their sqm serve"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


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


def test_value_chain_is_served_and_survives_a_restart(sqm: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = sqm(data_dir)
    assert server.ready_line == f"tmf-sqm ready on http://127.0.0.1:{server.port}"

    with httpx.Client(base_url=server.url, timeout=30) as client:
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
    with httpx.Client(base_url=again.url, timeout=30) as client:
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


def test_sigint_stops_server_and_embedded_database(sqm: Any, tmp_path: Path) -> None:
    server = sqm(tmp_path / "data")
    assert accepts_connections(server.database_port)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200

    assert server.stop(signal.SIGINT) == 0, server.stderr()
    assert_database_gone(server)
    assert not accepts_connections(server.port)
    assert "Traceback" not in server.stderr()
    assert databases_using(tmp_path) == []


# --- bad configuration --------------------------------------------------------------------------


def run_bad(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [str(SQM), "serve", "--host", "127.0.0.1", *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=_environment(),
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
    assert databases_using(tmp_path) == []
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
    with httpx.Client(base_url=server.url, timeout=30) as client:
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
