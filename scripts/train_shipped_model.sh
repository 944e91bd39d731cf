#!/usr/bin/env bash
# Reproduce the shipped `mnist` model: the project's own training and classifier commands with their defaults,
# then an inference-only export (EMA weights + config + the metrics classifier) into the package.
# The shipped weights are the EMA weights of the last checkpoint (step-0003000). Training is deterministic on the
# CPU (and bit-identical across a kill and `--resume latest`), so the same command on the same torch gives the same
# checkpoint. Usage: scripts/train_shipped_model.sh [RUN_DIR]   (2 CPU cores: 24-55 min training + 2-5 min classifier, by host)
set -euo pipefail
source "$(dirname "$0")/_env.sh" ""  # no extras (see _env.sh: RUN_DIR must not reach it)
RUN="${1:-$ROOT/runs/mnist}"
diffuscope train --data mnist --out "$RUN"
diffuscope classifier --data mnist --out "$RUN/classifier"
source "$(dirname "$0")/_ship.sh"
ship_model "$RUN" mnist "$RUN/classifier"
