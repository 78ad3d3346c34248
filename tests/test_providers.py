"""The provider registry (omniopd/providers.py) is the one list of providers: every kind in
it has a working adapter, an emulator wire and a config default, and config validation,
the forecast and the emulator read their facts from it."""

from __future__ import annotations

import ast
import asyncio
import math
import subprocess
import sys
from pathlib import Path

import pytest

from omniopd.config import ConfigError, TeacherConfig, parse_config
from omniopd.providers import (
    PROVIDER_SPECS,
    CacheRule,
    ProviderSpec,
    SamplingRules,
    SettingRefused,
    Thinking,
    provider_spec,
)
from omniopd.teachers.client import RetryPolicy
from omniopd.teachers.emulator import Emulator, EmulatorConfig, EmulatorThread, scripted
from omniopd.teachers.emulator.server import _WIRES
from omniopd.teachers.forecast import cache_rule, first_request_alone, requests_per_chunk
from omniopd.teachers.providers import PROVIDERS
from omniopd.teachers.types import ApiKey, FatalProviderError

KINDS = list(PROVIDER_SPECS)
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ every kind works


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_an_adapter_that_declares_the_same_entry(kind):
    cls = PROVIDERS[kind]
    assert cls.spec is PROVIDER_SPECS[kind]
    assert f"{cls.__module__}:{cls.__name__}" == PROVIDER_SPECS[kind].client


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_an_emulator_wire_and_a_config_default(kind):
    spec = PROVIDER_SPECS[kind]
    assert spec.wire in _WIRES
    teacher = TeacherConfig(kind=kind, model="m")
    assert teacher.continuation_mode == spec.default_continuation and teacher.spec is spec


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_continues_a_prefix_through_its_adapter_against_its_emulator(kind):
    """N split by the registry's max_candidates, exactly as the forecast counts requests."""
    spec = PROVIDER_SPECS[kind]
    n = 3
    with EmulatorThread(EmulatorConfig(provider=kind), scripted(["x y"])) as emu:
        # A provider that needs no key is called without one.
        key = ApiKey("test-key-0123456789abcdef") if spec.api_key_required else None
        client = PROVIDERS[kind](model="m", base_url=emu.url, api_key=key, mode=spec.default_continuation,
                                 retry=RetryPolicy(2, 0.01, 0.05), timeout_s=10.0)

        async def go():
            async with client:
                return await client.continue_prefix("Q: 2+2?", "The answer is", n, 8)

        result = asyncio.run(go())
        requests = len(emu.emulator.log)
    assert result.texts == ["x y"] * n
    assert requests == requests_per_chunk(kind, n) == math.ceil(n / spec.max_candidates)


# ------------------------------------------------------------ config validation


def test_config_rejects_an_unknown_kind_naming_the_known_ones():
    with pytest.raises(ConfigError) as info:
        parse_config({"teachers": {"t": {"kind": "mistral", "model": "m"}}}, "x.yaml")
    message = str(info.value)
    assert "x.yaml: teachers.t.kind: unknown provider kind" in message and "(got 'mistral')" in message
    assert f"known kinds: {', '.join(KINDS)}" in message


def test_config_rejects_prefill_for_openai_when_validating_not_when_building():
    with pytest.raises(ConfigError) as info:
        parse_config({"teachers": {"o": {"kind": "openai", "model": "m", "continuation": "prefill"}}}, "x.yaml")
    message = str(info.value)
    assert "teachers.o.continuation: openai does not support continuation mode 'prefill'" in message
    assert "do not continue a trailing assistant message" in message and "use one of instruction, raw" in message


@pytest.mark.parametrize("kind", KINDS)
def test_config_accepts_exactly_the_modes_the_registry_lists(kind):
    for mode in ("raw", "prefill", "instruction"):
        data = {"teachers": {"t": {"kind": kind, "model": "m", "continuation": mode}}}
        if mode in PROVIDER_SPECS[kind].modes:
            assert parse_config(data).teachers["t"].continuation_mode == mode
        else:
            with pytest.raises(ConfigError, match=f"{kind} does not support continuation mode '{mode}'"):
                parse_config(data)


def test_an_adapter_built_with_an_unsupported_mode_says_why():
    with pytest.raises(FatalProviderError, match="do not continue a trailing assistant message"):
        PROVIDERS["openai"](model="m", api_key=ApiKey("k" * 20), mode="prefill")


def test_emulator_config_rejects_an_unknown_provider_naming_the_known_ones():
    with pytest.raises(ValueError, match=f"known kinds: {', '.join(KINDS)}"):
        EmulatorConfig(provider="mistral")


def test_an_unknown_kind_in_the_forecast_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown provider kind 'mistral'; known kinds: openai_compat"):
        requests_per_chunk("mistral", 10)
    with pytest.raises(ValueError, match="known kinds"):
        provider_spec("mistral")


# ----------------------------------------------- the facts, read from one place


TODAY = ("anthropic", "openai", "openai_compat", "gemini")  # values pinned when the registry was built


def test_cache_rules_keep_the_values_the_emulator_and_forecast_used_before_the_registry():
    rules = {k: (s.cache.style, s.cache.min_tokens, s.cache.granularity) for k, s in PROVIDER_SPECS.items() if k in TODAY}
    assert rules == {
        "anthropic": ("explicit", 1024, 1),
        "openai": ("implicit", 1024, 128),
        "openai_compat": ("implicit", 1024, 128),
        "gemini": ("implicit", 1024, 64),
    }
    for model in ("claude-haiku-4-5", "claude-haiku-4.5-20251001", "claude-opus-4-5", "claude-opus-4-6-20260201"):
        assert PROVIDER_SPECS["anthropic"].cache_rule(model).min_tokens == 4096
    for model in ("claude-sonnet-4-5", "claude-opus-4-8"):
        assert PROVIDER_SPECS["anthropic"].cache_rule(model).min_tokens == 1024


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", ["m", "claude-haiku-4-5"])
def test_forecast_and_emulator_read_the_same_cache_rule(kind, model):
    rule = PROVIDER_SPECS[kind].cache_rule(model)
    assert cache_rule(kind, model) == rule
    cache = Emulator(EmulatorConfig(provider=kind)).cache_for(model)
    assert (cache.rule, cache.min_tokens, cache.granularity) == (rule.style, rule.min_tokens, rule.granularity)


@pytest.mark.parametrize("kind", KINDS)
def test_caching_off_switches_off_only_explicit_caching(kind):
    spec = PROVIDER_SPECS[kind]
    off = cache_rule(kind, "m", enabled=False)
    assert off == (CacheRule("none") if spec.cache.style == "explicit" else spec.cache_rule("m"))
    assert first_request_alone(kind, cache=False) is False
    assert first_request_alone(kind, cache=True) is spec.first_request_alone


def test_candidates_per_request_keep_the_adapters_limits():
    assert {k: s.max_candidates for k, s in PROVIDER_SPECS.items() if k in TODAY} == {
        "openai_compat": 1024, "openai": 128, "anthropic": 1, "gemini": 8,
    }


def test_sampling_rules_clamp_and_cut_as_the_providers_require():
    anthropic, openai, gemini = (PROVIDER_SPECS[k].sampling for k in ("anthropic", "openai", "gemini"))
    assert anthropic.temperature(1.5) == 1.0 and anthropic.temperature(0.7) == 0.7
    assert all(rules.temperature(None) is None for rules in (anthropic, openai, gemini))  # None: never sent
    assert openai.temperature(1.5) == 1.5
    stops = [str(i) for i in range(7)]
    assert (len(openai.stops(stops)), len(gemini.stops(stops)), len(anthropic.stops(stops))) == (4, 5, 7)
    assert not anthropic.seed and openai.seed and gemini.seed


def test_an_entry_whose_default_mode_it_cannot_do_is_refused():
    with pytest.raises(ValueError, match="default continuation 'prefill' is not in its modes"):
        ProviderSpec(
            kind="x", label="x", wire="openai", client="m:C", default_continuation="prefill", modes=("raw",),
            api_key_required=False, default_base_url="http://127.0.0.1", cache=CacheRule("none"),
            max_candidates=1, first_request_alone=False, sampling=SamplingRules(),
        )


# ------------------------------------------------------- one list, light to import


def _provider_lists(path: Path, kinds: set[str]) -> list[str]:
    """Places in a module that branch on a kind or list several kinds: a second list.

    Wire-format families (`ProviderSpec.wire`) share their names with the kinds that
    introduced them, so comparisons with `.wire` and the emulator's `_WIRES` table (one
    wire module per family, not per provider) are not provider lists."""
    tree = ast.parse(path.read_text(), str(path))
    wire_tables = {
        id(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(isinstance(t, ast.Name) and t.id == "_WIRES" for t in getattr(node, "targets", [getattr(node, "target", None)]))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            on_wire = any(isinstance(o, ast.Attribute) and o.attr == "wire" for o in operands)
            if not on_wire and any(isinstance(o, ast.Constant) and o.value in kinds for o in operands):
                found.append(f"{path}:{node.lineno}: compares with a provider kind")
        elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if isinstance(node, ast.Dict | ast.Tuple | ast.List | ast.Set) and elements and id(node) not in wire_tables:
            named = {e.value for e in elements if isinstance(e, ast.Constant) and e.value in kinds}
            if len(named) >= 2:
                found.append(f"{path}:{node.lineno}: lists provider kinds {sorted(named)}")
    return found


def test_no_module_but_the_registry_lists_or_branches_on_provider_kinds():
    registry = ROOT / "omniopd" / "providers.py"
    files = [p for d in ("omniopd", "workers") for p in sorted((ROOT / d).rglob("*.py")) if p != registry]
    found = [hit for p in files for hit in _provider_lists(p, set(KINDS))]
    assert not found, "provider facts belong in omniopd/providers.py:\n" + "\n".join(found)


def test_the_registry_and_the_config_import_without_torch_or_aiohttp():
    code = (
        "import sys, omniopd.providers; assert 'pydantic' not in sys.modules; "
        "import omniopd.config; print(sorted(m for m in ('torch', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ model families


@pytest.mark.parametrize(("kind", "model", "family"), [
    ("anthropic", "claude-opus-4-7", "Claude Opus 4.7"),
    ("anthropic", "anthropic.claude-opus-4-7-v1:0", "Claude Opus 4.7"),  # Bedrock-style ids match too
    ("anthropic", "claude-opus-4-8", "Claude Opus 4.8"),
    ("anthropic", "claude-sonnet-5-5", "Claude 5 and later"),
    ("anthropic", "claude-haiku-5-5", "Claude 5 and later"),
    ("anthropic", "claude-fable-5-1", "Claude 5 and later"),
    ("anthropic", "claude-haiku-4-5-20251001", "Claude Opus 4.5 / Haiku 4.5"),
    ("anthropic", "claude-sonnet-4-5", None),
    ("openai", "gpt-6.1-terra", "GPT-6"),
    ("openai", "gpt-5.6-luna", "GPT-5.6 and later"),
    ("openai", "gpt-5-mini", "GPT-5"),
    ("openai", "gpt-5-chat-latest", None),
    ("openai", "o4-mini", "OpenAI o-series"),
    ("openai", "gpt-4.1-mini", None),
    ("gemini", "gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini", "gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
    ("gemini", "gemini-3.1-pro-preview", "Gemini 3.1 Pro"),
    ("gemini", "gemini-3-pro-preview", "Gemini 3 Pro"),
    ("gemini", "gemini-3.5-flash-lite", "Gemini 3.x Flash / Flash-Lite"),
    ("gemini", "gemini-3.7-flash", "Gemini 3.7 Flash"),
    ("gemini", "gemini-4-ultra", "Gemini 3 and later"),
])
def test_model_names_find_their_family(kind, model, family):
    found = PROVIDER_SPECS[kind].family(model)
    assert (found.label if found else None) == family


def test_temperature_is_sent_only_where_model_and_version_accept_it():
    anthropic, openai, gemini, vllm = (PROVIDER_SPECS[k] for k in ("anthropic", "openai", "gemini", "openai_compat"))
    for spec in (anthropic, openai, gemini):
        assert spec.temperature_to_send("m", 1.0) is None  # the API's default is never sent
    assert vllm.temperature_to_send("m", 1.0) == 1.0  # vLLM's default is the model's generation config
    assert anthropic.temperature_to_send("claude-haiku-4-5", 0.5, "2023-06-01") == 0.5
    assert anthropic.temperature_to_send("claude-haiku-4-5", 1.5, "2023-06-01") is None  # clamped to 1.0, the default
    with pytest.raises(SettingRefused, match=r"API version 2026-10-21 has no temperature.*`api_version: 2023-06-01`"):
        anthropic.temperature_to_send("claude-haiku-4-5", 0.5)
    for model in ("claude-opus-4-7", "claude-sonnet-5-5"):
        with pytest.raises(SettingRefused, match=r"accepts only the API's default temperature: set `temperature: 1\.0`"):
            anthropic.temperature_to_send(model, 0.5, "2023-06-01")
    with pytest.raises(SettingRefused, match=r"gpt-5-mini \(GPT-5\) accepts only"):
        openai.temperature_to_send("gpt-5-mini", 0.2)
    assert openai.temperature_to_send("gpt-4.1-mini", 0.2) == 0.2 and gemini.temperature_to_send("gemini-3.5-flash", 0.2) == 0.2


@pytest.mark.parametrize(("model", "tokens", "level", "sent"), [
    ("gemini-2.5-flash", 0, None, Thinking(budget=0)),
    ("gemini-2.5-flash", 2048, None, Thinking(budget=2048)),
    ("gemini-2.5-pro", 128, None, Thinking(budget=128)),
    ("gemini-3.5-flash", 0, None, Thinking(level="minimal")),
    ("gemini-3.1-pro-preview", 512, None, Thinking(level="low")),
    ("gemini-3.1-pro-preview", 512, "medium", Thinking(level="medium")),
    ("gemini-3.7-flash", 256, None, Thinking(level="low")),
])
def test_gemini_thinking_follows_the_family(model, tokens, level, sent):
    assert PROVIDER_SPECS["gemini"].thinking_for(model, tokens, level) == sent


@pytest.mark.parametrize(("kind", "model", "tokens", "level", "words"), [
    ("gemini", "gemini-2.5-pro", 0, None, "cannot turn thinking off"),
    ("gemini", "gemini-2.5-flash-lite", 100, None, "0 \\(thinking off\\) or 512 to 24576"),
    ("gemini", "gemini-2.5-flash", 0, "low", "has no thinking levels: remove `thinking_level`"),
    ("gemini", "gemini-3-pro-preview", 512, "medium", "accepts thinking levels low, high"),
    ("gemini", "gemini-3.1-pro-preview", 0, None, "thinks at level 'low'.*set `reasoning_tokens`"),
    ("anthropic", "claude-sonnet-5-5", 0, None, "always thinks.*set `reasoning_tokens`"),
    ("openai", "gpt-5-mini", 0, None, "always thinks"),
])
def test_thinking_a_model_cannot_do_is_refused_naming_the_key(kind, model, tokens, level, words):
    with pytest.raises(SettingRefused, match=words):
        PROVIDER_SPECS[kind].thinking_for(model, tokens, level)


def test_config_validation_refuses_what_the_provider_would_and_names_the_key():
    cases = [
        ({"kind": "anthropic", "model": "claude-opus-4-7", "temperature": 0.3, "api_version": "2023-06-01"}, "teachers.t.temperature: claude-opus-4-7"),
        ({"kind": "anthropic", "model": "claude-haiku-4-5", "api_version": "2025-01-01"}, "teachers.t.api_version: anthropic API version '2025-01-01'"),
        ({"kind": "openai", "model": "gpt-4.1", "api_version": "v1"}, "teachers.t.api_version: openai has no API versions"),
        ({"kind": "gemini", "model": "gemini-2.5-pro"}, "teachers.t.reasoning_tokens: gemini-2.5-pro (Gemini 2.5 Pro) cannot turn thinking off"),
        ({"kind": "anthropic", "model": "claude-opus-4-6", "continuation": "prefill"}, "teachers.t.continuation: claude-opus-4-6"),
    ]
    for teacher, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({"teachers": {"t": teacher}}, "x.yaml")
        assert f"x.yaml: {message}" in str(info.value)
    ok = parse_config({"teachers": {"t": {"kind": "anthropic", "model": "claude-opus-4-6"}}}).teachers["t"]
    assert ok.continuation_mode == "instruction"  # its family refuses prefill: the default follows


def test_cache_rules_of_families_and_versions_of_providers():
    anthropic, gemini, openai = (PROVIDER_SPECS[k] for k in ("anthropic", "gemini", "openai"))
    assert anthropic.cache_rule("claude-opus-4-7").min_tokens == 4096 and not anthropic.cache.reads_limited
    assert gemini.cache_rule("gemini-3.8-flash").min_tokens == 4096 and gemini.cache_rule("gemini-2.5-flash").min_tokens == 1024
    assert [v.name for v in anthropic.api_versions] == ["2026-10-21", "2023-06-01"]
    assert [v.name for v in gemini.api_versions] == ["v1beta", "v1"] and openai.api_version(None) is None
    assert openai.model_rules("gpt-5.6-sol").cache_writes_billed and not openai.model_rules("gpt-5-mini").cache_writes_billed
    assert PROVIDER_SPECS["openai_compat"].self_hosted and not openai.self_hosted


def test_every_model_a_shipped_config_names_has_a_price_with_its_source_and_date():
    from omniopd.config import load_config
    from omniopd.teachers.pricing import load_prices

    prices = load_prices(ROOT / "configs" / "prices.yaml")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name == "prices.yaml":
            continue
        for teacher in load_config(path).teachers.values():
            assert teacher.model in prices, f"{path.name}: no price for {teacher.model}"
    assert all(p.source and p.date for p in prices.values())
