"""Teachers: continue a student's partial answer N times through any provider, reporting
every HTTP attempt with normalised usage so that budgets, ledgers and rate limits stay
exact (docs/teachers.md; budget semantics in docs/store.md).

    client = build_teacher(cfg.teachers["claude"], redis_url=...)  # buckets shared per account
    async with client:
        result = await client.continue_prefix(prompt, prefix, n=10, max_new_tokens=75,
                                              guard=guard, price=price, call_key=...)

Modules: `client` (the retry/billing loop), `providers/` (wire formats), `ratelimit`
(shared buckets), `pricing` and `budget` (cost and reservation R in micro-USD, the BudgetGuard protocol),
`prompting` (continuation modes), `emulator/` (a local provider for tests and demos),
`check` (the `omniopd teacher check` probe).
"""

from omniopd.teachers.budget import BudgetGuard, InMemoryBudgetGuard, Settlement
from omniopd.teachers.build import build_teacher, teacher_account, teacher_limiter, teacher_price
from omniopd.teachers.client import RetryPolicy, TeacherClient
from omniopd.teachers.pricing import (
    Price,
    PricingError,
    attempt_cost_micros,
    cost_micros,
    cost_usd,
    load_prices,
    price_for,
    reservation_micros,
)
from omniopd.teachers.ratelimit import (
    Account,
    LocalRateLimiter,
    NullRateLimiter,
    RateCost,
    RateLimiter,
    RateLimitSnapshot,
    Rates,
    RedisRateLimiter,
    build_limiter,
    key_fingerprint,
)
from omniopd.teachers.types import (
    ApiKey,
    Attempt,
    AttemptEstimate,
    BudgetExhausted,
    Continuations,
    FatalProviderError,
    QuotaExhausted,
    RetriesExhausted,
    TeacherError,
    Usage,
)

__all__ = [
    "Account",
    "ApiKey",
    "Attempt",
    "AttemptEstimate",
    "BudgetExhausted",
    "BudgetGuard",
    "Continuations",
    "FatalProviderError",
    "InMemoryBudgetGuard",
    "LocalRateLimiter",
    "NullRateLimiter",
    "Price",
    "PricingError",
    "QuotaExhausted",
    "RateCost",
    "RateLimitSnapshot",
    "RateLimiter",
    "Rates",
    "RedisRateLimiter",
    "RetriesExhausted",
    "RetryPolicy",
    "Settlement",
    "TeacherClient",
    "TeacherError",
    "Usage",
    "attempt_cost_micros",
    "build_limiter",
    "build_teacher",
    "cost_micros",
    "cost_usd",
    "key_fingerprint",
    "load_prices",
    "price_for",
    "reservation_micros",
    "teacher_account",
    "teacher_limiter",
    "teacher_price",
]
