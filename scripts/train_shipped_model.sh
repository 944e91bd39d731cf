#!/usr/bin/env bash
# Reproduce the shipped `mnist` model: the project's own training and classifier commands with their defaults,
# then an inference-only export (EMA weights + config + the metrics classifier) into the package.
# The shipped weights are the EMA weights of checkpoint step-0001500 of this 2000-step run (the session that made
# them had no time for the last 500 steps); training is deterministic on the CPU, so the same command on the same
# torch gives the same checkpoint. Usage: scripts/train_shipped_model.sh [RUN_DIR]   (~45 min on 2 CPU cores)
set -euo pipefail
source "$(dirname "$0")/_env.sh"
RUN="${1:-$ROOT/runs/mnist}"
diffuscope train --data mnist --out "$RUN"
diffuscope classifier --data mnist --out "$RUN/classifier"
DEST="$ROOT/src/diffuscope/models/mnist"
rm -rf "$DEST.new"
CKPT="$RUN/checkpoints/step-0001500"
python -c "from diffuscope.checkpoint import export_model; export_model('$CKPT', '$DEST.new', classifier='$RUN/classifier')"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
du -sh "$DEST"
