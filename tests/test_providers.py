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
from omniopd.providers import PROVIDER_SPECS, CacheRule, ProviderSpec, SamplingRules, provider_spec
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
