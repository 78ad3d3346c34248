"""Teacher prices, the cost of an attempt from its reported usage, and the worst-case
reservation R of an attempt before it is sent.

Prices live in `configs/prices.yaml` (model -> USD per 1M tokens for input, cached input,
cache write and output, with source and date); a teacher's `prices:` block in the run
config overrides its model's entry. Never put prices in code.

Money is an integer number of micro-dollars (omniopd/money.py). A rate of r USD per 1M
tokens is r micro-USD per token, so tokens x rate already is micro-dollars; to keep that
product exact, `Price` converts each rate once, when it is made, into an integer number
of pico-dollars per token (r x 10^6, i.e. micro-USD per 1M tokens; a rate with more than
six decimals is rounded up by `usd_to_micros`). An amount is then an exact integer number
of pico-dollars, rounded once to micro-dollars:

- the reservation R (`reservation_micros`) rounds **up**: it is never below the cost it
  bounds, so a cap is never exceeded;
- the cost of an attempt (`cost_micros`) rounds **up** too: a charge is never understated,
  and is at most 1 micro-USD above the exact amount per attempt. As both round the same
  monotone way, usage within the estimate never costs more than R, exactly.

Forecasts stay float USD (`cost_usd`): they are expectations over fractional token counts
(L/2 prefixes, averaged cache hits), printed next to actuals and compared with a cap only
to warn before a run (`omniopd plan`); whole micro-dollars would add rounding noise to
them and buy no exactness. Nothing that reserves, charges or settles money uses `cost_usd`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omniopd.config import PriceConfig
from omniopd.money import usd_to_micros
from omniopd.teachers.types import Attempt, AttemptEstimate, Usage

PER_TOKEN = 1e-6  # prices are quoted per 1M tokens (forecasts only: float USD)
PICO_PER_MICRO = 1_000_000  # exact amounts are pico-USD; money is micro-USD
RATES = ("input", "cached_input", "cache_write", "output")


class PricingError(ValueError):
    """A prices file or model entry that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ExactRates:
    """A price's four rates as integers: pico-USD per token (= micro-USD per 1M tokens)."""

    input: int
    cached_input: int
    cache_write: int
    output: int


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens of one model, as quoted; all four rates >= 0. `exact` holds the
    same rates as integers, converted once here: money is computed from `exact` only."""

    input: float
    cached_input: float
    cache_write: float
    output: float
    source: str = ""
    date: str = ""
    exact: ExactRates = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in RATES:
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise PricingError(f"price {name} must be a number >= 0 (USD per 1M tokens), got {value}")
        try:
            exact = ExactRates(*(usd_to_micros(getattr(self, name)) for name in RATES))
        except ValueError as exc:  # inf
            raise PricingError(f"price: {exc}") from None
        object.__setattr__(self, "exact", exact)


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read a prices file: {models: {name: {input, cached_input, cache_write, output, source, date}}}."""
    path = Path(path)
    if not path.is_file():
        raise PricingError(f"{path}: no such prices file (set audit.prices_file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PricingError(f"{path}: not valid YAML: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise PricingError(f"{path}: expected a top-level `models:` mapping of model name -> prices")
    prices = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise PricingError(f"{path}: models.{name}: expected a mapping of prices")
        missing = [k for k in RATES if k not in entry]
        if missing:
            raise PricingError(f"{path}: models.{name}: missing {', '.join(missing)} (USD per 1M tokens)")
        try:
            prices[str(name)] = Price(
                input=float(entry["input"]),
                cached_input=float(entry["cached_input"]),
                cache_write=float(entry["cache_write"]),
                output=float(entry["output"]),
                source=str(entry.get("source", "")),
                date=str(entry.get("date", "")),
            )
        except (TypeError, ValueError) as exc:
            raise PricingError(f"{path}: models.{name}: {exc}") from None
    return prices


def price_for(model: str, prices: dict[str, Price], override: PriceConfig | None = None) -> Price:
    """The price of `model`: the config override if given, else the prices-file entry."""
    if override is not None:
        return Price(override.input, override.cached_input, override.cache_write, override.output, source="config override")
    if model in prices:
        return prices[model]
    known = ", ".join(sorted(prices)) or "none"
    raise PricingError(
        f"no price for model {model!r}: add it to the prices file (audit.prices_file) or give the "
        f"teacher a `prices:` block in the config (known models: {known})"
    )


def _micros_rounded_up(pico: int) -> int:
    return -(-pico // PICO_PER_MICRO)


def cost_micros(usage: Usage, price: Price) -> int:
    """What reported usage costs, in micro-USD rounded up: each disjoint count at its own
    rate, reasoning as output."""
    r = price.exact
    return _micros_rounded_up(
        usage.input * r.input
        + usage.cached_input * r.cached_input
        + usage.cache_write * r.cache_write
        + (usage.output + usage.reasoning) * r.output
    )


def reservation_micros(estimate: AttemptEstimate, price: Price) -> int:
    """R: the most an attempt can cost, in micro-USD rounded up. Every input token at the
    highest input rate it may be billed at (uncached, read from the cache, or written to it
    where the request may write the cache), plus every candidate running to its output
    limit including the reasoning allowance. (A cache read dearer than an uncached token is
    unheard of, but a prices file may say so, and R must bound the charge whatever it says.)"""
    r = price.exact
    input_rate = max(r.input, r.cached_input, r.cache_write if estimate.cache_write_possible else 0)
    return _micros_rounded_up(estimate.input_tokens_max * input_rate + estimate.output_tokens_max * r.output)


def attempt_cost_micros(attempt: Attempt, price: Price) -> int | None:
    """What an attempt is charged: its reported usage if ok, 0 if failed, None if unknown
    (the attempt stays charged at its reservation R)."""
    if attempt.status == "ok":
        return cost_micros(attempt.usage, price)
    if attempt.status == "failed":
        return 0
    return None


def cost_usd(usage: Usage, price: Price) -> float:
    """Forecasts only (expected usage, float USD): each count at its own rate, reasoning as
    output. Money that is reserved or charged comes from `cost_micros`."""
    return PER_TOKEN * (
        usage.input * price.input
        + usage.cached_input * price.cached_input
        + usage.cache_write * price.cache_write
        + (usage.output + usage.reasoning) * price.output
    )
