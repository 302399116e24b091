"""The documents as the running suite serves them: every create example is accepted as written
(with the ids of resources it refers to replaced by ones that exist), and a client generated from
each document, the way an integrator would generate one, names its types after the document's
schemas and works against the suite."""

from __future__ import annotations

import copy
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpointer
import pytest

from services.app import APIS, create_app
from services.tmf.embedded import free_port
from services.tmf.settings import Settings
from services.tmf.spec import load_document
from tests.conftest import make_settings
from tests.support.auth import token
from tests.support.listener import Listener
from tests.support.server import serve

BASE = {d.name: d.base_path for d in APIS}
# Event intakes take only signed events from a hub; they have no example to try.
LISTENER_PATH = re.compile(r"^/listener/")

# Every POST answering 201, in an order where what an example refers to exists first. Each entry
# maps a JSON pointer into the example to the (API, operation, n-th call) whose result's id goes
# there; "{id}" is the path parameter and "listener" a loopback listener's URL.
PLAN: list[tuple[str, str, dict[str, Any]]] = [
    ("serviceInventory", "createService", {}),
    ("slaManagement", "createServiceLevelAgreement", {"/relatedEntity/0/id": ("serviceInventory", "createService", 0)}),
    ("slaManagement", "createMeasurement", {f"/{i}/service/id": ("serviceInventory", "createService", 0)
                                            for i in range(3)}),
    ("slaManagement", "createSLAEvaluation", {"/sla/id": ("slaManagement", "createServiceLevelAgreement", 0)}),
    ("alarmManagement", "createAlarm", {}),
    ("serviceProblemManagement", "createServiceProblem",
     {"/affectedService/0/id": ("serviceInventory", "createService", 0)}),
    ("serviceProblemManagement", "createServiceProblem",
     {"/affectedService/0/id": ("serviceInventory", "createService", 0)}),
    ("serviceProblemManagement", "createProblemUnacknowledgement",
     {"/problem/0/id": ("serviceProblemManagement", "createServiceProblem", 0)}),
    ("serviceProblemManagement", "createProblemAcknowledgement",
     {"/problem/0/id": ("serviceProblemManagement", "createServiceProblem", 0)}),
    ("serviceProblemManagement", "createProblemGroup",
     {"/parentProblem/id": ("serviceProblemManagement", "createServiceProblem", 0),
      "/childProblem/0/id": ("serviceProblemManagement", "createServiceProblem", 1)}),
    ("serviceProblemManagement", "createProblemUngroup",
     {"/parentProblem/id": ("serviceProblemManagement", "createServiceProblem", 0),
      "/childProblem/0/id": ("serviceProblemManagement", "createServiceProblem", 1)}),
    *[step for api in BASE for step in [
        (api, "createHub", {"/callback": "listener"}),
        (api, "createHubRedelivery", {"{id}": (api, "createHub", 0)}),
        (api, "createHubReplay", {"{id}": (api, "createHub", 0)}),
    ]],
]

# The resource types an integrator reaches for first; the generic check below covers the rest.
MAIN_TYPES = {
    "serviceInventory": {"Service", "ServiceCreate", "ServiceUpdate", "ServiceGraph"},
    "slaManagement": {"ServiceLevelAgreement", "ServiceLevelAgreementCreate", "ServiceLevelAgreementUpdate",
                      "SLAViolation", "SLAEvaluation", "Rebate", "SettlementStatement", "Measurement"},
    "alarmManagement": {"Alarm", "AlarmCreate", "AlarmUpdate"},
    "serviceProblemManagement": {"ServiceProblem", "ServiceProblemCreate", "ServiceProblemUpdate",
                                 "ProblemAcknowledgement", "ProblemGroup"},
}
COMMON_TYPES = {"Error", "EventSubscription", "EventSubscriptionInput", "JsonPatchOperation"}
# What a generator makes of an inlined response or body: one anonymous type per operation.
ANONYMOUS = re.compile(r"Response\d{3}|Body$")


@pytest.fixture(scope="module")
def suite_settings(mongo_uri: str) -> Settings:
    port = free_port()
    # The SLA service checks covered services against the inventory, as it would in production.
    return make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}",
                         inventory_url=f"http://127.0.0.1:{port}{BASE['serviceInventory']}")


@pytest.fixture(scope="module")
def server(suite_settings: Settings) -> Iterator[str]:
    with serve(create_app(suite_settings), int(suite_settings.public_url.rsplit(":", 1)[1])) as base:
        yield base


@pytest.fixture(scope="module")
def operator_token(suite_settings: Settings, server: str) -> str:
    return token(suite_settings)


@pytest.fixture(scope="module")
def documents(server: str) -> dict[str, dict[str, Any]]:
    served = {}
    for api, base in BASE.items():
        response = httpx.get(f"{server}{base}/openapi.json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        served[api] = response.json()
    return served


def _snake(name: str) -> str:
    """createSLAEvaluation -> create_sla_evaluation, as the generator names modules."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _schema_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _creates(document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """operationId -> (path, JSON media type) of every POST answering 201, event intakes aside."""
    found = {}
    for path, operations in document["paths"].items():
        post = operations.get("post")
        if post and "201" in post["responses"] and not LISTENER_PATH.match(path):
            found[post["operationId"]] = (path, post["requestBody"]["content"]["application/json"])
    return found


def _fill(media: dict[str, Any], path: str, references: dict[str, Any],
          created: dict[tuple[str, str], list[str]], listener_url: str = "") -> tuple[Any, str]:
    """The example of ``media`` and the operation's path, with the references put in."""
    body = copy.deepcopy(media["example"])
    for pointer, source in references.items():
        value = listener_url if source == "listener" else created[source[:2]][source[2]]
        if pointer == "{id}":
            path = path.replace("{id}", value)
        else:
            jsonpointer.set_pointer(body, pointer, value)
    return body, path


def test_documents_are_served_as_loaded_with_refs_kept(documents):
    for declaration in APIS:
        served = documents[declaration.name]
        loaded = json.loads(json.dumps(load_document(declaration.document, with_hub=declaration.has_hub)))
        assert served["servers"] == [{"url": declaration.base_path}]
        assert {k: v for k, v in served.items() if k != "servers"} == {
            k: v for k, v in loaded.items() if k != "servers"}
        create = next(op for op in (ops.get("post") for ops in served["paths"].values()) if op)
        assert "$ref" in create["responses"]["400"]


def test_every_create_example_is_accepted(server, documents, operator_token):
    creates = {(api, op): found for api in BASE for op, found in _creates(documents[api]).items()}
    missing = sorted(f"{api}.{op}" for (api, op), (_, media) in creates.items() if "example" not in media)
    assert not missing, f"create bodies without an example: {missing}"
    planned = {(api, op) for api, op, _ in PLAN}
    assert planned == set(creates), "PLAN must try every create example exactly as the documents list them"

    listener = Listener().start()
    created: dict[tuple[str, str], list[str]] = {}
    try:
        with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {operator_token}"}) as client:
            for api, operation_id, references in PLAN:
                path, media = creates[(api, operation_id)]
                body, path = _fill(media, path, references, created, listener.url)
                response = client.post(f"{BASE[api]}{path}", json=body)
                assert response.status_code == 201, f"{api}.{operation_id}: {response.text}"
                answer = response.json()
                created.setdefault((api, operation_id), []).append(answer.get("id", answer.get("subscription")))
            for api in BASE:
                assert client.delete(f"{BASE[api]}/hub/{created[(api, 'createHub')][0]}").status_code == 204
    finally:
        listener.stop()


def _generate(document: dict[str, Any], folder: Path, package: str) -> Path:
    source = folder / "document.json"
    source.write_text(json.dumps(document), encoding="utf-8")
    config = folder / "generator.yaml"
    config.write_text("post_hooks: []\n", encoding="utf-8")  # no formatter is installed to run
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(source),
         "--output-path", str(folder / package), "--meta", "none", "--config", str(config)],
        capture_output=True, text=True, timeout=600, check=False)  # a safety bound against a stall
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The generator reports every operation or type it had to skip as a warning.
    assert "warning" not in output.lower(), output
    return folder / package


def _named_in_bodies_and_responses(document: dict[str, Any]) -> set[str]:
    """Object schemas that request bodies and responses refer to by name (an array's items
    when the named schema is an array, as the JSON Patch body is)."""
    names = set()
    responses = document["components"].get("responses", {})
    for operations in document["paths"].values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            media = list(operation.get("requestBody", {}).get("content", {}).values())
            for answer in operation["responses"].values():
                answer = responses[_schema_name(answer["$ref"])] if "$ref" in answer else answer
                media += answer.get("content", {}).values()
            for entry in media:
                schema = entry["schema"]
                while "$ref" in schema or schema.get("type") == "array":
                    if "$ref" in schema:
                        name = _schema_name(schema["$ref"])
                        schema = document["components"]["schemas"][name]
                        if schema.get("type") != "array":
                            names.add(name)
                            break
                    else:
                        schema = schema["items"]
    return names


@pytest.mark.parametrize("api", list(BASE))
def test_a_generated_client_names_the_document_types(api, documents, server, operator_token, tmp_path,
                                                    monkeypatch):
    document = documents[api]
    package = _snake(api) + "_client"
    generated = _generate(document, tmp_path, package)

    models = {path.stem for path in (generated / "models").glob("*.py")} - {"__init__"}
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(f"{package}.models")
    classes = set(module.__all__)
    expected = {name.replace("_", "") for name in _named_in_bodies_and_responses(document)}
    assert MAIN_TYPES[api] | COMMON_TYPES <= expected
    assert expected <= classes, f"not generated under their names: {sorted(expected - classes)}"
    assert not [name for name in classes if ANONYMOUS.search(name)]
    # Every type stands for a schema of the document, or an enum or nested object inside one.
    assert len(models) <= 2 * len(document["components"]["schemas"])

    operations = [op["operationId"] for ops in document["paths"].values()
                  for method, op in ops.items() if method in {"get", "post", "patch", "delete"}]
    modules = {path.stem for path in (generated / "api").rglob("*.py")} - {"__init__"}
    snake = {_snake(op) for op in operations}
    assert snake <= modules, f"operations without a function: {sorted(snake - modules)}"
    functions = {}
    for path in (generated / "api").rglob("*.py"):
        functions[path.stem] = importlib.import_module(
            ".".join((package, *path.relative_to(generated).with_suffix("").parts)))

    # The client works: the API's first create example (its main resource) goes through it, once
    # what it refers to exists, and comes back, and reads back, as the document's named type.
    _, operation_id, references = next(step for step in PLAN if step[0] == api)
    created: dict[tuple[str, str], list[str]] = {}
    for source in sorted(set(references.values())):
        prerequisite = _creates(documents[source[0]])[source[1]][1]["example"]
        response = httpx.post(f"{server}{BASE[source[0]]}{_creates(documents[source[0]])[source[1]][0]}",
                              json=prerequisite, headers={"Authorization": f"Bearer {operator_token}"})
        assert response.status_code == 201, response.text
        created.setdefault(source[:2], []).append(response.json()["id"])
    path, media = _creates(document)[operation_id]
    body, _ = _fill(media, path, references, created)
    body_type = getattr(module, _schema_name(media["schema"]["$ref"]).replace("_", ""))
    answer = document["paths"][path]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    answer_type = getattr(module, _schema_name(answer["$ref"]).replace("_", ""))
    # The documents declare the OAuth2 scheme, so the generator makes a client that sends a token.
    with importlib.import_module(f"{package}.client").AuthenticatedClient(
            base_url=f"{server}{BASE[api]}", token=operator_token, raise_on_unexpected_status=True) as client:
        result = functions[_snake(operation_id)].sync(client=client, body=body_type.from_dict(body))
        assert isinstance(result, answer_type), result
        read = functions[_snake(operation_id).replace("create_", "retrieve_", 1)].sync(result.id, client=client)
        assert isinstance(read, answer_type), read
        assert read.to_dict() == result.to_dict()
    for name in list(sys.modules):
        if name == package or name.startswith(f"{package}."):
            del sys.modules[name]
