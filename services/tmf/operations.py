"""The connexion application the suite runs, with the work connexion repeats on every request
for what depends only on the operation done once per operation instead.

Connexion's asynchronous app wraps each handler in its parameter and response decorators anew
on every request (inspecting the handler's signature each time) and makes a new URI parser for
the operation's parameters; here both are made when the operation is added. What a request
sees is unchanged: the same decorators, run in the same order, with the same parser class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from connexion import AsyncApp
from connexion.apps.abstract import AbstractApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator


class _DecoratedOnce(StarletteDecorator):  # type: ignore[misc]
    """Connexion's decorator for Starlette handlers, with the decorated handler and the URI
    parser made once."""

    def __init__(self, uri_parser: Any, **options: Any) -> None:
        super().__init__(**options)
        self._uri_parser = uri_parser

    @property
    def uri_parser(self) -> Any:
        return self._uri_parser

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        decorated = self.decorate(function)

        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = self.framework.get_request(uri_parser=self._uri_parser, scope=scope, receive=receive)
            return await decorated(request)

        return wrapper


class _Operation(AsyncOperation):  # type: ignore[misc]
    def __init__(self, fn: Callable[..., Any], *, uri_parser: Any, **options: Any) -> None:
        super().__init__(fn, **options)
        self._decorated = _DecoratedOnce(uri_parser, pythonic_params=self.pythonic_params,
                                         jsonifier=self.jsonifier)(self._fn)

    @classmethod
    def from_operation(cls, operation: Any, *, pythonic_params: bool, jsonifier: Any) -> _Operation:
        parser = operation.uri_parser_class(operation.parameters, operation.body_definition())
        return cls(operation.function, uri_parser=parser, jsonifier=jsonifier, operation_id=operation.operation_id,
                   pythonic_params=pythonic_params)

    @property
    def fn(self) -> Callable[..., Any]:
        return self._decorated


class _Api(AsyncApi):  # type: ignore[misc]
    def make_operation(self, operation: Any) -> _Operation:
        return _Operation.from_operation(operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)


class _Handlers(AsyncASGIApp):  # type: ignore[misc]
    api_cls = _Api


class TmfApp(AsyncApp):  # type: ignore[misc]
    """connexion's ``AsyncApp`` (same options), with each operation's handler prepared once."""

    def __init__(self, import_name: str, **options: Any) -> None:
        # What AsyncApp.__init__ does, with the handler app swapped for ours.
        self._middleware_app = _Handlers()
        AbstractApp.__init__(self, import_name, **options)
