#!/usr/bin/env bash
# Distil the shipped 4-step students from the shipped teachers (issue 32; docs/distillation.md), then export them
# into the package beside their teachers: mnist-4step (with mnist's metrics classifier) and emoji-4step.
# NOT run yet: a job for a free machine with a GPU (the defaults cost ~7 h per model on the 2-core CPU host,
# docs/distillation.md "Cost, measured"). Re-running the script resumes a run that was cut off (bit-identical).
# Usage: scripts/train_students.sh [RUNS_DIR]   (extra flags for both runs: DISTILL_FLAGS="--device cuda")
set -euo pipefail
source "$(dirname "$0")/_env.sh" ""  # no extras
RUNS="${1:-$ROOT/runs}"
FLAGS=(${DISTILL_FLAGS:-})

distil() {  # distil TEACHER OUT_DIR [flags...]: a fresh run, or --resume latest where one exists
  local teacher="$1" out="$2"
  shift 2
  local resume=()
  [ -d "$out/checkpoints" ] && resume=(--resume latest)
  diffuscope distill --model "$teacher" --steps 4 --out "$out" "${resume[@]}" "${FLAGS[@]}" "$@"
}

distil mnist "$RUNS/mnist-4step" --max-steps 2000 --substeps 8 --chunk 256 --chunk-steps 50
distil emoji "$RUNS/emoji-4step" --max-steps 4000 --substeps 8 --chunk 256 --chunk-steps 50

source "$(dirname "$0")/_ship.sh"  # ship_model RUN_DIR NAME [CLASSIFIER_DIR]: EMA weights, config (with the
# student record), its tuned grid and codec, into src/diffuscope/models/NAME
ship_model "$RUNS/mnist-4step" mnist-4step "$ROOT/src/diffuscope/models/mnist"
ship_model "$RUNS/emoji-4step" emoji-4step
diffuscope sample --model mnist-4step --prompt 7 --out "$RUNS/mnist-4step/check"   # 4 steps, Euler, guidance 1
