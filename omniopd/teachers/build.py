"""Config -> teacher client, limiter and price (the only place that reads TeacherConfig)."""

from __future__ import annotations

from pathlib import Path

from omniopd.config import TeacherConfig
from omniopd.teachers.client import RetryPolicy, TeacherClient
from omniopd.teachers.pricing import Price, load_prices, price_for
from omniopd.teachers.prompting import ChatTemplate
from omniopd.teachers.providers import PROVIDERS
from omniopd.teachers.ratelimit import Account, RateLimiter, build_limiter
from omniopd.teachers.types import ApiKey


def teacher_account(cfg: TeacherConfig) -> Account:
    """The provider account the teacher's calls count against (`Account.of_teacher`)."""
    return Account.of_teacher(cfg)


def teacher_limiter(cfg: TeacherConfig, *, redis_url: str | None = None, key_prefix: str = "") -> RateLimiter:
    """The teacher's limiter: shared through Redis, with every run and process using the same
    account (`teacher_account`), when `redis_url` is given."""
    return build_limiter(cfg.rate_limits, account=teacher_account(cfg), redis_url=redis_url, key_prefix=key_prefix)


def teacher_price(cfg: TeacherConfig, prices_file: str | Path) -> Price:
    """The teacher's price: its `prices:` override, else the prices-file entry of its model."""
    if cfg.prices is not None:
        return price_for(cfg.model, {}, cfg.prices)
    return price_for(cfg.model, load_prices(prices_file))


def build_teacher(
    cfg: TeacherConfig,
    *,
    limiter: RateLimiter | None = None,
    redis_url: str | None = None,
    key_prefix: str = "",
) -> TeacherClient:
    """A client for one configured teacher. The API key is read from `cfg.api_key_env`
    now (fails with the variable's name if unset, unless the provider needs no key).
    A continuation mode the provider cannot do was already rejected by config validation."""
    cls = PROVIDERS[cfg.kind]
    mode = cfg.continuation_mode
    api_key = ApiKey.from_env(cfg.api_key_env, required=cfg.spec.api_key_required)
    template = None
    if mode == "raw":
        template = ChatTemplate(cfg.chat_template_from or cfg.model)
    rl = cfg.rate_limits
    return cls(
        model=cfg.model,
        base_url=cfg.base_url,
        api_key=api_key,
        mode=mode,
        limiter=limiter if limiter is not None else teacher_limiter(cfg, redis_url=redis_url, key_prefix=key_prefix),
        retry=RetryPolicy(rl.max_retries, rl.backoff_base_s, rl.backoff_max_s),
        timeout_s=cfg.timeout_s,
        max_connections=cfg.max_connections,
        cache=cfg.cache,
        reasoning_tokens=cfg.reasoning_tokens,
        temperature=cfg.temperature,
        chat_template=template,
        api_version=cfg.api_version,
        thinking_level=cfg.thinking_level,
    )
