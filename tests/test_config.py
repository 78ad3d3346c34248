"""The configuration: defaults, validation messages, overrides, shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniopd.config import ConfigError, OmniConfig, load_config, parse_config

CONFIGS = sorted(p for p in Path("configs").glob("*.yaml") if p.name != "prices.yaml")


def test_defaults_are_the_papers():
    cfg = OmniConfig()
    assert (cfg.chunking.m, cfg.chunking.c, cfg.estimator.n) == (10, 50, 10)
    assert cfg.estimator.alpha == 1.0 and cfg.loss.beta == 0.1
    assert cfg.estimator.phi == "edit" and cfg.learner.lr == 1e-6
    assert cfg.rollout.temperature == 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path):
    load_config(path)


def test_misspelled_key_names_the_file_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as info:
        load_config("configs/demo.yaml", ["chunking.mm=3"])
    message = str(info.value)
    assert "configs/demo.yaml" in message
    assert "chunking.mm: unknown key" in message
    assert "allowed keys: c, m, overlap, placement" in message


def test_misspelled_key_inside_a_named_teacher_lists_teacher_keys():
    with pytest.raises(ConfigError, match=r"teachers\.emulated\.modle: unknown key; allowed keys: .*model"):
        load_config("configs/demo.yaml", ["teachers.emulated.modle=x"])


def test_out_of_range_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"estimator\.alpha: Input should be greater than or equal to 0 \(got -1\)"):
        parse_config({"estimator": {"alpha": -1}}, "x.yaml")


def test_bad_choice_lists_what_is_allowed():
    with pytest.raises(ConfigError, match=r"chunking\.placement: Input should be 'peak' or 'uniform'"):
        parse_config({"chunking": {"placement": "random"}})


def test_overrides_parse_yaml_values():
    cfg = load_config("configs/demo.yaml", ["chunking.m=7", "rollout.stop=['</s>', 'END']", "audit.budget_usd=null"])
    assert cfg.chunking.m == 7
    assert cfg.rollout.stop == ["</s>", "END"]
    assert cfg.audit.budget_usd is None


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("configs/demo.yaml", ["chunking.m"])


def test_unknown_audit_teacher_is_an_error():
    with pytest.raises(ConfigError, match=r"audit\.teacher = 'nope' is not a key of `teachers`"):
        parse_config({"audit": {"teacher": "nope"}})


def test_continuation_default_per_provider_kind():
    cfg = parse_config(
        {
            "teachers": {
                "a": {"kind": "anthropic", "model": "m"},
                "o": {"kind": "openai", "model": "m"},
                "v": {"kind": "openai_compat", "model": "m"},
                "g": {"kind": "gemini", "model": "m", "continuation": "instruction"},
            }
        }
    )
    modes = {k: t.continuation_mode for k, t in cfg.teachers.items()}
    assert modes == {"a": "prefill", "o": "instruction", "v": "raw", "g": "instruction"}


def test_every_field_has_a_docstring():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub)

    walk(OmniConfig)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_phi_accepts_exactly_the_similarity_registry():
    from omniopd.algo.similarity import SIMILARITIES

    for name in SIMILARITIES:
        assert parse_config({"estimator": {"phi": name}}).estimator.phi == name
    with pytest.raises(ConfigError, match=r"estimator\.phi: unknown phi 'cosine'; choose one of edit, rouge1"):
        parse_config({"estimator": {"phi": "cosine"}})


@pytest.mark.parametrize("url,why", [
    ("htp://127.0.0.1:8000/v1", "scheme 'htp'"),
    ("127.0.0.1:8000", "no scheme"),
    ("localhost:8000/v1", "no scheme"),
    ("http:///v1", "names no host"),
    ("http://127.0.0.1:99999/v1", "not a valid URL"),
])
def test_a_mistyped_teacher_url_is_refused_with_what_to_write(url, why):
    with pytest.raises(ConfigError, match=rf"teachers\.emulated\.base_url: .*{why}.*http"):
        load_config("configs/demo.yaml", [f"teachers.emulated.base_url={url}"])


def test_a_reservation_ttl_not_above_the_teacher_timeout_is_refused():
    with pytest.raises(ConfigError, match=r"audit\.reservation_ttl_s \(30\) must exceed teachers\.emulated\.timeout_s \(30\)"):
        load_config("configs/demo.yaml", ["audit.reservation_ttl_s=30"])


def test_http_and_https_teacher_urls_validate():
    for url in ("http://127.0.0.1:8000/v1", "https://api.anthropic.com"):
        assert load_config("configs/demo.yaml", [f"teachers.emulated.base_url={url}"]).teachers["emulated"].base_url == url


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_infinite_or_nan_numbers_are_refused(value):
    with pytest.raises(ConfigError, match=r"audit\.budget_usd: Input should be a finite number"):
        load_config("configs/demo.yaml", [f"audit.budget_usd={value}"])
    with pytest.raises(ConfigError, match=r"learner\.lr: Input should be a finite number"):
        load_config("configs/demo.yaml", [f"learner.lr={value}"])


def test_a_budget_beyond_what_the_store_can_count_is_refused():
    with pytest.raises(ConfigError, match=r"teachers\.emulated\.budget_usd: Input should be less than or equal to 1000000000"):
        load_config("configs/demo.yaml", ["teachers.emulated.budget_usd=1e13"])


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 16\); save the file as UTF-8"):
        load_config(path)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    import time

    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 values
    lines += ["run: {name: bomb}", "data: {meta_bomb: *a9}"]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"bomb.yaml: its YAML aliases expand to 23,456,790,125 values \(at most 100,000\)"):
        load_config(path)
    assert time.monotonic() - started < 10


def test_a_password_never_reaches_the_printed_or_stored_config():
    from omniopd.config import public_dict

    with pytest.raises(ConfigError, match=r"store\.url: store\.url contains a password; .*PGPASSWORD") as err:
        load_config("configs/demo.yaml", ["store.url=postgresql+psycopg://omni:s3cret@db:5432/omni"])
    assert "s3cret" not in str(err.value) and "omni:***@db:5432" in str(err.value)
    cfg = load_config("configs/demo.yaml", ["broker.mode=redis", "broker.url=redis://:s3cret@redis:6379/0"])
    assert public_dict(cfg)["broker"]["url"] == "redis://:***@redis:6379/0"
    assert "s3cret" not in str(public_dict(cfg)) and cfg.broker.url == "redis://:s3cret@redis:6379/0"


def _broker_config(broker: dict, limits: dict | None = None) -> OmniConfig:
    teacher = {"kind": "gemini", "model": "gemini-2.5-flash", **({"rate_limits": limits} if limits else {})}
    return parse_config({"broker": broker, "teachers": {"t": teacher}, "audit": {"teacher": "t"}})


def test_a_rabbitmq_broker_needs_an_amqp_url_and_a_redis_for_rate_limits():
    with pytest.raises(ConfigError, match=r"broker.mode = rabbitmq needs broker.url starting with amqp://"):
        _broker_config({"mode": "rabbitmq"})  # the default URL is Redis's
    with pytest.raises(ConfigError, match=r"set broker.ratelimit_url to a Redis shared by every worker"):
        _broker_config({"mode": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:5672/run"}, {"requests_per_min": 60})
    cfg = _broker_config({"mode": "rabbitmq", "url": "amqp://guest:secret@127.0.0.1:5672/run",
                          "ratelimit_url": "redis://127.0.0.1:6379/0"}, {"requests_per_min": 60})
    assert cfg.broker.ratelimit_url == "redis://127.0.0.1:6379/0"
    assert _broker_config({"mode": "rabbitmq", "url": "amqp://h/run"}).broker.ratelimit_url is None  # no limits: none needed


def test_a_broker_url_of_the_wrong_kind_is_refused_without_its_password():
    with pytest.raises(ConfigError, match=r"broker.mode = redis needs broker.url starting with redis://") as err:
        _broker_config({"mode": "redis", "url": "amqp://guest:hunter2@h:5672/x"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match=r"broker.ratelimit_url must be a Redis URL"):
        _broker_config({"mode": "redis", "ratelimit_url": "amqp://h/x"})
