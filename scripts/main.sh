#!/usr/bin/env bash
# The main job: set up (first run only), then train a small prompt-conditioned model on the built-in 8x8
# `digits` data and write its sample grid. Usage: scripts/main.sh [OUT_DIR]
set -euo pipefail
source "$(dirname "$0")/_env.sh"
OUT="${1:-$ROOT/runs/digits-$(date +%Y%m%d-%H%M%S)}"
diffuscope train --data digits --out "$OUT"
echo "sample grid: $(ls -1 "$OUT"/samples/*.png | tail -n 1)"
