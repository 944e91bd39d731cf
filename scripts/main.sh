#!/usr/bin/env bash
# The main job: set up (first run only), then the whole lesson on the shipped model -- forward strip, reverse strip,
# the 10/25/50/100-step sweep with its diminishing-returns point, the phase measures -- in one report.html.
# Usage: scripts/main.sh [OUT_DIR]
set -euo pipefail
source "$(dirname "$0")/_env.sh" web,emoji  # serve, and the emoji model's text encoder and data (OUT_DIR must not reach _env.sh)
OUT="${1:-$ROOT/runs/demo-$(date +%Y%m%d-%H%M%S)}"
diffuscope demo --out "$OUT"
