"""Declarative base, naming convention and column helpers shared by every table.

Conventions of the whole schema (docs/store.md has the diagram):

- Times are naive UTC (`utcnow()`), the same on SQLite and PostgreSQL; every process
  passes its own clock, so hosts must be NTP-synced (leases and TTLs are minutes long,
  seconds of skew do not matter).
- Money is integer micro-dollars (1 USD = 1,000,000): exact on both backends (SQLite has
  no decimal type, SQLAlchemy's Numeric would silently become a float there), and 2^63
  micro-dollars is 9.2 trillion USD.
- States are short strings guarded by CHECK constraints (portable, and a new state is a
  one-line migration instead of an ALTER TYPE).
- Token arrays are little-endian binary blobs (`db/arrays.py`), not JSON: 4 bytes a token.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints: Alembic needs names to alter constraints later (SQLite batch mode).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    """Now, as naive UTC (the store's time convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def states_check(column: str, states: tuple[str, ...]) -> str:
    """SQL text of a CHECK that `column` holds one of `states`."""
    quoted = ", ".join(f"'{s}'" for s in states)
    return f"{column} IN ({quoted})"
