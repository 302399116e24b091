"""The console as an ASGI app under ``/console``: login and logout, the four pages and their
panels, the problem actions, the hub listener and the event stream to browsers."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.sla.report_documents import render_report_html
from services.tmf.auth.identity import OPERATOR, PARTNER
from services.tmf.auth.issuer import TokenIssuer
from services.tmf.auth.service import ClientCredentials, ServiceCredentials

from . import views
from .live import SIGNATURE_HEADER, Broker, HubSubscriber
from .oidc import LoginRefused, OidcLogin
from .settings import LOGIN_COOKIE, SESSION_COOKIE, ConsoleSettings
from .store import ConsoleStore, Session
from .suite import PROBLEM, Suite, SuiteError

PREFIX = "/console"
HERE = Path(__file__).parent
MAX_FORM_BYTES = 16_384
MAX_HOOK_BYTES = 1_048_576
HEARTBEAT_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 1.0
PAGES = (("graph", "Service graph"), ("sla", "SLA board"), ("problems", "Problems"),
         ("settlement", "Settlement"), ("reports", "Reports"))

Page = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The console's state (database, API client, live updates) and its ASGI app."""

    def __init__(self, settings: ConsoleSettings, issuer: TokenIssuer | None, operator_party: str = "operator") -> None:
        self.settings = settings
        self.issuer = issuer
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]), enable_async=False)
        self.templates.globals.update(pages=PAGES, prefix=PREFIX)
        self.broker = Broker()
        self.credentials = ServiceCredentials("console", operator_party, issuer=issuer,
                                              credentials=ClientCredentials.from_env())
        self.subscriber = HubSubscriber(settings.api_url, settings.public_url, self.credentials, self.broker)
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self._store: ConsoleStore | None = None
        self._suite: Suite | None = None
        self.oidc: OidcLogin | None = None
        self.app = Starlette(routes=[Mount(PREFIX, routes=self.routes())])

    # -- life ------------------------------------------------------------------------------------

    async def startup(self) -> None:
        self._mongo = AsyncMongoClient(self.settings.mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
        database = self._mongo[self.settings.database]
        self._store = ConsoleStore(database)
        await self._store.ensure_indexes()
        self._suite = Suite(self.settings.api_url, self.issuer)
        if self.settings.oidc is not None:
            self.oidc = OidcLogin(self.settings.oidc, self.settings.public_url, database)
            await self.oidc.ensure_indexes()
        if self.credentials.configured:
            await self.subscriber.load_secret(database)
            self.subscriber.start()

    async def shutdown(self) -> None:
        self.broker.close()
        await self.subscriber.stop()
        if self._suite is not None:
            await self._suite.close()
        if self.oidc is not None:
            await self.oidc.close()
        if self._mongo is not None:
            await self._mongo.close()

    @property
    def store(self) -> ConsoleStore:
        assert self._store is not None, "the console has not started"
        return self._store

    @property
    def suite(self) -> Suite:
        assert self._suite is not None, "the console has not started"
        return self._suite

    def routes(self) -> list[Any]:
        return [
            Route("/", self._home),
            Route("/login", self._login_form, methods=["GET"]),
            Route("/login", self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
            Route("/oidc/start", self._oidc_start, methods=["POST"]),
            Route("/oidc/callback", self._oidc_callback, methods=["GET"]),
            Route("/graph", self._page(self._graph)),
            Route("/graph/node", self._page(self._graph_node)),
            Route("/sla", self._page(self._sla)),
            Route("/problems", self._page(self._problems)),
            Route("/problems/acknowledge", self._page(self._acknowledge, write=True), methods=["POST"]),
            Route("/problems/group", self._page(self._group, write=True), methods=["POST"]),
            Route("/settlement", self._page(self._settlement)),
            Route("/reports", self._page(self._reports)),
            Route("/reports/sla/{sla_id}.{fmt}", self._page(self._report_file)),
            Route("/reports/party.{fmt}", self._page(self._report_file)),
            Route("/events", self._page(self._events)),
            Route("/hook/{api}/listener/{event_type}", self._hook, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- rendering -------------------------------------------------------------------------------

    def render(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                       "frame-ancestors 'none'; form-action 'self' " + self._form_targets()})

    def _form_targets(self) -> str:
        # The OIDC login leaves for the provider through a redirect, which form-action also covers.
        return self.settings.oidc.issuer if self.settings.oidc is not None else ""

    def _cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="lax",
                            secure=self.settings.secure_cookies)

    def _page(self, handler: Page, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self.store.session(request.cookies.get(SESSION_COOKIE))
            if session is None:
                if request.headers.get("hx-request") or request.url.path.endswith("/events"):
                    return Response(status_code=401)
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
            if write:
                form = await _form(request)
                sent = form.get("csrf") or request.headers.get("x-csrf-token") or ""
                if not secrets.compare_digest(sent, session.csrf):
                    return self.render("error.html", 403, session=session,
                                       message="The form is out of date (its CSRF token does not match this "
                                               "session). Reload the page and try again.")
                request.state.form = form
            try:
                return await handler(request, session)
            except httpx.HTTPError as exc:
                return self.render("error.html", 502, session=session,
                                   message=f"The suite cannot be reached right now ({type(exc).__name__}); "
                                           "try again in a moment.")
            except SuiteError as exc:
                if exc.status == 401:
                    return RedirectResponse(f"{PREFIX}/login", status_code=303)
                return self.render("error.html", 502 if exc.status >= 500 else 400, session=session,
                                   message=f"The suite answered {exc.status}: {exc.message}")

        return endpoint

    def _panel(self, request: Request, page: str, panel: str, session: Session, **values: Any) -> HTMLResponse:
        """The whole page, or only its panel when the page asks for it again (a live update)."""
        if request.query_params.get("panel") == "1":
            return self.render(panel, session=session, **values)
        return self.render(page, session=session, current=page.removesuffix(".html"), panel=panel, **values)

    # -- login -----------------------------------------------------------------------------------

    async def _home(self, request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/graph", status_code=303)

    async def _login_form(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = self.render("login.html", status, login_token=token, error=error,
                               next=_safe_next(request.query_params.get("next")), oidc=self.settings.oidc is not None)
        self._cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    async def _login(self, request: Request) -> Response:
        form = await _form(request)
        if not _same(request.cookies.get(LOGIN_COOKIE), form.get("login_token")):
            return await self._login_form(request, "The login form is out of date; try again.", 403)
        user = await self.store.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            return await self._login_form(request, "Wrong user name or password.", 401)
        return await self._open(user["_id"], user["party_id"], user["role"], None, form.get("next"))

    async def _open(self, user: str, party_id: str, role: str, access_token: str | None,
                    next_url: str | None) -> Response:
        session_id, _ = await self.store.open_session(user, party_id, role, self.settings.session_seconds,
                                                      access_token)
        response = RedirectResponse(_safe_next(next_url), status_code=303)
        self._cookie(response, SESSION_COOKIE, session_id, self.settings.session_seconds)
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def _logout(self, request: Request) -> Response:
        session = await self.store.session(request.cookies.get(SESSION_COOKIE))
        form = await _form(request)
        if session is not None:
            if not _same(session.csrf, form.get("csrf")):
                return self.render("error.html", 403, session=session, message="The logout form is out of date.")
            await self.store.close_session(session)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def _oidc_start(self, request: Request) -> Response:
        form = await _form(request)
        browser = request.cookies.get(LOGIN_COOKIE)
        if self.oidc is None or not _same(browser, form.get("login_token")):
            return await self._login_form(request, "The login form is out of date; try again.", 403)
        assert browser is not None
        return RedirectResponse(await self.oidc.start(browser), status_code=303)

    async def _oidc_callback(self, request: Request) -> Response:
        if self.oidc is None:
            return await self._login_form(request, "No identity provider is configured.", 404)
        params = request.query_params
        try:
            if params.get("error"):
                raise LoginRefused(f"the provider answered {params['error'][:64]}")
            who = await self.oidc.finish(request.cookies.get(LOGIN_COOKIE), params.get("state", ""),
                                         params.get("code", ""))
        except LoginRefused as exc:
            return await self._login_form(request, f"Login refused: {exc}", 403)
        return await self._open(who.subject, who.party_id, who.role, who.access_token, None)

    # -- pages -----------------------------------------------------------------------------------

    async def _graph(self, request: Request, session: Session) -> Response:
        search = request.query_params.get("q", "")[: views.MAX_SEARCH]
        chosen = request.query_params.get("cfs", "")
        choices = await views.customer_facing(self.suite, session, search)
        if not chosen and choices and not search:
            chosen = choices[0]["id"]
        tree = await views.service_tree(self.suite, session, chosen, _now()) if chosen else None
        return self._panel(request, "graph.html", "graph_panel.html", session, search=search, choices=choices,
                           chosen=chosen, tree=tree)

    async def _graph_node(self, request: Request, session: Session) -> Response:
        kind = "Resource" if request.query_params.get("kind") == "Resource" else "Service"
        node_id = request.query_params.get("id", "")[:256]
        detail = await views.node_detail(self.suite, session, kind, node_id, _now())
        return self.render("node_panel.html", session=session, detail=detail, now=_now(), age=views.age)

    async def _sla(self, request: Request, session: Session) -> Response:
        board = await views.sla_board(self.suite, session, _now())
        return self._panel(request, "sla.html", "sla_panel.html", session, board=board)

    async def _problems(self, request: Request, session: Session, message: str | None = None) -> Response:
        problems = await views.open_problems(self.suite, session)
        return self._panel(request, "problems.html", "problems_panel.html", session, problems=problems,
                           now=_now(), age=views.age, parties=views.parties, message=message,
                           may_act=session.role in (OPERATOR, PARTNER))

    async def _acknowledge(self, request: Request, session: Session) -> Response:
        problem = str(request.state.form.get("problem", ""))[:256]
        await self.suite.post(session, f"{PROBLEM}/problemAcknowledgement", {
            "problem": [{"id": problem}],
            "trackingRecord": {"description": "acknowledged in the console", "user": session.user}})
        return await self._after_action(request, session, f"Problem {problem} acknowledged.")

    async def _group(self, request: Request, session: Session) -> Response:
        form = request.state.form
        parent = str(form.get("parent", ""))[:256]
        children = [c for c in form.getlist("child") if c and c != parent][:100]
        if not parent or not children:
            return await self._after_action(request, session, "Choose a parent problem and at least one other.")
        await self.suite.post(session, f"{PROBLEM}/problemGroup", {
            "parentProblem": {"id": parent}, "childProblem": [{"id": c} for c in children]})
        return await self._after_action(request, session, f"{len(children)} problem(s) grouped under {parent}.")

    async def _after_action(self, request: Request, session: Session, message: str) -> Response:
        if request.headers.get("hx-request"):
            return await self._problems(request, session, message)
        return RedirectResponse(f"{PREFIX}/problems", status_code=303)

    async def _settlement(self, request: Request, session: Session) -> Response:
        found = await views.statements(self.suite, session)
        return self._panel(request, "settlement.html", "settlement_panel.html", session, statements=found)

    async def _reports(self, request: Request, session: Session) -> Response:
        query = request.query_params
        choice = query.get("report", "")[:256]
        period = query.get("period", "month")[:32]
        start = query.get("start") or _now().date().replace(day=1).isoformat()
        values: dict[str, Any] = {"choices": await views.report_choices(self.suite, session), "chosen": choice,
                                  "period": period, "start": start[:32], "periods": views.REPORT_PERIODS}
        if not choice:
            return self.render("reports.html", session=session, current="reports", **values)
        target = views.report_target(session, choice)
        if target is None:
            return self.render("reports.html", 400, session=session, current="reports", **values,
                               error="Choose one of the reports in the list.")
        path, extra = target
        try:
            report = await self.suite.get(session, path, period=period, start=start, format="json", **extra)
        except SuiteError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            # The API's own words say what to fix (a wrong period or date, an SLA not theirs).
            return self.render("reports.html", exc.status, session=session, current="reports", **values,
                               error=exc.message)
        files = {fmt: f"{_report_file_path(choice)}.{fmt}?{urlencode({'period': period, 'start': start})}"
                 for fmt in views.REPORT_FORMATS}
        return self.render("reports.html", session=session, current="reports", **values, files=files,
                           report=Markup(render_report_html(report, standalone=False)))  # noqa: S704 - escaped there

    async def _report_file(self, request: Request, session: Session) -> Response:
        """A report's CSV or PDF, fetched from the API with this person's token, as a download."""
        fmt = request.path_params["fmt"]
        sla_id = request.path_params.get("sla_id")
        choice = views.PARTY_REPORT if sla_id is None else f"sla:{sla_id}"
        target = views.report_target(session, choice)
        if fmt not in views.REPORT_FORMATS or target is None:
            return self.render("error.html", 404, session=session,
                               message="No such report file: the console offers CSV and PDF files of the reports "
                                       "listed on the Reports page.")
        path, extra = target
        period = request.query_params.get("period", "month")[:32]
        start = request.query_params.get("start", "")[:32]
        answer = await self.suite.document(session, path, period=period, start=start, format=fmt, **extra)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{sla_id or session.party_id}-{period}-{start}")
        return StreamingResponse(answer.aiter_bytes(), media_type=views.REPORT_FORMATS[fmt],
                                 background=BackgroundTask(answer.aclose), headers={
                                     "Content-Disposition": f'attachment; filename="report-{name}.{fmt}"',
                                     "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    # -- live updates ----------------------------------------------------------------------------

    async def _events(self, request: Request, session: Session) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            async with self.broker.listen() as queue:
                yield b": connected\n\n"
                quiet = 0.0
                while not self.broker.closed:
                    try:
                        panel = await asyncio.wait_for(queue.get(), DISCONNECT_CHECK_SECONDS)
                    except TimeoutError:
                        # A browser that went away is noticed here, so a stopping server never
                        # waits on a stream nobody reads.
                        if await request.is_disconnected():
                            return
                        quiet += DISCONNECT_CHECK_SECONDS
                        if quiet >= HEARTBEAT_SECONDS:
                            quiet = 0.0
                            yield b": heartbeat\n\n"
                        continue
                    yield f"event: changed\ndata: {panel}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_HOOK_BYTES:
            return Response(status_code=413)
        if not self.subscriber.accept(request.path_params["api"], request.headers.get(SIGNATURE_HEADER), body):
            return Response(status_code=401)
        return Response(status_code=204)


def _report_file_path(choice: str) -> str:
    if choice == views.PARTY_REPORT:
        return f"{PREFIX}/reports/party"
    return f"{PREFIX}/reports/sla/{quote(choice.removeprefix('sla:'), safe='')}"


def _now() -> datetime:
    return datetime.now(UTC)


def _same(expected: str | None, sent: Any) -> bool:
    return bool(expected) and isinstance(sent, str) and secrets.compare_digest(expected or "", sent)


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself, never another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/graph"


async def _form(request: Request) -> Any:
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return {}
    return await request.form(max_files=0, max_fields=200)

