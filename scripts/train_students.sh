#!/usr/bin/env bash
# Distil the shipped 4-step students from the shipped teachers (issue 32; docs/distillation.md), then export them
# into the package beside their teachers: mnist-4step (with mnist's metrics classifier) and emoji-4step.
# The two runs go side by side, one CPU thread each (the 2-core recipe; docs/distillation.md "Cost, measured").
# Re-running the script resumes a run that was cut off (bit-identical).
# Usage: scripts/train_students.sh [RUNS_DIR]   (extra flags for both runs: DISTILL_FLAGS="--device cuda")
set -euo pipefail
source "$(dirname "$0")/_env.sh" ""  # no extras
RUNS="${1:-$ROOT/runs}"
FLAGS=(${DISTILL_FLAGS:---threads 1})
mkdir -p "$RUNS"

distil() {  # distil TEACHER OUT_DIR [flags...]: a fresh run, or --resume latest where one exists
  local teacher="$1" out="$2"
  shift 2
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume latest)
  diffuscope distill --model "$teacher" --steps 4 --out "$out" --quiet "${resume[@]}" "${FLAGS[@]}" "$@"
}

# Teacher: 4 Heun sub-steps per interval (31 NFE, guided); chunks of 256 trajectories, each reused for 125 steps.
distil mnist "$RUNS/mnist-4step" --max-steps 1500 --substeps 4 --chunk 256 --chunk-steps 125 --lr 2e-4 \
  > "$RUNS/mnist-4step.log" 2>&1 &
mnist_pid=$!
distil emoji "$RUNS/emoji-4step" --max-steps 1000 --substeps 4 --chunk 256 --chunk-steps 125 --lr 2e-4 \
  > "$RUNS/emoji-4step.log" 2>&1 &
emoji_pid=$!
status=0
wait "$mnist_pid" || { status=$?; echo "mnist-4step failed: $RUNS/mnist-4step.log" >&2; }
wait "$emoji_pid" || { status=$?; echo "emoji-4step failed: $RUNS/emoji-4step.log" >&2; }
[ "$status" -eq 0 ] || exit "$status"

source "$(dirname "$0")/_ship.sh"  # ship_model RUN_DIR NAME [CLASSIFIER_DIR]: EMA weights, config (with the
# student record), its tuned grid and codec, into src/diffuscope/models/NAME
ship_model "$RUNS/mnist-4step" mnist-4step "$ROOT/src/diffuscope/models/mnist"
ship_model "$RUNS/emoji-4step" emoji-4step
diffuscope sample --model mnist-4step --prompt 7 --out "$RUNS/mnist-4step/check"   # 4 steps, Euler, guidance 1
