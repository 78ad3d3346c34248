"""Schema migrations (Alembic, scripts in db/migrations/) and the schema-version gate.

`upgrade(url)` brings a store to the newest revision (`omniopd db upgrade --config X`).
Every process that uses the store calls `require_current_schema(engine)` first and
refuses to run against a schema that is behind, naming the command that fixes it —
running new code on an old schema corrupts data in ways that surface much later.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaNotCurrent(RuntimeError):
    """The store's schema is not the revision this code was written for; the message says what to run."""


class StoreUnreachable(SchemaNotCurrent):
    """The store cannot be reached at all (server down, wrong host, credentials); a kind of
    SchemaNotCurrent, so every command that checks the schema reports it cleanly."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at db/migrations/ (no ini file involved)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest revision in db/migrations/versions/."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts in {MIGRATIONS_DIR / 'versions'}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at (None for a database without OmniOPD's schema)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store to `revision` (idempotent: a current store is left alone)."""
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the store back to `revision` ('base' drops every table)."""
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def require_current_schema(engine: Engine, config_path: str | Path | None = None) -> str:
    """Return the head revision, or raise SchemaNotCurrent saying what to run."""
    head = head_revision()
    where = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0] if (exc.orig or exc) else "unknown error"
        raise StoreUnreachable(
            f"cannot reach the store at {where}: {reason}. Check store.url, that the database server runs "
            "and accepts this host, and the credentials (PGPASSWORD or ~/.pgpass; never in the URL)"
        ) from None
    if current == head:
        return head
    fix = f"omniopd db upgrade --config {config_path if config_path else '<your config.yaml>'}"
    if current is None:
        raise SchemaNotCurrent(f"the store at {where} has no OmniOPD schema yet; run: {fix}")
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise SchemaNotCurrent(
            f"the store at {where} is at revision {current}, which this OmniOPD does not know "
            f"(its newest is {head}): it was migrated by a newer OmniOPD; upgrade the code"
        )
    raise SchemaNotCurrent(f"the store at {where} is at revision {current}, this code needs {head}; run: {fix}")
