"""`omniopd models untie`: a tied student becomes an untied copy with the same function."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from omniopd.cli import app


def test_untie_writes_an_untied_copy_with_identical_logits(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()  # lm_head now shares the input embeddings
    assert model.lm_head.weight is model.get_input_embeddings().weight
    tied = tmp_path / "tied"
    model.save_pretrained(tied)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied)

    out = tmp_path / "untied"
    result = CliRunner().invoke(app, ["models", "untie", str(tied), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    copy = AutoModelForCausalLM.from_pretrained(out)
    assert copy.lm_head.weight is not copy.get_input_embeddings().weight
    ids = torch.tensor([[5, 17, 42, 9]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, copy(ids).logits)

    again = CliRunner().invoke(app, ["models", "untie", str(tied), str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
