#!/usr/bin/env bash
# Reproduce the shipped `mnist` model: the project's own training and classifier commands with their defaults,
# then an inference-only export (EMA weights + config + the metrics classifier) into the package.
# Usage: scripts/train_shipped_model.sh [RUN_DIR]      (about an hour on 2 CPU cores; minutes on a GPU)
set -euo pipefail
source "$(dirname "$0")/_env.sh"
RUN="${1:-$ROOT/runs/mnist}"
diffuscope train --data mnist --out "$RUN"
diffuscope classifier --data mnist --out "$RUN/classifier"
DEST="$ROOT/src/diffuscope/models/mnist"
rm -rf "$DEST.new"
python -c "from diffuscope.checkpoint import export_model; export_model('$RUN', '$DEST.new', classifier='$RUN/classifier')"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
du -sh "$DEST"
