"""Request parameter validation (path, query, header, cookie) with schemas compiled once.

Connexion's own parameter validator deep-copies each parameter's definition and builds a new
JSON Schema validator for it on every request; the answers here are the same (the same
validator class, format checker and first error), from a validator made once per parameter
definition the first time it is used.
"""

from __future__ import annotations

from typing import Any

from connexion.utils import is_null, is_nullable
from connexion.validators.parameter import ParameterValidator
from jsonschema import Draft4Validator

_FORMATS = Draft4Validator.FORMAT_CHECKER
# id(definition) -> (definition, its validator). The definitions are the operations' own
# dictionaries, which live as long as the app; holding them keeps their ids from being reused.
_COMPILED: dict[int, tuple[dict[str, Any], Draft4Validator]] = {}


def compiled(definition: dict[str, Any]) -> Draft4Validator:
    """The validator of one parameter definition's schema, made on first use."""
    entry = _COMPILED.get(id(definition))
    if entry is None or entry[0] is not definition:
        schema = definition.get("schema", definition)
        entry = (definition, Draft4Validator(schema, format_checker=_FORMATS))
        _COMPILED[id(definition)] = entry
    return entry[1]


class CompiledParameterValidator(ParameterValidator):  # type: ignore[misc]
    """Connexion's parameter checks, with each definition's schema validator made once."""

    # Connexion keeps its per-operation bookkeeping in the constructor, which it calls on every
    # request: the grouping of an operation's parameters by location is made once per list too.
    _grouped: dict[int, tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]] = {}

    def __init__(self, parameters: list[dict[str, Any]], uri_parser: Any, strict_validation: bool = False,
                 security_query_params: list[str] | None = None) -> None:
        entry = self._grouped.get(id(parameters))
        if entry is None or entry[0] is not parameters:
            grouped: dict[str, list[dict[str, Any]]] = {}
            for parameter in parameters:
                grouped.setdefault(parameter["in"], []).append(parameter)
            entry = (parameters, grouped)
            self._grouped[id(parameters)] = entry
        self.parameters = entry[1]
        self.uri_parser = uri_parser
        self.strict_validation = strict_validation
        self.security_query_params = set(security_query_params or [])

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> str | None:
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            error = next(compiled(param).iter_errors(value), None)
            return None if error is None else str(error)
        if param.get("required"):
            return f"Missing {parameter_type} parameter '{param['name']}'"
        return None
