"""The models: built-in ones (one folder each, shipped with the package), our own model config and builders
(config.py), and loading any kind of model (load.py)."""
