"""Request body validation that reports every problem at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator
from jsonschema import Draft4Validator, ValidationError, validators

MAX_REPORTED = 10


def error_path(parts: Iterable[Any]) -> str:
    """``[3].observedAt`` for the attribute observedAt of the fourth item."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def _required_unless_default(validator: Any, required: Any, instance: Any, schema: dict[str, Any]) -> Any:
    """In a request, a required attribute whose schema declares a default may be left out: the
    server stores the default (``services.tmf.patch.fill_defaults``). Responses always carry it."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    for name in required:
        if name not in instance and "default" not in properties.get(name, {}):
            yield ValidationError(f"{name!r} is a required property")


RequestValidator = validators.extend(Draft4RequestValidator, {"required": _required_unless_default})


class ThoroughJSONBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Connexion stops at the first schema error; a client sending a batch of samples wants to
    fix all of them in one go, so every error (up to ten) is listed with its path."""

    @property
    def _validator(self) -> Any:
        return RequestValidator(self._schema, format_checker=Draft4Validator.FORMAT_CHECKER)

    def _validate(self, body: Any) -> dict[str, Any] | None:
        if not self._nullable and body is None:
            raise BadRequestProblem(detail="Request body must not be empty")
        errors = sorted(self._validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            shown = [f"{error_path(e.absolute_path)}: {e.message}" for e in errors[:MAX_REPORTED]]
            more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
            raise BadRequestProblem(detail="; ".join(shown) + more)
        return None


VALIDATORS = {"body": MediaTypeDict({"*/*json": ThoroughJSONBodyValidator})}
