"""Request body validation that reports every problem at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.validators import JSONRequestBodyValidator

MAX_REPORTED = 10


def error_path(parts: Iterable[Any]) -> str:
    """``[3].observedAt`` for the attribute observedAt of the fourth item."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


class ThoroughJSONBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Connexion stops at the first schema error; a client sending a batch of samples wants to
    fix all of them in one go, so every error (up to ten) is listed with its path."""

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
