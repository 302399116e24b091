"""The TMF Error body and the handlers that produce it (services/tmf/errors.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from connexion.exceptions import ProblemException
from starlette.exceptions import HTTPException

from services.tmf.errors import (
    JSON,
    MAX_MESSAGE,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    TmfError,
    UnsupportedMediaType,
    error_body,
    error_bytes,
    handle_problem,
    handle_tmf_error,
    handle_unexpected,
    http_exception_handler,
)
from services.tmf.repository import QueryTooExpensive

ERROR_KEYS = {"code", "reason", "message", "status", "@type"}


def request(path: str = "/tmf-api/serviceInventory/v4/service", method: str = "GET") -> Any:
    # The handlers only read the path and the method.
    return SimpleNamespace(url=SimpleNamespace(path=path), method=method)


def decoded(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == JSON
    body: dict[str, Any] = json.loads(response.body)
    assert set(body) == ERROR_KEYS
    assert body["status"] == str(response.status_code)
    assert body["@type"] == "Error"
    return body


def test_error_body_shape() -> None:
    assert error_body(404, "Not found", "no service with id 'x'") == {
        "code": "404", "reason": "Not found", "message": "no service with id 'x'", "status": "404",
        "@type": "Error",
    }


def test_error_body_with_own_code() -> None:
    body = error_body(400, "Bad request", "m", code="SQM-17")
    assert body["code"] == "SQM-17"
    assert body["status"] == "400"


def test_error_body_bounds_the_message() -> None:
    assert error_body(400, "Bad request", "x" * MAX_MESSAGE)["message"] == "x" * MAX_MESSAGE
    long = error_body(400, "Bad request", "y" * (MAX_MESSAGE * 5))["message"]
    assert len(long) == MAX_MESSAGE
    assert long.startswith("y" * 10)
    assert long.endswith("…")


def test_error_bytes_is_the_body_as_json() -> None:
    assert json.loads(error_bytes(413, "Payload too large", "less")) == error_body(413, "Payload too large", "less")


@pytest.mark.parametrize(("cls", "status", "reason"), [
    (TmfError, 400, "Bad request"),
    (BadRequest, 400, "Bad request"),
    (NotFound, 404, "Not found"),
    (Conflict, 409, "Conflict"),
    (PreconditionFailed, 412, "Precondition failed"),
    (PayloadTooLarge, 413, "Payload too large"),
    (UnsupportedMediaType, 415, "Unsupported media type"),
    (QueryTooExpensive, 400, "Query too expensive"),
])
def test_error_classes(cls: type[TmfError], status: int, reason: str) -> None:
    error = cls("what to fix")
    assert isinstance(error, TmfError)
    assert (error.status, error.reason, error.code, error.message) == (status, reason, str(status), "what to fix")
    assert str(error) == "what to fix"
    assert error.body() == error_body(status, reason, "what to fix")


def test_error_overrides() -> None:
    error = BadRequest("m", status=422, reason="Unprocessable", code="X1")
    assert error.body() == {"code": "X1", "reason": "Unprocessable", "message": "m", "status": "422", "@type": "Error"}
    # Overrides stay on the instance.
    assert BadRequest("n").status == 400


def test_handle_tmf_error() -> None:
    response = handle_tmf_error(request(), Conflict("version 3 is stale"))
    assert response.status_code == 409
    assert decoded(response) == error_body(409, "Conflict", "version 3 is stale")


def test_handle_problem_uses_the_detail_as_message() -> None:
    problem = ProblemException(status=400, title="Bad Request", detail="'state' is a required property")
    response = handle_problem(request(), problem)
    assert response.status_code == 400
    body = decoded(response)
    assert body["reason"] == "Bad Request"
    assert body["message"] == "'state' is a required property"


def test_handle_problem_415_says_what_to_send() -> None:
    problem = ProblemException(status=415, title="Unsupported Media Type", detail="Invalid Content-type (text/plain)")
    body = decoded(handle_problem(request(), problem))
    assert body["status"] == "415"
    assert body["message"].startswith("Invalid Content-type (text/plain).")
    assert "media types the API document lists" in body["message"]


def test_handle_problem_without_detail_or_title() -> None:
    body = decoded(handle_problem(request(), ProblemException(status=406)))
    assert body["message"] == body["reason"] == "Not Acceptable"


def test_http_404_names_the_path() -> None:
    handle = http_exception_handler(lambda path: ["GET"])
    response = handle(request("/nowhere"), HTTPException(404))
    assert response.status_code == 404
    body = decoded(response)
    assert body["reason"] == "Not Found"
    assert "/nowhere" in body["message"]


def test_http_405_lists_the_documented_methods() -> None:
    seen: list[str] = []

    def allowed(path: str) -> list[str]:
        seen.append(path)
        return ["GET", "PATCH", "DELETE"]

    response = http_exception_handler(allowed)(request("/svc/1", "PUT"), HTTPException(405))
    assert seen == ["/svc/1"]
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, PATCH, DELETE"
    assert decoded(response)["message"] == "PUT is not allowed on /svc/1; use GET, PATCH, DELETE"


def test_other_http_errors_keep_their_detail_and_headers() -> None:
    handle = http_exception_handler(lambda path: [])
    response = handle(request(), HTTPException(429, detail="slow down", headers={"Retry-After": "5"}))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    body = decoded(response)
    assert body["message"] == "slow down"
    assert body["reason"] == "Too Many Requests"


def test_unexpected_errors_do_not_leak_details() -> None:
    try:
        raise RuntimeError("secret connection string mongodb://user:pw@host")
    except RuntimeError as exc:
        response = handle_unexpected(request(), exc)
    assert response.status_code == 500
    body = decoded(response)
    assert "secret" not in response.body.decode()
    assert body["reason"] == "Internal error"
