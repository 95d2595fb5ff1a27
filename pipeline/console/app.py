"""The console's web app: server-rendered pages, a JSON API and live counts (SSE).

Starlette routes over :mod:`pipeline.console.queries` (reads) and :mod:`pipeline.operations`
(actions). Pages are Jinja2 templates with autoescape on; htmx and its SSE extension are
served from ``static/``; no inline scripts, so the CSP forbids them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline import operations
from pipeline.console import auth, queries
from pipeline.console.charts import timing_chart
from pipeline.ledger import ItemRow, Ledger
from pipeline.outputs.report import batch_status
from pipeline.settings import Settings
from pipeline.states import ItemState

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' https:{media}; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
TIMING_SAMPLE = 5000  # items whose stage timings a batch's page and status summarise
BATCH_ACTIONS = {"retry", "cancel", "reprocess", "replay", "purge"}
ITEM_ACTIONS = {"reprocess", "replay", "purge"}


@dataclass
class Console:
    """What every request needs: the ledger, the settings, who may do what."""

    ledger: Ledger
    settings: Settings
    access: auth.Access
    out_dir: Path | None = None  # an embedded run's directory, or None for the fleet
    cancel_task: Callable[[str], None] | None = None
    poll_s: float = 1.0
    store_for: Callable[[str], Any] | None = None
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["q"] = lambda s: quote(str(s), safe="")
        self.env.filters["path"] = lambda s: quote(str(s), safe="/")
        self.env.filters["dur"] = _duration
        self.env.filters["hms"] = _hms


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _hms(seconds: float) -> str:
    m, s = divmod(float(seconds), 60)
    return f"{int(m):02d}:{s:04.1f}"


# -- auth plumbing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Who:
    role: str
    session: auth.Session | None
    actor: str

    @property
    def can_act(self) -> bool:
        return self.role == auth.ADMIN


def _who(console: Console, request: Request, *, api: bool) -> Who | None:
    host = request.client.host if request.client else "?"
    if api:
        role = auth.bearer_role(console.access, request.headers.get("authorization"))
        if role is None and not console.access.open:
            return None
        return Who(role or auth.ADMIN, None, _actor(console, role or auth.ADMIN, host))
    session = auth.read_session(console.access, request.cookies.get(auth.SESSION_COOKIE))
    if session is None:
        return None
    return Who(session.role, session, _actor(console, session.role, host))


def _actor(console: Console, role: str, host: str) -> str:
    """Who did it, for the actions table: the role (``local`` without tokens) and address."""
    return f"console:{'local' if console.access.open else role}@{host}"


def _set_session(response: Response, value: str, request: Request) -> None:
    response.set_cookie(
        auth.SESSION_COOKIE,
        value,
        max_age=auth.SESSION_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(
        json.loads(json.dumps(data, default=str, ensure_ascii=False)), status_code=status
    )


def _api_error(status: int, message: str) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


Handler = Callable[[Console, Request, Who], Awaitable[Response]]


def api(handler: Handler, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        who = _who(console, request, api=True)
        if who is None:
            return _api_error(401, "unauthorized: send Authorization: Bearer <token>")
        if write:
            if not who.can_act:
                return _api_error(403, "read-only token: actions are refused")
            # Tokenless (loopback) mode has no credential a forged cross-site form could
            # lack, so a write must be JSON: browsers send that cross-site only after a
            # CORS preflight, which this server never grants.
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if console.access.open and ctype != "application/json":
                return _api_error(415, "send the request body as application/json")
        return await handler(console, request, who)

    return endpoint


def page(handler: Handler, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        who = _who(console, request, api=False)
        fresh = None
        if who is None and console.access.open:
            fresh = auth.new_session(console.access, auth.ADMIN)
            session = auth.read_session(console.access, fresh)
            host = request.client.host if request.client else "?"
            who = Who(auth.ADMIN, session, _actor(console, auth.ADMIN, host))
        if who is None:
            if write:
                return HTMLResponse("session expired: log in again", status_code=401)
            return _render(
                console,
                request,
                "login.html",
                None,
                next=auth.safe_next(
                    str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
                ),
                status=401,
            )
        if write:
            if not who.can_act:
                return HTMLResponse("read-only session: actions are refused", status_code=403)
            form = await request.form()
            assert who.session is not None
            if not auth.csrf_ok(console.access, who.session, str(form.get("csrf") or "")):
                return HTMLResponse("bad or missing CSRF token", status_code=403)
        response = await handler(console, request, who)
        if fresh is not None:
            _set_session(response, fresh, request)
        return response

    return endpoint


def _render(
    console: Console,
    request: Request,
    template: str,
    who: Who | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    csrf = (
        auth.csrf_token(console.access, who.session)
        if who is not None and who.session is not None
        else ""
    )
    html = console.env.get_template(template).render(
        who=who,
        csrf=csrf,
        embedded=console.out_dir is not None,
        out_dir=str(console.out_dir) if console.out_dir else None,
        open_access=console.access.open,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status)


# -- login -----------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    console: Console = request.app.state.console
    if console.access.open:
        return RedirectResponse("/", status_code=303)
    return _render(
        console, request, "login.html", None, next=auth.safe_next(request.query_params.get("next"))
    )


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await request.form()
    target = auth.safe_next(str(form.get("next") or "/"))
    role = auth.role_for_token(console.access, str(form.get("token") or ""))
    if role is None:
        await asyncio.sleep(0.5)  # guessing tokens through the form is slow going
        return _render(
            console, request, "login.html", None, next=target, error="wrong token", status=401
        )
    response = RedirectResponse(target, status_code=303)
    _set_session(response, auth.new_session(console.access, role), request)
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


# -- reads -----------------------------------------------------------------------------------


def _batch_filter(request: Request) -> queries.BatchFilter:
    p = request.query_params
    return queries.BatchFilter(
        state=p.get("state") or None, schedule=p.get("schedule") or None, date=p.get("date") or None
    )


def _item_filter(request: Request) -> queries.ItemFilter:
    p = request.query_params
    try:
        limit = int(p.get("limit") or 50)
    except ValueError:
        limit = 50
    return queries.ItemFilter(
        state=p.get("state") or None,
        code=p.get("code") or None,
        q=p.get("q") or None,
        after=p.get("after") or None,
        limit=limit,
    )


async def api_batches(console: Console, request: Request, who: Who) -> Response:
    data = await run_in_threadpool(queries.batch_list, console.ledger, _batch_filter(request))
    return _json({"batches": data})


async def api_batch(console: Console, request: Request, who: Who) -> Response:
    batch_id = request.path_params["batch"]
    report = await run_in_threadpool(
        partial(batch_status, timing_sample=TIMING_SAMPLE), console.ledger, batch_id
    )
    if report is None:
        return _api_error(404, f"no batch {batch_id}")
    return _json(queries.redacted(report))  # provider messages may quote signed URLs, keys


async def api_items(console: Console, request: Request, who: Who) -> Response:
    batch_id = request.path_params["batch"]
    if console.ledger.batch(batch_id) is None:
        return _api_error(404, f"no batch {batch_id}")
    try:
        rows, cursor = await run_in_threadpool(
            queries.items_page, console.ledger, batch_id, _item_filter(request)
        )
    except queries.BadCursor as exc:
        return _api_error(400, str(exc))
    return _json({"items": rows, "next": cursor})


async def api_item(console: Console, request: Request, who: Who) -> Response:
    row = _find(console, request)
    if row is None:
        return _api_error(404, "no such item")
    return _json(await run_in_threadpool(queries.item_detail, console.ledger, row))


def _find(console: Console, request: Request) -> ItemRow | None:
    return queries.find_item(
        console.ledger, request.path_params["batch"], request.path_params["item"]
    )


async def api_fleet(console: Console, request: Request, who: Who) -> Response:
    from pipeline.console.fleet import fleet_status

    if console.out_dir is not None:
        return _api_error(404, "an embedded run's console has no fleet")
    return _json(await run_in_threadpool(fleet_status, console.settings, console.ledger))


# -- actions ---------------------------------------------------------------------------------


class ActionRefused(Exception):
    pass


def perform(
    console: Console,
    action: str,
    batch_id: str,
    row: ItemRow | None,
    *,
    actor: str,
    model: str | None = None,
    engine: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operator action; the same JSON the CLI's command prints with --json."""
    ledger = console.ledger
    if ledger.batch(batch_id) is None:
        raise LookupError(f"no batch {batch_id}")
    if action == "retry" and row is None:
        ids = operations.retry_batch(ledger, batch_id, actor=actor)
        return {"batch_id": batch_id, "retried": len(ids)}
    if action == "cancel" and row is None:
        report = operations.cancel_batch(
            ledger, batch_id, actor=actor, cancel_task=console.cancel_task
        )
        return report.as_json(batch_id)
    rows = [row] if row is not None else None
    if action == "reprocess":
        if engine not in (None, "local", "dashscope"):
            raise ActionRefused(f"unknown engine {engine!r}")
        ids = operations.reprocess(
            ledger,
            rows or ledger.list_items(batch_id),
            actor=actor,
            model=model,
            engine=engine,
            options=options,
        )
        return {"reprocessed": len(ids), "items": ids}
    if action in ("replay", "purge"):
        targets = rows or ledger.list_items(batch_id, states=[ItemState.DEAD])
        if action == "replay":
            ids = operations.replay(ledger, targets, actor=actor)
            return {"replayed": len(ids), "items": ids}
        ids = operations.purge(ledger, targets, actor=actor)
        return {"purged": len(ids), "items": ids}
    raise ActionRefused(f"{action} is not an action on {'an item' if row else 'a batch'}")


def _api_action(action: str, *, item: bool) -> Handler:
    async def handler(console: Console, request: Request, who: Who) -> Response:
        batch_id = request.path_params["batch"]
        row = None
        if item:
            row = _find(console, request)
            if row is None:
                return _api_error(404, "no such item")
        body: dict[str, Any] = {}
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return _api_error(400, "body: not JSON")
            if not isinstance(body, dict):
                return _api_error(400, "body: a JSON object")
        options = body.get("options") or None
        if options is not None and not isinstance(options, dict):
            return _api_error(400, "options: a JSON object")
        try:
            result = await run_in_threadpool(
                perform,
                console,
                action,
                batch_id,
                row,
                actor=who.actor,
                model=body.get("model") or None,
                engine=body.get("engine") or None,
                options=options,
            )
        except LookupError as exc:
            return _api_error(404, str(exc))
        except ActionRefused as exc:
            return _api_error(400, str(exc))
        return _json(result)

    return handler


# -- pages -----------------------------------------------------------------------------------


async def page_batches(console: Console, request: Request, who: Who) -> Response:
    flt = _batch_filter(request)
    data = await run_in_threadpool(queries.batch_list, console.ledger, flt)
    return _render(
        console,
        request,
        "batches.html",
        who,
        batches=data,
        flt=flt,
        states=[s.value for s in ItemState],
        query=request.url.query,
    )


async def fragment_batches(console: Console, request: Request, who: Who) -> Response:
    data = await run_in_threadpool(queries.batch_list, console.ledger, _batch_filter(request))
    return _render(console, request, "_batch_rows.html", who, batches=data)


def _batch_view(console: Console, batch_id: str, flt: queries.ItemFilter) -> dict[str, Any]:
    summary = queries.batch_summary(console.ledger, batch_id)
    if summary is None:
        raise LookupError(batch_id)
    rows, cursor = queries.items_page(console.ledger, batch_id, flt)
    timings = queries.stage_timings(console.ledger, batch_id, sample=TIMING_SAMPLE)
    return {
        "b": summary,
        "items": rows,
        "next": cursor,
        "failures": queries.failure_groups(console.ledger, batch_id),
        "timings": timings,
        "chart": timing_chart(timings),
        "actions": [
            queries.action_json(a) for a in console.ledger.actions_of(batch_id=batch_id, limit=20)
        ],
    }


async def page_batch(console: Console, request: Request, who: Who) -> Response:
    batch_id = request.path_params["batch"]
    flt = _item_filter(request)
    try:
        view = await run_in_threadpool(_batch_view, console, batch_id, flt)
    except LookupError:
        return _render(
            console, request, "error.html", who, message=f"no batch {batch_id}", status=404
        )
    except queries.BadCursor as exc:
        return _render(console, request, "error.html", who, message=str(exc), status=400)
    base = {k: v for k, v in {"state": flt.state, "code": flt.code, "q": flt.q}.items() if v}
    return _render(
        console,
        request,
        "batch.html",
        who,
        flt=flt,
        base=base,
        states=[s.value for s in ItemState],
        flash=request.query_params.get("done"),
        query=request.url.query,
        **view,
    )


async def fragment_counts(console: Console, request: Request, who: Who) -> Response:
    summary = await run_in_threadpool(
        queries.batch_summary, console.ledger, request.path_params["batch"]
    )
    if summary is None:
        return HTMLResponse("", status_code=404)
    return _render(console, request, "_counts.html", who, b=summary)


async def fragment_items(console: Console, request: Request, who: Who) -> Response:
    batch_id = request.path_params["batch"]
    try:
        rows, _ = await run_in_threadpool(
            queries.items_page, console.ledger, batch_id, _item_filter(request)
        )
    except queries.BadCursor:
        return HTMLResponse("", status_code=400)
    return _render(console, request, "_item_rows.html", who, items=rows, batch_id=batch_id)


async def page_item(console: Console, request: Request, who: Who) -> Response:
    row = _find(console, request)
    if row is None:
        return _render(console, request, "error.html", who, message="no such item", status=404)
    batch = console.ledger.batch(row.batch_id) or {}
    detail = await run_in_threadpool(queries.item_detail, console.ledger, row)
    sentences = await run_in_threadpool(queries.read_transcript, batch, row, console.store_for)
    audio = _audio_url(console, row)
    return _render(
        console,
        request,
        "item.html",
        who,
        item=detail,
        events=queries.timeline(detail),
        sentences=sentences,
        audio=audio,
        flash=request.query_params.get("done"),
    )


def _audio_url(console: Console, row: ItemRow) -> str | None:
    if queries.local_audio(row.source) is not None:
        return f"/audio/{quote(row.batch_id, safe='')}/{quote(row.key, safe='/')}"
    if row.source.startswith(("s3://", "oss://")) and console.store_for is not None:
        from pipeline.storage import split_url

        scheme, bucket, key = split_url(row.source)
        try:
            return str(console.store_for(f"{scheme}://{bucket}").presign(key, expires_s=3600))
        except Exception:  # no player rather than no page
            return None
    return None


async def audio(console: Console, request: Request, who: Who) -> Response:
    row = _find(console, request)
    path = queries.local_audio(row.source) if row is not None else None
    if path is None:
        return Response("no audio", status_code=404)
    return FileResponse(path)


async def page_dead(console: Console, request: Request, who: Who) -> Response:
    data = await run_in_threadpool(queries.dead_items, console.ledger)
    return _render(console, request, "dead.html", who, items=data)


async def page_schedules(console: Console, request: Request, who: Who) -> Response:
    from pipeline.console.fleet import schedules

    data = await run_in_threadpool(schedules, console.settings, console.ledger)
    return _render(console, request, "schedules.html", who, schedules=data)


async def page_fleet(console: Console, request: Request, who: Who) -> Response:
    from pipeline.console.fleet import fleet_status

    data = None
    if console.out_dir is None:
        data = await run_in_threadpool(fleet_status, console.settings, console.ledger)
    return _render(console, request, "fleet.html", who, fleet=data)


async def page_confirm(console: Console, request: Request, who: Who) -> Response:
    p = request.query_params
    action, batch_id, item_key = p.get("action", ""), p.get("batch", ""), p.get("item") or None
    allowed = ITEM_ACTIONS if item_key else BATCH_ACTIONS
    if action not in allowed or console.ledger.batch(batch_id) is None:
        return _render(console, request, "error.html", who, message="unknown action", status=404)
    if not who.can_act:
        return _render(
            console,
            request,
            "error.html",
            who,
            message="read-only session: actions are refused",
            status=403,
        )
    summary = queries.batch_summary(console.ledger, batch_id)
    return _render(
        console,
        request,
        "confirm.html",
        who,
        action=action,
        batch_id=batch_id,
        item_key=item_key,
        b=summary,
    )


async def do_action(console: Console, request: Request, who: Who) -> Response:
    form = await request.form()
    action = str(form.get("action") or "")
    batch_id = str(form.get("batch") or "")
    item_key = str(form.get("item") or "") or None
    row = None
    if item_key:
        row = queries.find_item(console.ledger, batch_id, item_key)
        if row is None:
            return _render(console, request, "error.html", who, message="no such item", status=404)
    try:
        options = _form_options(str(form.get("options") or ""))
        result = await run_in_threadpool(
            perform,
            console,
            action,
            batch_id,
            row,
            actor=who.actor,
            model=str(form.get("model") or "") or None,
            engine=str(form.get("engine") or "") or None,
            options=options,
        )
    except LookupError as exc:
        return _render(console, request, "error.html", who, message=str(exc), status=404)
    except ActionRefused as exc:
        return _render(console, request, "error.html", who, message=str(exc), status=400)
    done = quote(f"{action}: {_said(result)}", safe="")
    target = (
        f"/items/{quote(batch_id, safe='')}/{quote(item_key, safe='/')}"
        if item_key
        else f"/batches/{quote(batch_id, safe='')}"
    )
    return RedirectResponse(f"{target}?done={done}", status_code=303)


def _said(result: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in result.items() if isinstance(v, int)]
    return ", ".join(parts) or "done"


def _form_options(text: str) -> dict[str, Any] | None:
    """``key=value`` lines (values parsed as JSON when they are) or one JSON object."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ActionRefused("options: not a JSON object") from exc
        if not isinstance(value, dict):
            raise ActionRefused("options: not a JSON object")
        return value
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not line.strip():
            continue
        if not sep or not key:
            raise ActionRefused(f"options: {line.strip()!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out


# -- live updates ----------------------------------------------------------------------------


async def events(console: Console, request: Request, who: Who) -> Response:
    """Server-sent events: the batch's counts (or the batch list) whenever they change."""
    batch_id = request.path_params.get("batch")
    flt = _batch_filter(request)

    async def stream() -> AsyncIterator[str]:
        last = None
        while not await request.is_disconnected():
            started = time.monotonic()
            if batch_id is not None:
                summary = await run_in_threadpool(queries.batch_summary, console.ledger, batch_id)
                html = _render(console, request, "_counts.html", who, b=summary).body
            else:
                data = await run_in_threadpool(queries.batch_list, console.ledger, flt)
                html = _render(console, request, "_batch_rows.html", who, batches=data).body
            text = bytes(html).decode()
            if text != last:
                last = text
                data_lines = "".join(f"data: {line}\n" for line in text.splitlines() or [""])
                yield f"event: update\n{data_lines}\n"
            else:
                yield ": idle\n\n"
            # A huge batch's summary takes a few hundred ms: the database never spends more
            # than a fifth of its time on one open page.
            await asyncio.sleep(max(console.poll_s, 4 * (time.monotonic() - started)))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# -- the app ---------------------------------------------------------------------------------


def csp_for(settings: Settings) -> str:
    """The policy, letting the audio player read presigned URLs from the S3 endpoint when
    one is set: an in-cluster MinIO or Ceph often answers plain http, which ``https:``
    alone would block."""
    endpoint = urlsplit(settings.s3_endpoint_url or "")
    extra = f" {endpoint.scheme}://{endpoint.netloc}" if endpoint.scheme == "http" else ""
    return CSP.format(media=extra)


class SecurityHeaders:
    """Pure ASGI (streams, SSE included, pass straight through): the headers on every
    response."""

    def __init__(self, app: Any, csp: str = CSP.format(media="")) -> None:
        self.app = app
        self.headers = {"content-security-policy": csp, **SECURITY_HEADERS}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in self.headers.items()
                    if k.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(console: Console) -> Starlette:
    item = "/{batch}/{item:path}"
    routes = [
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST", "GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        # JSON API
        Route("/api/batches", api(api_batches)),
        Route("/api/fleet", api(api_fleet)),
        Route("/api/batches/{batch}", api(api_batch)),
        Route("/api/batches/{batch}/items", api(api_items)),
        *[
            Route(
                f"/api/batches/{{batch}}/{a}",
                api(_api_action(a, item=False), write=True),
                methods=["POST"],
            )
            for a in sorted(BATCH_ACTIONS)
        ],
        *[
            Route(
                f"/api/items{item}/{a}",
                api(_api_action(a, item=True), write=True),
                methods=["POST"],
            )
            for a in sorted(ITEM_ACTIONS)
        ],
        Route(f"/api/items{item}", api(api_item)),
        # pages
        Route("/", page(page_batches)),
        Route("/fragments/batches", page(fragment_batches)),
        Route("/events/batches", page(events)),
        Route("/batches/{batch}", page(page_batch)),
        Route("/fragments/batches/{batch}/counts", page(fragment_counts)),
        Route("/fragments/batches/{batch}/items", page(fragment_items)),
        Route("/events/batches/{batch}", page(events)),
        Route(f"/items{item}", page(page_item)),
        Route(f"/audio{item}", page(audio)),
        Route("/dead", page(page_dead)),
        Route("/schedules", page(page_schedules)),
        Route("/fleet", page(page_fleet)),
        Route("/confirm", page(page_confirm)),
        Route("/do", page(do_action, write=True), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes, middleware=[Middleware(SecurityHeaders, csp=csp_for(console.settings))]
    )
    app.state.console = console
    return app
