"""Training: the run configuration and one readable loop."""

from diffuscope.training.config import DataConfig, RunConfig, TrainConfig, preset, resolve
from diffuscope.training.loop import TrainingError, TrainResult, train

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "TrainResult", "TrainingError", "preset", "resolve", "train"]
