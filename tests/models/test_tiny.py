"""Tiny offline models: deterministic, untied, loadable offline, usable as a chat model."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omniopd.models.loading import ModelLoadError, load_causal_lm, load_tokenizer
from omniopd.models.tiny import TinySpec, make_tiny_model


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    spec = TinySpec(vocab_size=400, seed=5)
    a = make_tiny_model(tmp_path / "a", spec)
    b = make_tiny_model(tmp_path / "b", spec)
    assert digest(a) == digest(b)
    c = make_tiny_model(tmp_path / "c", TinySpec(vocab_size=400, seed=6))
    assert digest(c)["model.safetensors"] != digest(a)["model.safetensors"]


def test_embeddings_are_untied_so_vllm_reloads_them(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, device="cpu")
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_tokenizer_round_trips_any_text_and_has_a_chat_template(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    text = "Schritt 3: 12 × 7 = 84 → naïve 🙂\n  Answer: 84"
    assert tok.decode(tok(text).input_ids) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None


def test_model_generates_and_is_frozen_unless_trainable(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    frozen = load_causal_lm(tiny_model_dir, device="cpu")
    assert not any(p.requires_grad for p in frozen.parameters())
    ids = tok("Step 1:", return_tensors="pt").input_ids
    out = frozen.generate(ids, max_new_tokens=5, do_sample=True, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    trainable = load_causal_lm(tiny_model_dir, device="cpu", trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable.dtype == torch.float32


def test_missing_directory_error_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelLoadError, match="omniopd models make-tiny"):
        load_causal_lm(str(tmp_path / "nope"))


def test_hub_id_offline_error_says_how_to_get_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE=1.*huggingface-cli download"):
        load_tokenizer("no-such-org/no-such-model")


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        make_tiny_model(tmp_path / "x", TinySpec(hidden_size=30, heads=4))


def test_cli_make_tiny_works_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} with words and numbers {i * 7}" for i in range(300)))
    result = subprocess.run(
        [sys.executable, "-m", "omniopd", "models", "make-tiny", str(tmp_path / "m"), "--vocab-size", "320",
         "--layers", "1", "--corpus", str(corpus)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert "wrote" in result.stdout
