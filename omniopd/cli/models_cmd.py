"""`omniopd models`: build tiny offline models, untie embeddings, serve a teacher with vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniopd.cli.common import console, fail

app = typer.Typer(help="Build and inspect student models.", no_args_is_help=True)


@app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Argument(help="Directory to write the model to (Hugging Face layout).")],
    layers: Annotated[int, typer.Option(min=1, help="Transformer layers.")] = 2,
    hidden: Annotated[int, typer.Option(min=8, help="Hidden size (divisible by --heads).")] = 64,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads (vLLM on CPU needs hidden/heads >= 32).")] = 2,
    kv_heads: Annotated[int, typer.Option(min=1, help="Key/value heads (divides --heads).")] = 1,
    intermediate: Annotated[int | None, typer.Option(min=8, help="MLP width (default 2 x hidden).")] = None,
    vocab_size: Annotated[int, typer.Option(min=300, help="BPE vocabulary size, special tokens included.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of the weights and the generated corpus.")] = 0,
    corpus: Annotated[
        Path | None, typer.Option(help="Text file (one document per line) to train the tokenizer on; default: generated.")
    ] = None,
) -> None:
    """Build a random-init Qwen3-architecture model with untied embeddings and a locally
    trained byte-level BPE tokenizer with a chat template. Offline and deterministic:
    the same options give byte-identical files."""
    from omniopd.models.tiny import TinySpec, make_tiny_model

    texts = None
    if corpus is not None:
        if not corpus.is_file():
            fail(f"--corpus {corpus}: no such file")
        texts = [line for line in corpus.read_text().splitlines() if line.strip()]
        if not texts:
            fail(f"--corpus {corpus}: the file has no non-empty lines")
    spec = TinySpec(
        layers=layers,
        hidden_size=hidden,
        heads=heads,
        kv_heads=kv_heads,
        intermediate_size=intermediate or 2 * hidden,
        vocab_size=vocab_size,
        seed=seed,
    )
    try:
        path = make_tiny_model(out, spec, texts)
    except ValueError as exc:
        fail(str(exc))
    import json

    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    console.print(
        f"[green]wrote[/] {path}: qwen3, {layers} layers, hidden {hidden}, vocab {vocab}",
        soft_wrap=True,
    )


@app.command("untie")
def untie(
    src: Annotated[str, typer.Argument(help="Model directory (or a hub name already in the local cache), e.g. Qwen/Qwen3-4B.")],
    out: Annotated[Path, typer.Argument(help="Directory to write the untied copy to (Hugging Face layout).")],
) -> None:
    """Write a copy of a model whose output layer is its own tensor (tie_word_embeddings: false).

    Needed once per student with tied embeddings (Qwen3-4B and smaller, Llama-3.2-1B/3B, ...):
    vLLM's in-place weight reload keeps the old output layer of a tied checkpoint, so rollout
    workers refuse one. The copy computes exactly the same function (checked on a short
    input); point student.path at it. Costs one extra vocab x hidden matrix.
    """
    import torch

    from omniopd.models.loading import ModelLoadError, load_causal_lm, load_tokenizer
    from omniopd.rollout.weights import check_untied
    from omniopd.train.checkpoint import untied_state, write_model_dir

    if out.exists() and any(out.iterdir()):
        fail(f"{out} exists and is not empty: choose a new directory")
    try:
        model = load_causal_lm(src, dtype="auto", device="cpu")
        tokenizer = load_tokenizer(src)
    except ModelLoadError as exc:
        fail(str(exc))
    state, config = untied_state(model)
    write_model_dir(out, state, config, generation_config=getattr(model, "generation_config", None), tokenizer=tokenizer)
    check_untied(out)
    copy = load_causal_lm(str(out), dtype="auto", device="cpu")
    ids = torch.tensor([tokenizer("Untie check: 1 + 1 = 2", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        same = torch.equal(model(ids).logits, copy(ids).logits)
    if not same:
        fail(f"the untied copy in {out} does not reproduce the logits of {src}; do not use it")
    console.print(f"untied copy of {src} written to {out} (identical logits); set student.path: {out}", highlight=False)


@app.command("serve")
def serve(
    model: Annotated[str, typer.Argument(help="Model directory (Hugging Face layout) or a hub name already in the local cache.")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for other hosts).")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option("--name", help="The model name clients send (default: MODEL).")] = None,
    max_model_len: Annotated[int, typer.Option(min=16, help="Longest prompt + continuation, in tokens.")] = 1024,
    dtype: Annotated[str, typer.Option(help="Weights dtype: float32, bfloat16, float16 or auto.")] = "float32",
    kvcache_gb: Annotated[float, typer.Option(min=0.5, help="KV cache size in GiB on a CPU (VLLM_CPU_KVCACHE_SPACE).")] = 1.0,
    eager: Annotated[bool | None, typer.Option("--eager/--compiled", help="Skip graph compilation (starts fastest; "
                                               "default: on without a GPU).")] = None,
) -> None:
    """Serve a teacher with vLLM's OpenAI-compatible server, as OmniOPD's `openai_compat` teacher
    in raw mode expects (`/v1/completions` on the prompt OmniOPD renders).

    This process becomes the server (exec), so a supervisor that stops it stops vLLM. Point the
    teacher's `base_url` at http://HOST:PORT/v1 and its `model` at --name. `omniopd demo
    --teacher model` starts one for the demo's trained teacher.
    """
    import os
    import sys

    from omniopd.teachers.vllm_server import server_command, server_env

    local = Path(model)
    if local.exists() and not (local / "config.json").is_file():
        fail(f"{model}: no config.json there; pass a model directory in Hugging Face layout")
    if eager is None:
        import torch

        eager = not torch.cuda.is_available()
    command = server_command(model, port=port, served_name=name, host=host, max_model_len=max_model_len, dtype=dtype,
                             extra=["--enforce-eager"] if eager else [])
    console.print(f"vLLM server for {model} on http://{host}:{port}/v1 (model name {name or model!r})", highlight=False)
    sys.stdout.flush()
    os.execve(command[0], command, server_env(kvcache_gb=kvcache_gb))
