"""Schemathesis against every API document the suite serves: no 5xx, and every response
conforms to the document (status codes, headers, content types, bodies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.app import APIS, create_app
from services.tmf.embedded import free_port
from services.tmf.spec import load_document
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.server import serve


@pytest.fixture(scope="module")
def server(mongo_uri: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The suite's base URL and the operator's Authorization header."""
    port = free_port()
    suite = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}")
    with serve(create_app(suite), port) as base:
        yield base, bearer(suite)


def _contract_test(declaration):
    schema = schemathesis.openapi.from_dict(load_document(declaration.document))
    # A body over the size limit is refused with 413 before it is validated, which is a correct
    # rejection of invalid data: an array grown past its maxItems easily passes that limit.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]

    @schema.parametrize()
    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    def test(case, server):
        # Schema-valid is not always acceptable: references must name existing resources and
        # limit has a configured maximum, which a document cannot express. Everything else
        # (no 5xx, conformance of every response, rejection of invalid input) is checked.
        base, operator = server
        case.call_and_validate(base_url=f"{base}{declaration.base_path}", headers=operator,
                               excluded_checks=[positive_data_acceptance])

    return test


for _declaration in APIS:
    globals()[f"test_{_declaration.name}_conforms_to_its_document"] = _contract_test(_declaration)
