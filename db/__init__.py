"""The SQL store: the source of truth for every trajectory, chunk, teacher call, dollar and step.

    models/        tables (SQLAlchemy 2.0 typed models) and their state machines
    store.py       `open_store(config)`: the one way a process opens the store from its config
    session.py     engine + session factory (SQLite WAL / BEGIN IMMEDIATE; PostgreSQL psycopg 3)
    migrate.py     Alembic upgrade and the schema gate `require_current_schema`
    arrays.py      int32 / float32 little-endian per-token arrays
    repo_*.py      repository functions: session first and keyword-only, never commit

Callers own transactions (`with sessions.begin() as s: repo_fn(s, ...)`). docs/store.md
describes the schema, the state machines, budget semantics and the commands.
This package never imports omniopd/, workers/ or eval/.
"""
