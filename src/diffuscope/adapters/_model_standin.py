"""A minimal stand-in for ``diffuscope.model.DiffusionModel`` (INTERFACE.md, issue 17) with the same fields, used
by ``adapters.pipeline`` only until the real one is importable; delete this file once it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from diffuscope.conditioning import ClassConditioner, Conditioner
from diffuscope.precond import Denoiser


@dataclass
class DiffusionModel:
    denoiser: Denoiser
    conditioner: Conditioner
    sample_shape: tuple[int, int, int]
    name: str = "model"
    path: Path | None = None
    step: int = 0
    config: Any = None
    run_config: dict = field(default_factory=dict)
    codec: Any = None

    @property
    def schedule(self):
        return self.denoiser.schedule

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.sample_shape if self.codec is None else self.codec.image_shape

    def decode(self, x: Tensor) -> Tensor:
        return x if self.codec is None else self.codec.decode(x)

    def encode(self, images: Tensor) -> Tensor:
        return images if self.codec is None else self.codec.encode(images)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.conditioner.class_names if isinstance(self.conditioner, ClassConditioner) else ()
