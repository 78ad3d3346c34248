"""The dashboard's endpoints on both backends: numbers, words for bad input, the token, no
writes (the store and the rate limiter's keys stay as they were) and no secret in any answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from typer.testing import CliRunner

from omniopd.dashboard.app import Redactor, make_app
from omniopd.dashboard.sources import RunSpec, Stores
from tests.dashboard.fill import KEY_ENV, TEACHER, fill_run, write_config

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
SECRET_KEY = "sk-omniopd-TESTKEY-Zq81xVw27mPo3LkJ"


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'work' / 'a' / 'omniopd.db'}"
    return request.getfixturevalue("postgres_url")


def fetch_all(spec: RunSpec, paths: list[str], *, token: str = "", headers=None) -> list[tuple[int, str, dict]]:
    """GET each path from the app (in-process server on a free port); (status, body, headers)."""

    async def go():
        async with TestClient(TestServer(make_app(spec, token=token))) as client:
            out = []
            for path in paths:
                response = await client.get(path, headers=headers or {})
                out.append((response.status, await response.text(), dict(response.headers)))
            return out

    return asyncio.run(go())


def all_paths(source: str, run: str) -> list[str]:
    return ["/", "/static/dashboard.js", "/static/dashboard.css", "/api/runs", f"/api/run?source={source}&run={run}",
            f"/api/live?source={source}&run={run}", f"/api/run?source={source}&run=nope", "/api/run?source=nope&run=x"]


def test_run_endpoint_numbers_equal_the_store_on_both_backends(store_url, tmp_path):
    filled = fill_run(store_url, tmp_path / "work" / "a", name="r1")
    (status, body, headers), = fetch_all(RunSpec(configs=(filled.config_path,)), [
        f"/api/run?source={filled.config_path}&run=r1"])
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    data = json.loads(body)
    teacher = next(b for b in data["budgets"] if b["scope"] == TEACHER)
    assert teacher["reached"] and teacher["cap_usd"] == filled.teacher_cap_micros / 1e6
    assert teacher["spent_usd"] + teacher["reserved_usd"] == pytest.approx(teacher["cap_usd"], abs=1e-12)
    (p,) = data["providers"]
    assert (p["calls"], p["ok"], p["errors"], p["unknown"], p["in_flight"], p["rate_limited"]) == (13, 9, 2, 1, 1, 1)
    assert p["cost_usd"] == data["spend"]["total_usd"] == teacher["spent_usd"]
    # the running totals end at the ledger total; the forecast's axis counts every audit bundle
    assert data["spend"]["series"][TEACHER][-1][1] == p["cost_usd"]
    assert data["spend"]["bundle_series"][-1][1] == data["counts"]["trajectories_audited"] == 8
    assert [x["step"] for x in data["learner"]] == [1, 2, 3]
    assert [x["loss"] for x in data["learner"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [(e["step"], e["pass_at_1"], e["ci_low"]) for e in data["evals"]] == [(0, 0.25, 0.15), (3, 0.5, 0.4)]
    roles = {(w["role"], w["name"]): w["done"] for w in data["workers"]}
    assert roles == {("rollout", "rollout-1@host"): 4, ("rollout", "rollout-2@host"): 4, ("learner", "learner-0"): 3,
                     (("audit", TEACHER)): 12}


def test_bad_input_gets_words_and_the_server_keeps_answering(tmp_path):
    work = tmp_path / "work"
    fill_run(f"sqlite:///{work / 'good' / 'omniopd.db'}", work / "good", name="good")
    write_config(work / "nostore", name="n", store_url=f"sqlite:///{work / 'nostore' / 'omniopd.db'}",
                 teacher_cap_usd=None, run_cap_usd=None)
    write_config(work / "down", name="d", store_url="postgresql+psycopg://postgres@127.0.0.1:9/x",
                 teacher_cap_usd=None, run_cap_usd=None)
    (work / "broken").mkdir()
    (work / "broken" / "config.yaml").write_text("run: [not, a, section]\n")
    results = fetch_all(RunSpec(workdirs=(work,)), [
        "/api/runs", "/api/run?source=good&run=nope", "/api/run?source=nope&run=x", "/api/run?source=down&run=d",
        "/api/run?source=good", "/api/runs"])
    listing = {s["source"]: s for s in json.loads(results[0][1])["sources"]}
    assert "no store yet" in listing["nostore"]["error"] and "omniopd db upgrade" in listing["nostore"]["error"]
    assert "cannot reach the store" in listing["down"]["error"]
    assert "broken/config.yaml" in listing["broken"]["error"]
    assert [r["name"] for r in listing["good"]["runs"]] == ["good"]
    assert results[1][0] == 404 and "no run named 'nope'" in json.loads(results[1][1])["error"]
    assert results[2][0] == 404 and "unknown source 'nope'" in json.loads(results[2][1])["error"]
    assert results[3][0] == 503 and "cannot reach the store" in json.loads(results[3][1])["error"]
    assert results[4][0] == 404 and "?run=NAME" in json.loads(results[4][1])["error"]
    assert results[5][0] == 200  # still serving
    assert not (work / "nostore" / "omniopd.db").exists()  # reported, not created


def _sqlite_content(path) -> list:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


def test_no_endpoint_writes_and_the_store_refuses_writes_from_the_dashboard(store_url, tmp_path):
    filled = fill_run(store_url, tmp_path / "work" / "a", name="r1")
    spec = RunSpec(configs=(filled.config_path,))
    before = _snapshot(store_url)
    results = fetch_all(spec, all_paths(str(filled.config_path), "r1") * 2)
    assert all(status in (200, 404) for status, _, _ in results), results
    assert _snapshot(store_url) == before
    # and a write through the dashboard's own connections is refused by the database itself
    stores = Stores()
    try:
        store = stores.get(spec.sources()[0])
        with pytest.raises(Exception, match=r"(?i)read.?only|readonly"), store.sessions.begin() as s:
            s.execute(text("UPDATE runs SET status = 'failed'"))
    finally:
        stores.close()
    assert _snapshot(store_url) == before


def _snapshot(url: str):
    """Every row of every table (SQLite: the whole dump)."""
    if url.startswith("sqlite"):
        return _sqlite_content(url.removeprefix("sqlite:///"))
    import sqlalchemy as sa

    from db.models import Base

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: sorted(map(str, conn.execute(sa.select(t)).all())) for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def test_no_answer_reveals_an_api_key_its_fingerprint_or_a_password(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    filled = fill_run(f"sqlite:///{tmp_path / 'work' / 'a' / 'omniopd.db'}", tmp_path / "work" / "a", name="r1")
    secret_pg = tmp_path / "work" / "pg"
    write_config(secret_pg, name="p", store_url="postgresql+psycopg://u:Hunter2Secret99@127.0.0.1:9/x",
                 teacher_cap_usd=None, run_cap_usd=None, broker_url="redis://:BrokerPass77x@127.0.0.1:9/0")
    spec = RunSpec(workdirs=(tmp_path / "work",))
    paths = [*all_paths("a", "r1"), "/api/run?source=pg&run=p", "/api/live?source=pg&run=p"]
    bodies = "\n".join(body for _, body, _ in fetch_all(spec, paths))
    assert filled.run_name in bodies
    digest = hashlib.sha256(SECRET_KEY.encode()).hexdigest()
    for secret in (SECRET_KEY, SECRET_KEY[:8], SECRET_KEY[-8:], SECRET_KEY[-4:], digest[:8], digest[:12],
                   "Hunter2Secret99", "BrokerPass77x"):
        assert secret not in bodies, secret


def test_redactor_masks_keys_and_any_long_piece_of_them():
    redact = Redactor(["abcdefghijklmnop"])
    assert redact("key abcdefghijklmnop, cut cdefghijkl, short abc") == "key ***, cut ***kl, short abc"


def test_a_token_is_needed_when_one_is_set_and_off_loopback(tmp_path):
    filled = fill_run(f"sqlite:///{tmp_path / 'a' / 'omniopd.db'}", tmp_path / "a", name="r1")
    spec = RunSpec(configs=(filled.config_path,))
    no, with_query, cookie = fetch_all(spec, ["/", "/api/runs?token=t0ken", "/api/runs"], token="t0ken")
    assert no[0] == 401 and "needs its token" in json.loads(no[1])["error"]
    assert with_query[0] == 200 and "omniopd_dashboard_token=t0ken" in with_query[2]["Set-Cookie"]
    assert cookie[0] == 200  # the page's own requests carry the cookie
    (wrong,) = fetch_all(spec, ["/api/runs"], token="t0ken", headers={"Authorization": "Bearer t0ken-not"})
    assert wrong[0] == 401
    (ok,) = fetch_all(spec, ["/api/runs"], token="t0ken", headers={"Authorization": "Bearer t0ken"})
    assert ok[0] == 200
    from omniopd.cli import app

    result = CliRunner().invoke(app, ["dashboard", "-c", str(filled.config_path), "--host", "0.0.0.0"],
                                env={"OMNIOPD_DASHBOARD_TOKEN": ""})
    assert result.exit_code == 2 and "needs a token" not in result.output  # the message says what to do:
    assert "set a token" in result.output and "127.0.0.1" in result.output


@pytest.mark.services
def test_live_reads_queues_and_the_limiter_without_changing_them(tmp_path, redis_url, redis_prefix, monkeypatch):
    import secrets

    import redis

    from omniopd.config import load_config
    from omniopd.teachers.build import teacher_limiter
    from omniopd.teachers.ratelimit import RateCost
    from workers.app import ROLLOUT_TASK, inspection_app

    run_dir = tmp_path / "a"
    filled = fill_run(f"sqlite:///{run_dir / 'omniopd.db'}", run_dir, name="r1", broker_url=redis_url)
    config_text = filled.config_path.read_text().replace("mode: redis", f"mode: redis\n  key_prefix: '{redis_prefix}'")
    filled.config_path.write_text(config_text)
    cfg = load_config(filled.config_path)
    # The buckets are the account's: a key of this test's own keeps them apart from every other.
    monkeypatch.setenv(cfg.teachers[TEACHER].api_key_env, "test-" + secrets.token_hex(16))
    limiter = teacher_limiter(cfg.teachers[TEACHER], redis_url=redis_url)
    fingerprint = limiter.state_key.split(":")[-3].encode()

    async def spend_some() -> None:
        await limiter.acquire(RateCost(requests=1, input=30_000))
        await limiter.aclose()

    asyncio.run(spend_some())
    app = inspection_app(cfg, broker_url=redis_url)
    app.send_task(ROLLOUT_TASK, args=[1], queue="rollouts")
    app.close()
    client = redis.Redis.from_url(redis_url)
    def run_keys() -> dict:  # the queues and the limiter's buckets (a ping adds Celery's own reply bindings)
        keys = [*client.scan_iter(match=f"{redis_prefix}*"), *client.scan_iter(match="omniopd:ratelimit:*")]
        return {k: client.dump(k) for k in sorted(keys) if b"_kombu" not in k and (b"ratelimit" not in k or fingerprint in k)}

    before = run_keys()
    assert any(b"ratelimit" in k for k in before) and any(k.endswith(b"rollouts") for k in before)
    ((status, body, _),) = fetch_all(RunSpec(configs=(filled.config_path,)), [f"/api/live?source={filled.config_path}&run=r1"])
    assert status == 200, body
    live = json.loads(body)
    assert live["queues"]["rollouts"] == 1 and live["pinged"] == []
    (lim,) = live["limiters"]
    buckets = {b["dim"]: b for b in lim["buckets"]}
    assert lim["seen"] and buckets["requests"]["per_min"] == pytest.approx(600)
    assert buckets["input"]["level"] < buckets["input"]["depth"]  # the 30,000 tokens show
    assert run_keys() == before
    client.close()


def test_a_store_replaced_on_disk_is_read_anew(tmp_path):
    """`omniopd demo` without --resume deletes a variant's directory and starts it again."""
    run_dir = tmp_path / "work" / "full-s0"
    filled = fill_run(f"sqlite:///{run_dir / 'omniopd.db'}", run_dir, name="first")
    spec, stores = RunSpec(workdirs=(tmp_path / "work",)), Stores()
    try:
        from omniopd.dashboard.snapshot import run_list

        def names() -> list[str]:
            with stores.get(spec.sources()[0]).sessions.begin() as s:
                return [r["name"] for r in run_list(s)]

        assert names() == ["first"]
        import shutil

        shutil.rmtree(run_dir)
        fill_run(f"sqlite:///{run_dir / 'omniopd.db'}", run_dir, name="second")
        assert names() == ["second"]
        assert filled.run_name == "first"
    finally:
        stores.close()
