#!/usr/bin/env bash
# Code Pass@1 of a checkpoint or an OpenAI-compatible endpoint (paper Table 2), with every
# program run in the bubblewrap sandbox (docs/sandbox.md).
#
#   scripts/eval_code.sh CONFIG MODEL_OR_URL [omniopd eval options...]
#
#   CONFIG        the run's YAML (eval.* settings incl. code limits, rollout.backend, store)
#   MODEL_OR_URL  a local checkpoint directory, or http(s)://... of an OpenAI-compatible server
#   options       passed to `omniopd eval` (--endpoint-model, --api-key-env, --run/--step, --out, ...)
#
# Environment: BENCHMARKS (default apps,codecontests,codeforces,taco), SAMPLES (default 16),
# MAX_ITEMS (default 100: the paper samples 100 problems per code benchmark), DATA_DIR.
# Refuses to start without a working sandbox; OMNIOPD_ALLOW_UNSANDBOXED=1 opts into the
# weaker mode (never on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
config=$1 target=$2
shift 2
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
args=(-c "$config" --benchmarks "${BENCHMARKS:-apps,codecontests,codeforces,taco}" --samples "${SAMPLES:-16}"
      --max-items "${MAX_ITEMS:-100}")
[ -n "${DATA_DIR:-}" ] && args+=(--data-dir "$DATA_DIR")
case "$target" in
    http://*|https://*) args+=(--endpoint "$target") ;;
    *) args+=(--model "$target") ;;
esac

if [ "${OMNIOPD_ALLOW_UNSANDBOXED:-0}" = 1 ]; then
    echo "eval_code: OMNIOPD_ALLOW_UNSANDBOXED=1: model code runs WITHOUT bubblewrap" >&2
    args+=(--set eval.allow_unsandboxed=true)
else
    if ! command -v bwrap >/dev/null 2>&1; then
        echo "eval_code: bubblewrap (bwrap) is not installed; model-written code must not run unsandboxed." >&2
        echo "  install it: apt-get install bubblewrap   (see docs/sandbox.md)" >&2
        exit 1
    fi
    # bwrap present is not enough (user namespaces may be off): run one program for real.
    probe=$(mktemp --suffix=.py)
    trap 'rm -f "$probe"' EXIT
    echo 'print(6 * 7)' > "$probe"
    if ! out=$("$py" -m omniopd sandbox run "$probe" 2>&1) || [[ "$out" != *42* ]]; then
        echo "eval_code: the sandbox does not work on this machine:" >&2
        echo "$out" | tail -5 >&2
        echo "  see docs/sandbox.md (Requirements, Troubleshooting)" >&2
        exit 1
    fi
fi
"$py" -m omniopd db upgrade -c "$config"
exec "$py" -m omniopd eval "${args[@]}" "$@"
