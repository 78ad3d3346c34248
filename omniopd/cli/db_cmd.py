"""`omniopd db upgrade|current`: the store's schema."""

from __future__ import annotations

import typer

from omniopd.cli.common import ConfigOpt, SetOpt, console, fail, load

app = typer.Typer(help="The SQL store (SQLite file or PostgreSQL): schema migrations.", no_args_is_help=True)


def _engine(cfg):
    """The store's engine without the schema check (these commands are how it is fixed)."""
    from db.store import open_store

    try:
        return open_store(cfg, check_schema=False, pool_size=1).engine
    except ValueError as exc:
        fail(str(exc))


@app.command("upgrade")
def upgrade(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Create the store's tables, or migrate them to the newest revision (safe to repeat)."""
    cfg = load(config, set_)
    from db.migrate import current_revision, head_revision
    from db.migrate import upgrade as run_upgrade

    engine = _engine(cfg)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before = current_revision(engine)
        run_upgrade(engine)
        after = current_revision(engine)
    except Exception as exc:
        fail(f"upgrading the store at {where} failed: {exc}")
    finally:
        engine.dispose()
    if before == after:
        console.print(f"[green]ok[/] store {where} is already at revision {after} (head {head_revision()})", soft_wrap=True)
    else:
        console.print(f"[green]ok[/] store {where}: {before or 'empty'} -> {after}", soft_wrap=True)


@app.command("current")
def current(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the store's schema revision; exit 1 if it is behind this code's."""
    cfg = load(config, set_)
    from db.migrate import current_revision, head_revision

    engine = _engine(cfg)
    where = engine.url.render_as_string(hide_password=True)
    try:
        revision = current_revision(engine)
    except Exception as exc:
        fail(f"cannot read the store at {where}: {exc}")
    finally:
        engine.dispose()
    head = head_revision()
    if revision == head:
        console.print(f"{where}: revision {revision} (current)", soft_wrap=True)
        return
    console.print(
        f"{where}: revision {revision or 'none (empty)'}, this code needs {head}; "
        f"run: omniopd db upgrade --config {config}",
        soft_wrap=True,
    )
    raise typer.Exit(1)
