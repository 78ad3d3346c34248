#!/usr/bin/env bash
# Start (or stop) the worker processes of a run in the background.
#
#   scripts/start_workers.sh CONFIG              # start what CONFIG asks for
#   scripts/start_workers.sh CONFIG --stop       # stop them (warm: the task in progress finishes)
#   scripts/start_workers.sh CONFIG --stop --timeout 300
#
# What starts (docs/workers.md):
#   - workers.rollout rollout workers (`omniopd worker rollout`), one per GPU: worker i gets
#     CUDA_VISIBLE_DEVICES = its GPUs (rollout.vllm.tensor_parallel_size each for vLLM), and
#     the backend workers.rollout_backends[i] when that list names one (else rollout.backend).
#     GPUs are those of CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists; on a
#     machine without GPUs the workers run on the CPU.
#   - workers.audit audit workers for the auditing teacher (audit.teacher), each with
#     workers.audit_threads concurrent audits (`omniopd worker audit`); none when the
#     configured objective declares no audits (its `needs.audits`, omniopd/objectives).
#   - one maintenance worker (`omniopd worker maintenance`): re-sends lost audits, expires
#     stale budget reservations and leases (several at once are harmless).
#   - when eval.every_steps is set, the evaluator (`omniopd worker evaluator`): Pass@1 of the
#     checkpoints while the learner trains, on the GPUs in $OMNIOPD_EVALUATOR_GPUS (default
#     none: the CPU).
# Logs and pid files: <run.output_dir>/logs/<role>-<i>.log / .pid. A worker whose pid file
# names a live process is left running (starting twice starts nothing new).
# Embedded mode: the broker lives as long as the process that started it, so start the
# learner (or `omniopd demo`) first.
# Python: $OMNIOPD_PYTHON, else the repository's .venv/bin/python, else python3.
set -euo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage
case $1 in -h|--help) usage 0 ;; esac
CONFIG=$1; shift
MODE=start
TIMEOUT=120
while [ $# -gt 0 ]; do
    case $1 in
        --stop) MODE=stop ;;
        --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
        -h|--help) usage 0 ;;
        *) echo "start_workers: unknown argument $1" >&2; usage ;;
    esac
    shift
done
[ -f "$CONFIG" ] || { echo "start_workers: no config file $CONFIG" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${OMNIOPD_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)

# The config's answers, as shell assignments (validated by OmniOPD's own loader).
eval "$("$PY" - "$CONFIG" <<'EOF'
import shlex
import sys

from omniopd.config import ConfigError, load_config

try:
    c = load_config(sys.argv[1])
except ConfigError as exc:
    print(f"echo {shlex.quote(str(exc))} >&2; exit 2")
    raise SystemExit(0)
teacher = c.audit.teacher if c.loss.needs.audits else ""
tp = c.rollout.vllm.tensor_parallel_size if c.rollout.backend == "vllm" else 1
for key, value in {
    "OUT": c.run.output_dir, "N_ROLLOUT": c.workers.rollout, "N_AUDIT": c.workers.audit if teacher else 0,
    "AUDIT_THREADS": c.workers.audit_threads, "TEACHER": teacher, "TP": tp, "BROKER_MODE": c.broker.mode,
    "EVALUATOR": int(c.eval.every_steps is not None), "BACKENDS": " ".join(c.workers.rollout_backends),
}.items():
    print(f"{key}={shlex.quote(str(value))}")
EOF
)"
LOGS=$OUT/logs
mkdir -p "$LOGS"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {  # start NAME ENV... -- COMMAND...
    local name=$1; shift
    local pidfile=$LOGS/$name.pid
    if alive "$pidfile"; then
        echo "start_workers: $name already running (pid $(cat "$pidfile"))"
        return
    fi
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    # Own session: a Ctrl-C in this terminal does not reach the workers; --stop does.
    env "${envs[@]}" nohup setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "start_workers: $name pid $! (log $LOGS/$name.log)"
}

stop_all() {
    local pids=() files=()
    for pidfile in "$LOGS"/*.pid; do
        [ -e "$pidfile" ] || continue
        if alive "$pidfile"; then
            kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
            pids+=("$(cat "$pidfile")"); files+=("$pidfile")
            echo "start_workers: stopping $(basename "$pidfile" .pid) (pid $(cat "$pidfile"))"
        else
            rm -f "$pidfile"
        fi
    done
    local deadline=$((SECONDS + TIMEOUT))
    for i in "${!pids[@]}"; do
        while kill -0 "${pids[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "start_workers: ${pids[$i]} still running after ${TIMEOUT}s, killing its process group" >&2
            kill -KILL -- "-${pids[$i]}" 2>/dev/null || kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        rm -f "${files[$i]}"
    done
}

if [ "$MODE" = stop ]; then
    stop_all
    exit 0
fi

# GPUs to hand out: CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists.
GPUS=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a GPUS <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
    mapfile -t GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
if [ ${#GPUS[@]} -gt 0 ] && [ $((N_ROLLOUT * TP)) -gt ${#GPUS[@]} ]; then
    echo "start_workers: workers.rollout = $N_ROLLOUT x $TP GPU(s) each needs $((N_ROLLOUT * TP)) GPUs, found ${#GPUS[@]} (${GPUS[*]}); lower workers.rollout" >&2
    exit 2
fi
if [ "$BROKER_MODE" = embedded ] && [ ! -f "$OUT/broker/embedded.json" ]; then
    echo "start_workers: note: no embedded broker is running yet; the first worker starts it and it stops with that worker. Start the learner first." >&2
fi

OMNIOPD=("$PY" -m omniopd)
read -r -a BACKEND_OF <<<"$BACKENDS"  # workers.rollout_backends: worker i's backend, if given
for ((i = 0; i < N_ROLLOUT; i++)); do
    backend=()
    [ -n "${BACKEND_OF[$i]:-}" ] && backend=(--set "rollout.backend=${BACKEND_OF[$i]}")
    if [ ${#GPUS[@]} -gt 0 ]; then
        devices=$(IFS=,; echo "${GPUS[*]:$((i * TP)):$TP}")
        start "rollout-$i" "CUDA_VISIBLE_DEVICES=$devices" -- "${OMNIOPD[@]}" worker rollout --config "$CONFIG" "${backend[@]}"
    else
        start "rollout-$i" "CUDA_VISIBLE_DEVICES=" -- "${OMNIOPD[@]}" worker rollout --config "$CONFIG" "${backend[@]}"
    fi
done
for ((i = 0; i < N_AUDIT; i++)); do
    start "audit-$TEACHER-$i" "CUDA_VISIBLE_DEVICES=" -- \
        "${OMNIOPD[@]}" worker audit --config "$CONFIG" --teacher "$TEACHER" --concurrency "$AUDIT_THREADS"
done
start maintenance "CUDA_VISIBLE_DEVICES=" -- "${OMNIOPD[@]}" worker maintenance --config "$CONFIG"
if [ "$EVALUATOR" = 1 ]; then
    start evaluator "CUDA_VISIBLE_DEVICES=${OMNIOPD_EVALUATOR_GPUS:-}" -- "${OMNIOPD[@]}" worker evaluator --config "$CONFIG"
fi
