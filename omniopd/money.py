"""Money is an integer number of micro-dollars (1 USD = 1,000,000 micro-USD) everywhere it
is reserved, charged, settled, compared with a cap or stored; USD floats exist only at the
edges. These two functions are the only conversions:

- on the way in, once: config amounts (`budget_usd`, `teacher check --max-cost`) and the
  prices file's rates (`omniopd.teachers.pricing.Price`) go through `usd_to_micros`;
- on the way out, once: printed amounts and JSON fields named `*_usd` come from
  `micros_to_usd`.

Why integers: sums of settled costs must equal the ledger and budget totals exactly, on
SQLite (no decimal type) as on PostgreSQL, and a cap comparison must not depend on float
rounding. Forecasts (`omniopd plan`, the estimate in `omniopd spend`) are expectations,
not money, and stay float USD (see omniopd/teachers/pricing.py).
"""

from __future__ import annotations

import math
from decimal import Decimal

MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float | Decimal | str) -> int:
    """USD -> micro-dollars, rounded up to the next whole micro-dollar, so an amount is never
    understated (a cap of $0.0000001 is 1 micro-USD). The float goes through its shortest
    decimal repr (`str`), so 0.1 from a YAML file is exactly 100,000 micro-USD."""
    value = Decimal(str(usd))
    if not value.is_finite() or value < 0:
        raise ValueError(f"an amount of money must be a finite number >= 0 USD, got {usd!r}")
    return math.ceil(value * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    """Micro-dollars -> USD, for printing and JSON output only (never compute money with it)."""
    return micros / MICROS_PER_USD
