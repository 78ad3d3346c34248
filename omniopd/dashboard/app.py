"""The dashboard's web app (aiohttp): one static page and three read-only JSON endpoints.

    GET /                          the page (static/index.html, dashboard.js, dashboard.css)
    GET /api/runs                  every source (config or run directory) and the runs in its store
    GET /api/run?source=S&run=R    one run: budgets, spend, rate limits, learner, evaluations, workers
    GET /api/live?source=S&run=R   the broker now: queues, in flight, pings, rate-limit buckets

Read-only by construction: only GET routes exist; each store is opened with
`open_store(read_only=True)` and its connections refuse writes in the database itself
(`db.session.refuse_writes`); the broker is asked for queue depths and a ping (Celery's
ping leaves its own expiring reply bindings, nothing of the run's), the rate limiter is
read with plain Redis reads (omniopd/dashboard/live.py). Database and broker calls run in worker threads,
so a store that hangs or is down never stops the page from answering: every failure comes
back as JSON `{"error": "<what is wrong and what to do>"}` and the page shows the words.

Secrets: no endpoint sends a config as it is, and every JSON body passes `Redactor`, which
masks the values of the teachers' API-key variables (and any piece of 8 characters or
more of them) and the passwords in store and broker URLs, should an error message quote one.

Access: bound to 127.0.0.1 unless told otherwise; any other address needs a token (the CLI
refuses to start without one), given once as `?token=...` (it is then kept in a cookie),
or as `Authorization: Bearer ...`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from db.repo_runs import RunNotFound
from omniopd.dashboard.live import broker_state
from omniopd.dashboard.snapshot import run_list, run_snapshot
from omniopd.dashboard.sources import RunSpec, Source, Stores, StoreUnavailable

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_COOKIE = "omniopd_dashboard_token"
TOKEN_ENV = "OMNIOPD_DASHBOARD_TOKEN"
SECRET_PIECE = 8  # a run of this many characters of a key counts as revealing it
SPEC, STORES, TOKEN = web.AppKey("spec", RunSpec), web.AppKey("stores", Stores), web.AppKey("token", str)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the page on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Redactor:
    """Masks secrets in text: API keys named by the configs' `api_key_env` and URL passwords."""

    def __init__(self, secrets: Iterable[str]):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def for_sources(cls, sources: list[Source]) -> Redactor:
        found = []
        for source in sources:
            cfg = source.config
            if cfg is None:
                continue
            for teacher in cfg.teachers.values():
                if teacher.api_key_env and os.environ.get(teacher.api_key_env):
                    found.append(os.environ[teacher.api_key_env])
            for url in (cfg.store_url, cfg.broker.url):
                try:
                    password = make_url(url).password
                except Exception:  # not a URL SQLAlchemy can parse: nothing to take from it
                    continue
                if password:
                    found.append(str(password))
        return cls(found)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
            # also any long enough piece of it (a fingerprint, a key cut short in a message)
            for start in range(0, len(secret) - SECRET_PIECE + 1):
                piece = secret[start : start + SECRET_PIECE]
                if piece in text:
                    text = text.replace(piece, "***")
        return text


def _json(request: web.Request, data: Any, status: int = 200) -> web.Response:
    spec = request.app[SPEC]
    body = Redactor.for_sources(spec.sources())(json.dumps(data, default=str, allow_nan=False))
    return web.Response(text=body, status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _error(request: web.Request, message: str, status: int) -> web.Response:
    return _json(request, {"error": message}, status)


def _find(request: web.Request) -> tuple[Source, str]:
    """The source and run named by the query (?source=S&run=R); HTTPNotFound in words otherwise."""
    label, run = request.query.get("source", ""), request.query.get("run", "")
    sources = request.app[SPEC].sources()
    source = next((s for s in sources if s.label == label), None)
    if source is None:
        known = ", ".join(s.label for s in sources) or "none"
        raise _NotFound(f"unknown source {label!r} (sources: {known})")
    if not run:
        raise _NotFound("no run named: add ?run=NAME")
    return source, run


class _NotFound(LookupError):
    pass


async def _in_thread(func, *args, **kwargs):
    return await asyncio.to_thread(func, *args, **kwargs)


def _read(stores: Stores, source: Source, reader) -> Any:
    """Run `reader(session)` in one read-only transaction of the source's store."""
    store = stores.get(source)
    with store.sessions.begin() as session:
        return reader(session)


def _store_failure(exc: Exception) -> str:
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return (f"the store cannot be read now ({type(exc).__name__}: {reason}); the page retries by itself. "
            "Check that the database server runs and store.url points at it")


async def runs(request: web.Request) -> web.Response:
    spec, stores = request.app[SPEC], request.app[STORES]
    out = []
    for source in spec.sources():
        entry: dict[str, Any] = {"source": source.label, "config": str(source.config_path)}
        try:
            entry["runs"] = await _in_thread(_read, stores, source, run_list)
        except (StoreUnavailable, SQLAlchemyError, OSError) as exc:
            entry["error"], entry["runs"] = _store_failure(exc), []
        out.append(entry)
    message = None if out else "no runs to show: give --config FILE or --workdir DIR (a directory of run directories)"
    return _json(request, {"sources": out, "message": message})


async def run_detail(request: web.Request) -> web.Response:
    try:
        source, run = _find(request)
    except _NotFound as exc:
        return _error(request, str(exc), 404)
    config = source.config if source.config is not None and source.config.run.name == run else None
    try:
        data = await _in_thread(_read, request.app[STORES], source,
                                lambda s: run_snapshot(s, run_name=run, config=config))
    except RunNotFound as exc:
        return _error(request, f"{source.label}: {exc}", 404)
    except (StoreUnavailable, SQLAlchemyError, OSError) as exc:
        return _error(request, f"{source.label}: {_store_failure(exc)}", 503)
    data["source"] = source.label
    return _json(request, data)


async def live(request: web.Request) -> web.Response:
    try:
        source, run = _find(request)
    except _NotFound as exc:
        return _error(request, str(exc), 404)
    config = source.config
    if config is None or config.run.name != run:
        known = "unreadable" if config is None else f"for run {config.run.name!r}"
        return _json(request, {"error": f"the broker of run {run!r} is not known here: its config "
                                         f"({source.config_path}) is {known}"})
    return _json(request, await _in_thread(broker_state, config))


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@web.middleware
async def guard(request: web.Request, handler):
    """Token check (when one is set) and headers that keep the page to itself."""
    token = request.app[TOKEN]
    set_cookie = False
    if token:
        offered = request.cookies.get(TOKEN_COOKIE) or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered = auth[len("Bearer "):]
        if "token" in request.query:
            offered, set_cookie = request.query["token"], True
        if not hmac.compare_digest(offered.encode(), token.encode()):
            return web.json_response(
                {"error": "this dashboard needs its token: open the address with ?token=... as printed where it was "
                          f"started (or send Authorization: Bearer ...; the token is in {TOKEN_ENV} or --token)"},
                status=401)
    response = await handler(request)
    if set_cookie:
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def make_app(spec: RunSpec, *, token: str = "") -> web.Application:
    """The dashboard for the runs of `spec` (GET only; see the module docstring)."""
    app = web.Application(middlewares=[guard])
    app[SPEC], app[STORES], app[TOKEN] = spec, Stores(), token
    app.router.add_get("/", index)
    app.router.add_get("/api/runs", runs)
    app.router.add_get("/api/run", run_detail)
    app.router.add_get("/api/live", live)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)

    async def close_stores(app: web.Application) -> None:
        app[STORES].close()

    app.on_cleanup.append(close_stores)
    return app
