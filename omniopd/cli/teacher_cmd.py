"""`omniopd teacher check|emulate`: probe configured teachers; run the provider emulator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import ConfigOpt, JsonOpt, SetOpt, console, fail, load
from omniopd.providers import PROVIDER_SPECS

app = typer.Typer(help="Teacher endpoints: probe them before paying, or emulate one locally.", no_args_is_help=True)

PROVIDER_KINDS = tuple(PROVIDER_SPECS)


@app.command("clear-alarm")
def clear_alarm_cmd(
    config: ConfigOpt,
    teacher: str = typer.Argument(..., help="The teacher (a key of `teachers`) whose alarm to clear."),
    set_: SetOpt = None,
) -> None:
    """Let a teacher that billed above a reservation audit again, once its prices and output
    limits are fixed (the alarm is in `omniopd spend` and `status`)."""
    cfg = load(config, set_)
    from db.migrate import SchemaNotCurrent
    from db.repo_budget import BudgetNotConfigured, clear_alarm
    from db.repo_runs import RunNotFound, get_run
    from db.store import open_store

    try:
        store = open_store(cfg, config, pool_size=1)
    except (SchemaNotCurrent, ValueError) as exc:
        fail(str(exc))
    try:
        with store.sessions.begin() as session:
            alarm = clear_alarm(session, run_id=get_run(session, name=cfg.run.name).id, provider=teacher)
    except (RunNotFound, BudgetNotConfigured) as exc:
        fail(str(exc))
    finally:
        store.dispose()
    console.print(f"cleared: {alarm}" if alarm else f"teacher {teacher} had no alarm", soft_wrap=True, highlight=False)


@app.command("check")
def check(
    config: ConfigOpt,
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Name of the teacher to check (a key of `teachers`); default: all.")] = None,
    max_cost: Annotated[float, typer.Option("--max-cost", help="Refuse the probe if its worst case could cost more than this (USD).")] = 0.05,
    json_: JsonOpt = False,
    set_: SetOpt = None,
) -> None:
    """One tiny real call per configured teacher, before money is committed: does it answer, which continuation mode does it accept (a rejected prefill falls back to the instruction form), which sampling and thinking settings (and API version) it accepted — a refusal names the config key to change —, does it report usage, what did the call cost at the configured prices, how long is its context. Exits 1 if any teacher fails a check.

    Example: omniopd teacher check -c configs/qwen3-4b_claude-haiku.yaml --provider claude-haiku
    """
    import asyncio

    from omniopd.teachers.check import check_teacher

    cfg = load(config, set_)
    if not cfg.teachers:
        fail(f"{config}: no `teachers` configured")
    if provider is not None and provider not in cfg.teachers:
        fail(f"--provider {provider!r} is not a teacher in {config} (known: {', '.join(sorted(cfg.teachers))})")
    names = [provider] if provider else sorted(cfg.teachers)

    async def run_all():
        return [await check_teacher(n, cfg.teachers[n], prices_file=cfg.audit.prices_file, max_cost_usd=max_cost) for n in names]

    reports = asyncio.run(run_all())
    if json_:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for r in reports:
            status = "[green]ok[/]" if r.ok else "[bold red]FAILED[/]"
            console.print(f"{status} {r.teacher} ({r.kind}, {r.model})", highlight=False)
            console.print(f"  continuation mode: configured {r.mode_configured}, accepted {r.mode_used or '-'}", highlight=False)
            accepted = {True: "accepted", False: "REFUSED", None: "not tried"}[r.settings_accepted]
            version = f" (API version {r.api_version})" if r.api_version else ""
            console.print(f"  sampling: {r.sampling}; thinking: {r.thinking}{version}: {accepted}", highlight=False, markup=False)
            console.print(f"  context window: {r.context_window if r.context_window is not None else 'not published'}", highlight=False)
            if r.usage is not None:
                console.print(f"  usage: {r.usage} (reported: {'yes' if r.usage_reported else 'no'})", highlight=False)
            if r.cost_usd is not None:
                console.print(f"  cost: ${r.cost_usd:.6f} (reserved up to ${r.reserved_usd or 0:.6f}), {r.attempts} attempt(s)"
                              + ("" if r.latency_s is None else f", {r.latency_s}s"), highlight=False)
            if r.text is not None:
                console.print(f"  continuation: {r.text!r}", highlight=False, markup=False)
            for note in r.notes:
                console.print(f"  note: {note}", highlight=False, markup=False)
            for problem in r.problems:
                console.print(f"  problem: {problem}", highlight=False, markup=False, style="red")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command("emulate")
def emulate(
    provider: Annotated[str, typer.Option("--provider", "-p", help=f"Provider kind (its wire format and rules): {', '.join(PROVIDER_KINDS)}.")],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port, printed).")] = 8765,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config: take the model name and rate limits from its teacher of this provider kind.")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="With --config: which teacher to emulate (default: the audit teacher, else the first of this kind).")] = None,
    emulator_config: Annotated[Path | None, typer.Option("--emulator-config", help="YAML with EmulatorConfig fields (limits, cache, latency, faults, ...).")] = None,
    generator: Annotated[str | None, typer.Option("--generator", help="echo, lorem, scripted:FILE, hf:MODEL_DIR (a local causal LM) or py:MODULE:FACTORY (a Python generator).")] = None,
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="Accept only the key in this environment variable (default: any non-empty key).")] = None,
    rpm: Annotated[float | None, typer.Option("--rpm", help="Requests per minute.")] = None,
    itpm: Annotated[float | None, typer.Option("--itpm", help="Input tokens per minute.")] = None,
    otpm: Annotated[float | None, typer.Option("--otpm", help="Output tokens per minute.")] = None,
    tpm: Annotated[float | None, typer.Option("--tpm", help="Input + output tokens per minute.")] = None,
    burst_s: Annotated[float | None, typer.Option("--burst-s", help="Bucket depth in seconds of each limit (providers: 60).")] = None,
    no_retry_after: Annotated[bool, typer.Option("--no-retry-after", help="Send 429s without Retry-After / retryDelay.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Report no prompt caching at all.")] = False,
    ttft_ms: Annotated[float | None, typer.Option("--ttft-ms", help="Time to first token, ms.")] = None,
    per_token_ms: Annotated[float | None, typer.Option("--per-token-ms", help="Decode time per output token, ms.")] = None,
    error_rate: Annotated[float | None, typer.Option("--error-rate", help="Fraction of 5xx responses.")] = None,
    timeout_rate: Annotated[float | None, typer.Option("--timeout-rate", help="Fraction of requests that hang.")] = None,
    malformed_rate: Annotated[float | None, typer.Option("--malformed-rate", help="Fraction of 200s with a non-JSON body.")] = None,
    empty_rate: Annotated[float | None, typer.Option("--empty-rate", help="Fraction of responses with empty texts.")] = None,
    reject_prefill: Annotated[bool, typer.Option("--reject-prefill", help="Answer assistant prefill with a 400 (like Claude 4.6+).")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of fault draws and the lorem generator.")] = None,
) -> None:
    """Serve a local stand-in for a teacher API (the wire format of any provider kind) on 127.0.0.1, with rate limits (real 429s and headers), prompt-cache accounting and injected faults. Runs until Ctrl-C.

    Example: omniopd teacher emulate --provider anthropic --port 8765 --rpm 600 --error-rate 0.05
    """
    import yaml

    from omniopd.teachers.emulator import EmulatorConfig, serve

    if provider not in PROVIDER_KINDS:
        fail(f"--provider must be one of {', '.join(PROVIDER_KINDS)}, got {provider!r}")
    data: dict = yaml.safe_load(emulator_config.read_text()) if emulator_config else {}
    data = data or {}
    data["provider"] = provider
    if config is not None:
        _from_run_config(data, config, provider, teacher)
    limits, cache, latency, faults = (data.setdefault(k, {}) for k in ("limits", "cache", "latency", "faults"))
    for key, value in (("requests_per_min", rpm), ("input_tokens_per_min", itpm), ("output_tokens_per_min", otpm), ("tokens_per_min", tpm), ("burst_s", burst_s)):
        if value is not None:
            limits[key] = value
    if no_retry_after:
        limits["retry_after"] = False
    if no_cache:
        cache["enabled"] = False
    for key, value in (("ttft_s", ttft_ms), ("per_token_s", per_token_ms)):
        if value is not None:
            latency[key] = value / 1000.0
    for key, value in (("error_rate", error_rate), ("timeout_rate", timeout_rate), ("malformed_rate", malformed_rate), ("empty_rate", empty_rate)):
        if value is not None:
            faults[key] = value
    if reject_prefill:
        faults["reject_prefill"] = True
    if generator is not None:
        data["generator"] = generator
    if seed is not None:
        data["seed"] = seed
    if api_key_env is not None:
        if not os.environ.get(api_key_env):
            fail(f"--api-key-env {api_key_env}: the variable is not set")
        data["api_key"] = os.environ[api_key_env]
    try:
        emu_config = EmulatorConfig.model_validate(data)
    except ValueError as exc:
        fail(f"bad emulator settings: {exc}")

    def ready(bound: int) -> None:
        console.print(f"emulating {provider} on http://127.0.0.1:{bound} (Ctrl-C to stop)", highlight=False)

    serve(emu_config, port, ready=ready)


def _from_run_config(data: dict, config: Path, provider: str, teacher: str | None) -> None:
    """Copy the emulated teacher's model and rate limits from a run config."""
    cfg = load(config, [])
    if teacher is not None:
        if teacher not in cfg.teachers:
            fail(f"--teacher {teacher!r} is not in {config}")
        chosen = cfg.teachers[teacher]
    else:
        active = cfg.active_teacher
        matching = [t for t in cfg.teachers.values() if t.kind == provider]
        chosen = active if active is not None and active.kind == provider else (matching[0] if matching else None)
    if chosen is None:
        fail(f"{config} has no teacher of kind {provider}")
    if chosen.kind != provider:
        fail(f"teacher {teacher!r} is of kind {chosen.kind}, not {provider}")
    data.setdefault("models", [chosen.model])
    rl = chosen.rate_limits
    limits = data.setdefault("limits", {})
    for key in ("requests_per_min", "input_tokens_per_min", "output_tokens_per_min", "tokens_per_min"):
        if getattr(rl, key) is not None:
            limits.setdefault(key, getattr(rl, key))
