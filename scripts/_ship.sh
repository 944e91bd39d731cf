# Shared by the train_*_model.sh scripts: ship_model RUN_DIR NAME [CLASSIFIER_DIR] exports the newest checkpoint of
# RUN_DIR (EMA weights, config, and what it carries: autoencoder, classifier) into src/diffuscope/models/NAME,
# replacing the shipped copy only once the new one is complete.
ship_model() {
  local dest="$ROOT/src/diffuscope/models/$2"
  rm -rf "$dest.new"
  python -c "import sys; from diffuscope.models.load import export_model; \
export_model(sys.argv[1], sys.argv[2], classifier=sys.argv[3] or None)" "$1" "$dest.new" "${3:-}"
  rm -rf "$dest" && mv "$dest.new" "$dest"
  du -sh "$dest"
}
