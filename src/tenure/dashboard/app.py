"""The dashboard's web application (Starlette + Jinja2 + vendored htmx).

Rules:
- Reads and actions go through :class:`~tenure.client.Client` only: its methods
  and its store's typed statements. No endpoint takes SQL or a statement name.
- Bound to a loopback address with no token, only requests whose ``Host`` is a
  loopback name are served (a page elsewhere cannot reach it by DNS rebinding).
  With a token, which is required beyond localhost, every request must carry it:
  ``Authorization: Bearer …`` or the cookie set by visiting ``/?token=…`` once.
- Actions are POST only and carry a CSRF token that must match the per-browser
  cookie (double submit); a cross-site ``Origin`` is refused as well. A form body
  is read as it streams in and refused (413) the moment it passes ``MAX_BODY``;
  no more than that is ever held.
- Every response forbids framing and MIME sniffing and carries a
  Content-Security-Policy that allows only the dashboard's own scripts, styles and
  requests: no inline script or handler, so database text can never run as code.
- Query parameters are validated: a bad one is a 400 page, an unknown task a 404,
  an unreachable database a 503; never a 500 for anything a request can contain.
- Pages refresh the part marked ``#live`` every few seconds with htmx.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tenure._store.rows import RetryResult
from tenure._untrusted import is_loopback, is_loopback_host_header
from tenure.client import DEFAULT_SCHEMA, Client
from tenure.dashboard import views
from tenure.errors import (
    DatabaseError,
    QueueNotFound,
    ScheduleNotFound,
    TaskNotFound,
    TenureError,
)
from tenure.states import RETRYABLE_NAMES, TASK_STATES

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSRF_COOKIE = "tenure_csrf"
TOKEN_COOKIE = "tenure_token"
MAX_TEXT = 200
MAX_BODY = 4096
MAX_ID = 2**63 - 1
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BadRequest(ValueError):
    """A query parameter or form field that cannot be used; answered with 400."""


def _text(params: QueryParams, name: str) -> str | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest(f"{name}: at most {MAX_TEXT} printable characters")
    return value


def _int(params: QueryParams, name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise BadRequest(f"{name}: expected a whole number")
    number = int(value)
    if not low <= number <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return number


def parse_filters(params: QueryParams) -> views.TaskFilters:
    state = _text(params, "state")
    if state is not None and state not in TASK_STATES:
        raise BadRequest(f"state: one of {', '.join(TASK_STATES)}")
    return views.TaskFilters(
        queue=_text(params, "queue"),
        state=state,
        task_name=_text(params, "task"),
        partition_key=_text(params, "key"),
        before=_int(params, "before", 1, MAX_ID),
        limit=_int(params, "limit", 1, 500) or 50,
    )


def parse_task_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise HTTPException(404, f"no task {raw[:40]!r}: task ids are positive whole numbers")
    return int(raw)


def safe_next(raw: str | None, default: str) -> str:
    """A local path to go back to after an action; never another site."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    if any(ord(c) < 32 for c in raw) or len(raw) > 2000:
        return default
    return raw


class Guard:
    """Host and token checks in front of every request (pages, actions, assets), and
    the security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        request = Request(scope)
        refusal = self.check(request)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, request: Request) -> Response | None:
        if self.token is None:
            if not is_loopback_host_header(request.headers.get("host")):
                return PlainTextResponse(
                    "refused: this dashboard serves localhost only (start it with --auth-token "
                    "to serve other names)\n",
                    status_code=403,
                )
            return None
        offered = request.query_params.get("token")
        if offered is not None and request.method == "GET":
            if not hmac.compare_digest(offered.encode(), self.token.encode()):
                return _unauthorized()
            rest = {k: v for k, v in request.query_params.multi_items() if k != "token"}
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response = RedirectResponse(safe_next(target, "/"), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response
        auth = request.headers.get("authorization", "")
        supplied = auth[7:] if auth.lower().startswith("bearer ") else None
        supplied = supplied or request.cookies.get(TOKEN_COOKIE)
        if supplied is None or not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return _unauthorized()
        return None


def _unauthorized() -> Response:
    return PlainTextResponse(
        "401: this dashboard needs its token: open /?token=… once, or send "
        "Authorization: Bearer …\n",
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="tenure"'},
    )


async def read_capped(request: Request, cap: int) -> bytes:
    """The request's body, or 413 as soon as it is known to be longer than ``cap``:
    at once for a longer ``Content-Length``, else when the bytes streamed in pass it.
    The refusal closes the connection, so the rest of the body is never read."""
    declared = request.headers.get("content-length", "")
    too_large = HTTPException(
        413, f"the form is larger than {cap} bytes", headers={"Connection": "close"}
    )
    if declared.strip().isdigit() and int(declared) > cap:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large
    return bytes(body)


class Dashboard:
    """The routes, bound to one Client (one DSN and schema)."""

    def __init__(self, client: Client, *, refresh: int, token: bool) -> None:
        self.client = client
        self.refresh = refresh
        self.token = token
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- rendering -------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE)
        fresh = csrf is None or len(csrf) != 43
        if fresh:
            csrf = secrets.token_urlsafe(32)
        flash = request.cookies.get("tenure_flash")
        html = self.env.get_template(name).render(
            request=request,
            path=request.url.path,
            here=request.url.path + ("?" + request.url.query if request.url.query else ""),
            csrf=csrf,
            refresh=self.refresh,
            schema=self.client.schema,
            flash=flash[:200] if flash else None,
            **ctx,
        )
        response = HTMLResponse(html, status_code=status)
        if fresh:
            response.set_cookie(CSRF_COOKIE, str(csrf), httponly=True, samesite="strict")
        if flash:
            response.delete_cookie("tenure_flash")
        return response

    async def _now(self) -> datetime:
        return await run_in_threadpool(self.client.store.dashboard_now)

    # -- pages -----------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        data = await run_in_threadpool(views.overview, self.client)
        return self.render(request, "overview.html", nav="overview", **data)

    async def tasks(self, request: Request) -> Response:
        filters = parse_filters(request.query_params)
        now = await self._now()
        data = await run_in_threadpool(views.task_list, self.client, filters, now)
        return self.render(
            request,
            "tasks.html",
            nav="tasks",
            filters=filters,
            states=TASK_STATES,
            older_link="/tasks?" + urlencode(filters.query(before=data["older"]))
            if data["older"]
            else None,
            **data,
        )

    async def task(self, request: Request) -> Response:
        task_id = parse_task_id(request.path_params["task_id"])
        now = await self._now()
        try:
            data = await run_in_threadpool(views.task_detail, self.client, task_id, now)
        except TaskNotFound:
            raise HTTPException(404, f"no task {task_id} in schema {self.client.schema}") from None
        return self.render(request, "task.html", nav="tasks", **data)

    # -- actions ---------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        """The POSTed form, after the CSRF and origin checks."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            origin_host = origin.split("://", 1)[-1]
            if origin_host != request.headers.get("host"):
                raise HTTPException(403, "refused: the action came from another site")
        body = await read_capped(request, MAX_BODY)
        try:
            parsed = parse_qs(body.decode("utf-8"), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form could not be read") from None
        form = {k: v[-1] for k, v in parsed.items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = form.get("csrf") or request.headers.get("x-csrf-token", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            raise HTTPException(403, "refused: the form's CSRF token is missing or stale; reload")
        return form

    def _done(self, form: dict[str, str], default: str, message: str) -> Response:
        response = RedirectResponse(safe_next(form.get("next"), default), status_code=303)
        response.set_cookie("tenure_flash", message, httponly=True, samesite="strict", max_age=30)
        return response

    async def task_action(self, request: Request) -> Response:
        form = await self._form(request)
        task_id = parse_task_id(request.path_params["task_id"])
        action = request.path_params["action"]
        if action not in ("retry", "cancel"):
            raise HTTPException(404, f"no action {action[:40]!r} on tasks")
        try:
            if action == "retry":
                message = self._retried(await run_in_threadpool(self.client.retry, task_id))
            else:
                message = self._cancelled(
                    task_id, await run_in_threadpool(self.client.cancel, task_id)
                )
        except TaskNotFound:
            raise HTTPException(404, f"no task {task_id}") from None
        return self._done(form, f"/tasks/{task_id}", message)

    @staticmethod
    def _retried(retried: RetryResult) -> str:
        if retried.requeued:
            return f"Task {retried.id} queued again"
        return (
            f"Task {retried.id} is {retried.state}: nothing to retry "
            f"(only {RETRYABLE_NAMES} tasks can be retried)"
        )

    @staticmethod
    def _cancelled(task_id: int, state: str) -> str:
        if state == "cancelled":
            return f"Task {task_id} cancelled"
        if state == "cancelling":
            return f"Task {task_id} is being stopped by its worker"
        return f"Task {task_id} is {state}: nothing to cancel"

    async def queue_action(self, request: Request) -> Response:
        calls = {
            "pause": (self.client.pause_queue, "paused"),
            "resume": (self.client.resume_queue, "resumed"),
        }
        return await self._act_on(request, "queue", calls, QueueNotFound)

    async def schedule_action(self, request: Request) -> Response:
        calls = {
            "pause": (self.client.pause_schedule, "paused"),
            "resume": (self.client.resume_schedule, "resumed"),
            "trigger": (self.client.trigger_schedule, "asked to run now"),
        }
        return await self._act_on(request, "schedule", calls, ScheduleNotFound)

    async def _act_on(
        self,
        request: Request,
        what: str,
        calls: Mapping[str, tuple[Callable[[str], None], str]],
        missing: type[Exception],
    ) -> Response:
        """POST /{what}s/{name}/{action}: one of ``calls`` on the named queue or
        schedule; a name the database does not know is a 404 that lists the known."""
        form = await self._form(request)
        name = request.path_params["name"]
        if not 0 < len(name) <= MAX_TEXT or any(ord(c) < 32 for c in name):
            raise BadRequest(f"{what}: at most 200 printable characters")
        action = request.path_params["action"]
        if action not in calls:
            raise HTTPException(404, f"no action {action[:40]!r} on {what}s")
        call, done = calls[action]
        try:
            await run_in_threadpool(call, name)
        except missing as exc:
            raise HTTPException(404, str(exc)) from None
        return self._done(form, "/", f"{what.capitalize()} {name} {done}")

    async def worker_drain(self, request: Request) -> Response:
        form = await self._form(request)
        worker_id = request.path_params["worker_id"].lower()
        if not _UUID.match(worker_id):
            raise HTTPException(404, "no such worker: ids are UUIDs")
        asked = await run_in_threadpool(self.client.drain_worker, worker_id)
        message = (
            f"Worker {worker_id[:8]} asked to drain" if asked else f"Worker {worker_id[:8]} is gone"
        )
        return self._done(form, "/", message)

    # -- errors ----------------------------------------------------------------------

    def error_page(
        self,
        request: Request,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        try:
            response = self.render(
                request, "error.html", status=status, code=status, message=message
            )
        except Exception:
            response = PlainTextResponse(f"{status}: {message}\n", status_code=status)
        response.headers.update(headers or {})
        return response


def create_app(
    *,
    dsn: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    token: str | None = None,
    host: str = "127.0.0.1",
    refresh: int = 3,
    client: Client | None = None,
) -> ASGIApp:
    """The dashboard as an ASGI app. Beyond localhost a ``token`` is required."""
    if token is None and not is_loopback(host):
        raise TenureError(f"binding the dashboard to {host} requires an auth token")
    client = client or Client(dsn, schema=schema, migrate=False)
    dash = Dashboard(client, refresh=refresh, token=bool(token))

    async def bad_request(request: Request, exc: Exception) -> Response:
        return dash.error_page(request, 400, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return dash.error_page(request, exc.status_code, str(exc.detail), exc.headers)

    async def database_error(request: Request, exc: Exception) -> Response:
        log.warning("dashboard_database_error error=%s", exc)
        return dash.error_page(request, 503, f"the database did not answer: {exc}")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BadRequest: bad_request,
        HTTPException: http_error,
        DatabaseError: database_error,
    }
    routes = [
        Route("/", dash.overview, methods=["GET", "HEAD"]),
        Route("/tasks", dash.tasks, methods=["GET", "HEAD"]),
        Route("/tasks/{task_id}", dash.task, methods=["GET", "HEAD"]),
        Route("/tasks/{task_id}/{action}", dash.task_action, methods=["POST"]),
        Route("/queues/{name}/{action}", dash.queue_action, methods=["POST"]),
        Route("/schedules/{name}/{action}", dash.schedule_action, methods=["POST"]),
        Route("/workers/{worker_id}/drain", dash.worker_drain, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Guard(app, token)
