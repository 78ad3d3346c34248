"""Migrations on both backends: from empty, from every earlier revision, and the gate."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.migrate import (
    SchemaNotCurrent,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    require_current_schema,
    upgrade,
)
from db.models import Base
from db.session import make_engine


def _schema_drift(engine) -> list:
    """Differences between the migrated database and the models (must be none)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def _earlier_revisions() -> list[str]:
    """'base' and every revision before head, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    chain = [s.revision for s in scripts.walk_revisions()]  # head first
    return ["base", *reversed(chain[1:])]


def test_upgrade_of_an_empty_database_matches_the_models(empty_url):
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert _schema_drift(engine) == []
        upgrade(engine)  # a second upgrade is a no-op
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", _earlier_revisions())
def test_upgrade_from_each_earlier_revision_reaches_head(empty_url, start):
    """A store left at an older revision (down-migrated from head, as a user who skipped
    an upgrade would have it) is refused, then upgrades cleanly to the models' schema."""
    engine = make_engine(empty_url)
    try:
        upgrade(engine)
        downgrade(engine, start)
        assert current_revision(engine) == (None if start == "base" else start)
        with pytest.raises(SchemaNotCurrent, match=r"omniopd db upgrade --config run\.yaml"):
            require_current_schema(engine, "run.yaml")
        upgrade(engine)
        assert require_current_schema(engine) == head_revision()
        assert _schema_drift(engine) == []
    finally:
        engine.dispose()


def test_schema_from_a_newer_omniopd_is_refused_with_advice(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
        with pytest.raises(SchemaNotCurrent, match="newer OmniOPD"):
            require_current_schema(engine)
    finally:
        engine.dispose()


def test_an_unreachable_store_is_a_clean_error_naming_the_url_without_password():
    from types import SimpleNamespace

    from db.migrate import StoreUnreachable
    from db.store import open_store

    # config validation refuses a password in store.url; the store hides one anyway
    config = SimpleNamespace(store_url="postgresql+psycopg://u:secret@127.0.0.1:1/x",
                             store=SimpleNamespace(pool_size=1, sqlite_busy_timeout_ms=1000))
    with pytest.raises(StoreUnreachable, match=r"cannot reach the store at postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/x") as err:
        open_store(config)
    assert "secret" not in str(err.value)
