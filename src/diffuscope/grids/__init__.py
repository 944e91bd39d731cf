"""Step grids tuned per model: the search and learning algorithms (tuning) and their storage (store)."""
