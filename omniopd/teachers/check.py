"""`omniopd teacher check`: one tiny real call per configured teacher before money is
committed. Reports whether the endpoint answers, which continuation mode it accepted
(a rejected prefill falls back to the instruction form), which sampling and thinking
settings were sent and accepted (the API version with them), the usage it reports, what
the call cost at the configured prices, and the context window where the provider says
it. A refusal names the config key to change."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniopd.config import TeacherConfig
from omniopd.money import micros_to_usd, usd_to_micros
from omniopd.teachers.budget import InMemoryBudgetGuard
from omniopd.teachers.build import build_teacher, teacher_price
from omniopd.teachers.client import TeacherClient
from omniopd.teachers.pricing import PricingError
from omniopd.teachers.ratelimit import LocalRateLimiter, NullRateLimiter, Rates
from omniopd.teachers.types import TeacherError, Usage

PROMPT = "Count from one to twenty in English words, separated by commas."
PREFIX = "one, two, three, four,"
MAX_NEW_TOKENS = 16


@dataclass
class CheckReport:
    """Outcome of probing one teacher; `ok` is True only if every check passed."""

    teacher: str
    kind: str
    model: str
    ok: bool = False
    mode_configured: str = ""
    mode_used: str | None = None
    context_window: int | None = None
    usage: dict[str, int] | None = None
    usage_reported: bool = False
    cost_usd: float | None = None
    reserved_usd: float | None = None
    latency_s: float | None = None
    api_version: str | None = None
    """The API version the requests named (Anthropic header, Gemini path); None where the provider has none."""
    sampling: str = ""
    """The sampling settings sent, e.g. 'temperature 0.7' or 'no temperature (1.0 is the API default)'."""
    thinking: str = ""
    """The thinking settings sent, e.g. 'thinkingBudget 0 (off)', 'thinkingLevel MINIMAL'."""
    settings_accepted: bool | None = None
    """Whether the provider accepted those settings (None: the call never reached it)."""
    attempts: int = 0
    text: str | None = None
    problems: list[str] = field(default_factory=list)
    """What must be fixed before auditing with this teacher."""
    notes: list[str] = field(default_factory=list)
    """What works but could be configured better."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def check_teacher(name: str, cfg: TeacherConfig, *, prices_file: str | Path, max_cost_usd: float = 0.05) -> CheckReport:
    """Probe one teacher with a single tiny call, spending at most `max_cost_usd`."""
    report = CheckReport(teacher=name, kind=cfg.kind, model=cfg.model, mode_configured=cfg.continuation_mode)
    try:
        price = teacher_price(cfg, prices_file)
    except PricingError as exc:
        report.problems.append(str(exc))
        return report
    rates = Rates.from_config(cfg.rate_limits)
    limiter = NullRateLimiter() if rates.unlimited else LocalRateLimiter(rates)
    try:
        client = build_teacher(cfg, limiter=limiter)
    except (TeacherError, ValueError) as exc:
        report.problems.append(str(exc))
        return report
    report.api_version = client.api_version.name if client.api_version is not None else None
    report.sampling, report.thinking = describe_settings(client, cfg)
    guard = InMemoryBudgetGuard(usd_to_micros(max_cost_usd), name="teacher check (--max-cost)")
    async with client:
        report.context_window = await client.context_window()
        t0 = time.monotonic()
        try:
            result = await client.continue_prefix(
                PROMPT, PREFIX, n=1, max_new_tokens=MAX_NEW_TOKENS, guard=guard, price=price, call_key=f"check-{name}"
            )
        except TeacherError as exc:
            report.problems.append(str(exc))
            partial = exc.partial
            report.attempts = len(partial.attempts) if partial else 0
            refused = {a.error_class for a in partial.attempts} if partial else set()
            if refused & set(_KEYS):
                report.settings_accepted = False
                keys = sorted({k for c in refused & set(_KEYS) for k in _KEYS[c] if k != "api_version" or cfg.spec.api_versions})
                report.problems.append(f"change {', '.join(f'teachers.{name}.{k}' for k in keys)} in the config")
            report.cost_usd = micros_to_usd(guard.spent)  # unknown outcomes counted at their reservation
            return report
        report.settings_accepted = True
        report.latency_s = round(time.monotonic() - t0, 3)
    report.attempts = len(result.attempts)
    report.mode_used = result.mode
    report.text = result.texts[0]
    # every attempt that returned text must have reported usage, or cost is guesswork
    report.usage_reported = all(a.status == "ok" for a in result.attempts if a.n_texts > 0)
    usage: Usage = result.usage
    report.usage = asdict(usage)
    report.cost_usd = micros_to_usd(guard.spent)  # reported usage at our prices, unknown outcomes at R
    report.reserved_usd = micros_to_usd(sum(s.reserved_micros for s in guard.settled))
    if not report.usage_reported:
        report.problems.append("the provider returned no usage: cost cannot be computed from the response")
    if usage.total_input == 0 or usage.total_output == 0:
        report.problems.append(f"implausible usage {usage}: check the provider's usage fields")
    if result.mode != cfg.continuation_mode:
        report.notes.append(
            f"continuation mode {cfg.continuation_mode!r} was rejected and the client fell back to "
            f"{result.mode!r}; set `continuation: {result.mode}` to skip the failed first attempt"
        )
    report.ok = not report.problems
    return report


_KEYS = {
    "sampling_refused": ("temperature", "api_version"),
    "thinking_refused": ("reasoning_tokens", "thinking_level"),
    "auth": ("api_key_env",),
    "not_found": ("model", "base_url"),
    "refused": ("model", "api_version"),
}
"""The config keys behind each refusal (error classes: omniopd/teachers/httpinfo.py)."""


def describe_settings(client: TeacherClient, cfg: TeacherConfig) -> tuple[str, str]:
    """What the client sends for sampling and thinking, in words (from the provider registry's
    rules for this model, omniopd/providers.py)."""
    spec = client.spec
    version = client.api_version.name if client.api_version is not None else None
    sent = spec.temperature_to_send(cfg.model, cfg.temperature, version)  # valid: config validation checked it
    if sent is not None:
        sampling = f"temperature {sent}"
    elif cfg.temperature is None:
        sampling = "no temperature (configured null)"
    else:
        sampling = f"no temperature ({spec.sampling.default_temperature} is the API's default)"
    rules = spec.model_rules(cfg.model)
    if client.thinking.budget is not None:
        thinking = f"thinkingBudget {client.thinking.budget}" + (" (off)" if client.thinking.budget == 0 else "")
    elif client.thinking.level is not None:
        thinking = f"thinkingLevel {client.thinking.level.upper()}"
    elif rules.thinking == "always":
        thinking = "none sent (the model thinks on its own)"
    else:
        thinking = "none sent"
    if cfg.reasoning_tokens:
        thinking += f"; {cfg.reasoning_tokens} output tokens allowed for it"
    return sampling, thinking
