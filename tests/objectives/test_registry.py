"""OBJECTIVES is the only list of objectives: every entry keeps the Protocol and declares
valid needs, config validation accepts exactly its keys and enforces the declarations, and
no code outside omniopd/objectives decides anything from a method's name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from omniopd.config import ConfigError, parse_config
from omniopd.objectives import (
    OBJECTIVES,
    SFT,
    Needs,
    Objective,
    SFTOnTrajectories,
    SftSource,
    make_objective,
    objective_class,
)
from tests.objectives.fakes import Declared, declaring

ROOT = Path(__file__).resolve().parents[2]
EVERY_CLASS = sorted({objective_class(m, s) for m in OBJECTIVES for s in get_args(SftSource)}, key=lambda c: c.__name__)


def loss_for(method: str) -> dict:
    """The smallest valid loss section for `method` (a white-box teacher where one is needed)."""
    return {"method": method, **({"whitebox_teacher": "/m"} if OBJECTIVES[method].needs.teacher_logits else {})}


def config_for(method: str) -> dict:
    """The smallest valid config for `method`: its loss section, and a grader and groups of 2
    where the objective learns from rewards."""
    needs = OBJECTIVES[method].needs
    rewarded = {"reward": {"grader": "demo"}, "rollout": {"samples_per_prompt": 2}} if needs.rewards else {}
    return {"loss": loss_for(method), **rewarded}


@pytest.mark.parametrize("cls", EVERY_CLASS, ids=lambda c: c.__name__)
def test_every_objective_has_the_protocols_members_and_declares_valid_needs(cls):
    assert isinstance(cls.needs, Needs)  # frozen: __post_init__ checked it
    assert isinstance(cls(), Objective)
    assert all(callable(getattr(cls, name)) for name in ("rows", "micro_loss", "metrics"))


def test_a_class_without_a_declaration_is_not_an_objective():
    class Undeclared:
        def rows(self, example, tokenizer): ...
        def micro_loss(self, models, rows, s): ...
        def metrics(self, st, norm, beta): ...

    assert not isinstance(Undeclared(), Objective) and isinstance(Declared(), Objective)


def test_needs_teacher_texts_only_with_audits_and_the_reference_only_for_an_anchor_with_weight():
    with pytest.raises(ValueError, match=r"teacher_texts=True\) needs audits=True"):
        Needs(teacher_texts=True)
    anchored = Needs(audits=True, kl_anchor=True)
    assert anchored.reference(0.1) and not anchored.reference(0.0)
    assert not Needs().reference(0.1)


def test_sft_source_picks_the_sft_variant_and_nothing_else():
    assert objective_class("sft") is SFT and SFT.needs == Needs(audits=True, teacher_texts=True)
    assert objective_class("sft", "trajectories") is SFTOnTrajectories and SFTOnTrajectories.needs == Needs()
    for method, cls in OBJECTIVES.items():
        if cls is not SFT:
            assert objective_class(method, "trajectories") is cls
    with pytest.raises(ValueError, match=f"expected one of {', '.join(OBJECTIVES)}"):
        make_objective("ppo")


def test_config_accepts_exactly_the_registered_methods_and_lists_them_when_refusing(monkeypatch):
    for method in OBJECTIVES:
        assert parse_config(config_for(method)).loss.method == method
    *rest, last = (repr(m) for m in OBJECTIVES)
    listed = re.escape(f"{', '.join(rest)} or {last}")  # 'omniopd', 'sft', 'opd_whitebox' or 'grpo'
    with pytest.raises(ConfigError, match=rf"loss\.method: Input should be {listed}, a key of .* \(got 'ppo'\)"):
        parse_config({"loss": {"method": "ppo"}})
    fake = declaring()
    monkeypatch.setitem(OBJECTIVES, "ppo", fake)
    assert parse_config({"loss": {"method": "ppo"}}).loss.needs is fake.needs


def test_config_validation_enforces_what_the_objective_declares(monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "logits", declaring(teacher_logits=True))
    with pytest.raises(ConfigError, match=r"loss\.method = logits needs loss\.whitebox_teacher \(a model path\)"):
        parse_config({"loss": {"method": "logits"}})
    assert parse_config({"loss": {"method": "logits", "whitebox_teacher": "/m"}}).loss.needs.teacher_logits
    monkeypatch.setitem(OBJECTIVES, "rewarded", declaring(rewards=True))
    with pytest.raises(ConfigError, match=r"loss\.method = rewarded learns from rule-based rewards, but reward\.grader "
                       r"is not set: set reward\.grader"):
        parse_config({"loss": {"method": "rewarded"}})
    assert parse_config({"loss": {"method": "rewarded"}, "reward": {"grader": "math"}}).loss.needs.rewards
    monkeypatch.setitem(OBJECTIVES, "grouped", declaring(rewards=True, groups=True))
    grouped = {"loss": {"method": "grouped"}, "reward": {"grader": "demo"}}
    with pytest.raises(ConfigError, match=r"rollout\.samples_per_prompt must be at least 2"):
        parse_config(grouped)
    with pytest.raises(ConfigError, match=r"learner\.batch_size \(2\) must be a multiple of it"):
        parse_config({**grouped, "rollout": {"samples_per_prompt": 4}})
    assert parse_config({**grouped, "rollout": {"samples_per_prompt": 4}, "learner": {"batch_size": 8}})


def test_config_and_the_registry_load_and_validate_without_torch():
    code = (
        "import sys; from omniopd.config import parse_config; import omniopd.objectives; "
        "c = parse_config({'loss': {'method': 'sft', 'sft_source': 'trajectories'}}); "
        "assert not c.loss.needs.audits; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def code_files() -> list[Path]:
    """Python and shell files of the project outside omniopd/objectives (tests excluded)."""
    files = []
    for top in ("omniopd", "workers", "db", "eval", "scripts"):
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".sh") and p.is_file()]
    return [p for p in files if (ROOT / "omniopd" / "objectives") not in p.parents]


def test_no_code_outside_the_objectives_branches_on_a_method_name():
    names = "|".join(re.escape(m) for m in OBJECTIVES)
    compared = re.compile(
        rf"""loss\.method\s*(==|!=|\bin\b|\bnot\s+in\b)"""  # any test of loss.method itself
        rf"""|(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=|\bin\b)|\bcase\s+["']({names})["']"""
    )
    # A method's name as a string anywhere is a list of objectives or a branch on one; only
    # "omniopd" is also the project's name (package, default run name), so it is left out here.
    others = "|".join(re.escape(m) for m in OBJECTIVES if m != "omniopd")
    quoted = re.compile(rf"""["']({others})["']""")
    found = []
    for path in code_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if compared.search(line) or quoted.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "read the objective's `needs` (omniopd/objectives) instead:\n" + "\n".join(found)
