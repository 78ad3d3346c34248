#!/usr/bin/env bash
# Math Pass@1 of a checkpoint or an OpenAI-compatible endpoint (paper Table 1).
#
#   scripts/eval_math.sh CONFIG MODEL_OR_URL [omniopd eval options...]
#
#   CONFIG        the run's YAML (eval.* settings, rollout.backend, store)
#   MODEL_OR_URL  a local checkpoint directory (sampled with rollout.backend: hf or vllm),
#                 or http(s)://... of an OpenAI-compatible server (a teacher, vLLM, ...)
#   options       passed to `omniopd eval`, e.g. --endpoint-model Qwen/Qwen3-32B,
#                 --api-key-env OPENAI_API_KEY, --max-items 50, --run R --step S, --out DIR
#
# Environment: BENCHMARKS (default math500,aime24,aime25,amc23,olympiadbench),
# SAMPLES (default 16, the paper's k), DATA_DIR (default: eval.data_dir of CONFIG).
# Creates or upgrades the store first; a rerun resumes where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
config=$1 target=$2
shift 2
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
args=(-c "$config" --benchmarks "${BENCHMARKS:-math500,aime24,aime25,amc23,olympiadbench}" --samples "${SAMPLES:-16}")
[ -n "${DATA_DIR:-}" ] && args+=(--data-dir "$DATA_DIR")
case "$target" in
    http://*|https://*) args+=(--endpoint "$target") ;;
    *) args+=(--model "$target") ;;
esac
"$py" -m omniopd db upgrade -c "$config"
exec "$py" -m omniopd eval "${args[@]}" "$@"
