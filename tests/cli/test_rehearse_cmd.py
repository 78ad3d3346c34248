"""`omniopd rehearse` refuses bad input before it creates anything, saying what to give."""

from __future__ import annotations

from typer.testing import CliRunner

from omniopd.cli import app


def test_rehearse_needs_a_postgres_url_a_known_broker_and_a_config(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIOPD_REHEARSAL_POSTGRES_URL", raising=False)
    result = CliRunner().invoke(app, ["rehearse", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "give --postgres postgresql+psycopg://" in result.output
    pg = ["--postgres", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", "--workdir", str(tmp_path)]
    result = CliRunner().invoke(app, ["rehearse", *pg, "--broker", "kafka"])
    assert result.exit_code == 2 and "--broker 'kafka': expected redis, rabbitmq or both" in result.output
    result = CliRunner().invoke(app, ["rehearse", str(tmp_path / "nope.yaml"), *pg])
    assert result.exit_code == 2 and "no config file" in result.output
    result = CliRunner().invoke(app, ["rehearse", *pg, "--outage", "--outage-services", "store,redis"])
    assert result.exit_code == 2 and "--outage-services 'store,redis': expected a comma-separated list of store, broker" in result.output
    assert not list(tmp_path.iterdir())  # nothing was started or written
