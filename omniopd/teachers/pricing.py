"""Teacher prices, the cost of an attempt from its reported usage, and the worst-case
reservation R of an attempt before it is sent.

Prices live in `configs/prices.yaml` (model -> USD per 1M tokens for input, cached input,
cache write and output, with source and date); a teacher's `prices:` block in the run
config overrides its model's entry. Never put prices in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from omniopd.config import PriceConfig
from omniopd.teachers.types import AttemptEstimate, Usage

PER_TOKEN = 1e-6  # prices are quoted per 1M tokens


class PricingError(ValueError):
    """A prices file or model entry that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens of one model; all four rates >= 0."""

    input: float
    cached_input: float
    cache_write: float
    output: float
    source: str = ""
    date: str = ""

    def __post_init__(self) -> None:
        for name in ("input", "cached_input", "cache_write", "output"):
            if getattr(self, name) < 0:
                raise PricingError(f"price {name} must be >= 0, got {getattr(self, name)}")


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
        missing = [k for k in ("input", "cached_input", "cache_write", "output") if k not in entry]
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


def cost_usd(usage: Usage, price: Price) -> float:
    """Cost of reported usage: each disjoint count at its own rate; reasoning as output."""
    return PER_TOKEN * (
        usage.input * price.input
        + usage.cached_input * price.cached_input
        + usage.cache_write * price.cache_write
        + (usage.output + usage.reasoning) * price.output
    )


def reservation_usd(estimate: AttemptEstimate, price: Price) -> float:
    """R: the most an attempt can cost. All input uncached, at the cache-write rate where
    the request may write the cache (whichever rate is higher), plus every candidate
    running to its output limit including the reasoning allowance."""
    input_rate = max(price.input, price.cache_write) if estimate.cache_write_possible else price.input
    return PER_TOKEN * (estimate.input_tokens_max * input_rate + estimate.output_tokens_max * price.output)
