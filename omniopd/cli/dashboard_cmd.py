"""`omniopd dashboard`: a live web page of one or more runs (spend, limits, queues, learning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import console, fail


def dashboard(
    config: Annotated[
        list[Path] | None,
        typer.Option("--config", "-c", help="Config of a run to show (repeatable).", show_default=False),
    ] = None,
    workdir: Annotated[
        list[Path] | None,
        typer.Option("--workdir", "-w", help="Also show every run directory under DIR (DIR/*/config.yaml, as "
                     "`omniopd demo` writes them: the ablation and sweep variants side by side; repeatable).",
                     show_default=False),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind. Anything but a loopback address needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8265,
    token: Annotated[
        str | None,
        typer.Option(help="Token the page asks for (default: the OMNIOPD_DASHBOARD_TOKEN environment variable; "
                     "prefer it, a command line is visible to other users).", show_default=False),
    ] = None,
) -> None:
    """Serve a live dashboard of runs: spend against every cap, rate limits, queues, learning, Pass@1.

    One page, refreshing itself every few seconds while a run is live and showing the whole
    history of a finished one: spend over time per teacher and for the run against each cap
    and the forecast of `omniopd plan`, cost per trajectory; calls per minute, 429s and errors
    per provider with the shared limiter's buckets; queue depths, worker heartbeats and policy
    lag; loss, KL and the Bayesian proxy per step; Pass@1 with its interval per evaluation.
    Several runs (the variants of one `omniopd demo --workdir DIR`) are listed side by side.

    Read-only: it never writes to a store (its connections refuse writes) or to the rate
    limiter's state, asks the broker only for queue depths and a ping, and never shows an
    API key. Binds 127.0.0.1; another --host needs a token.
    """
    from aiohttp import web

    from omniopd.dashboard.app import TOKEN_ENV, is_loopback, make_app
    from omniopd.dashboard.sources import RunSpec

    if not config and not workdir:
        fail("nothing to show: give --config FILE (a run's config) or --workdir DIR (a directory of run directories)")
    for path in config or []:
        if not path.is_file():
            fail(f"--config {path}: no such file")
    for path in workdir or []:
        if not path.is_dir():
            fail(f"--workdir {path}: no such directory")
    secret = token or os.environ.get(TOKEN_ENV, "")
    if not is_loopback(host) and not secret:
        fail(f"--host {host} is reachable from other machines: set a token ({TOKEN_ENV}=... or --token), "
             "or bind 127.0.0.1")
    app = make_app(RunSpec(tuple(config or ()), tuple(workdir or ())), token=secret)

    shown = f"[{host}]" if ":" in host else host
    suffix = " (open it with ?token=<your token>)" if secret else ""
    # aiohttp's own banner would not say that a token is needed; print the address, never the token
    web.run_app(app, host=host, port=port, access_log=None,
                print=lambda _banner: console.print(f"dashboard: http://{shown}:{port}/{suffix}", highlight=False,
                                                    soft_wrap=True))
