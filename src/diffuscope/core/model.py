"""A diffusion model = a network + a noise schedule + a parametrisation (+ a conditioner, + a codec for latent
models), built from one frozen config; and ``DiffusionModel``, what every consumer asks of a model of any kind.

``build_denoiser(config)`` gives the denoiser D(x, sigma, cond) that every sampler, metric and picture speaks to
(docs/architecture.md: one contract). The config is what a checkpoint stores as JSON beside its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import Conditioner, NoConditioner
from diffuscope.core.contract import DenoiseFn, Denoiser
from diffuscope.core.guidance import CFGDenoiser, check_interval, check_scale
from diffuscope.core.schedules import Schedule


class Codec(Protocol):
    """A latent model's frozen autoencoder (Rombach et al. 2022): pixels in [-1, 1] <-> scaled latents."""

    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


@dataclass
class DiffusionModel:
    """What generation, the sweep, the strips, phases and the page ask of a model, whatever its kind
    (docs/architecture.md, "A model, whatever its kind"). Pictures and metrics always see decoded images."""

    denoiser: Denoiser  # D(x, sigma, cond) -> x0_hat in the model's own space (pixels or latents), with .schedule
    conditioner: Conditioner
    sample_shape: tuple[int, int, int]  # (C, H, W) of what the sampler integrates
    name: str = "model"
    path: Path | None = None
    step: int = 0
    config: Any = None  # ModelConfig for our own models
    run_config: dict[str, Any] = field(default_factory=dict)
    codec: Codec | None = None  # latent models only

    @classmethod
    def bare(cls, denoiser: DenoiseFn, schedule: Schedule, sample_shape: tuple[int, int, int],
             conditioner: Conditioner | None = None) -> DiffusionModel:
        """Any denoiser D(x, sigma, cond) and its schedule as a model (a reference denoiser, a sweep's bare
        denoiser): unconditional unless a conditioner is given, no codec."""
        return cls(_Scheduled(denoiser, schedule), conditioner or NoConditioner(), tuple(sample_shape))

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.codec.image_shape) if self.codec is not None else tuple(self.sample_shape)

    @property
    def is_latent(self) -> bool:
        return self.codec is not None

    def guided(self, scale: float, interval: tuple[float, float] | None = None):
        """The denoiser with classifier-free guidance at ``scale`` (1 = the plain denoiser), guided only where
        sigma_lo < sigma <= sigma_hi for an ``interval`` (guidance.py; Ho & Salimans 2022, Eq. 6; Kynkaanniemi et
        al. 2024). The one place a denoiser is guided; a model without a null condition refuses scale != 1."""
        scale = check_scale(scale)
        if scale == 1:
            return self.denoiser
        if not self.conditioner.has_null:
            raise UsageError("this model has no null condition (an unconditional model or no empty prompt): "
                             "guidance must be 1")
        return CFGDenoiser(self.denoiser, scale, self.conditioner.null(1), check_interval(interval))

    def decode(self, x: Tensor) -> Tensor:
        """What the sampler produced -> pixel images in about [-1, 1]."""
        return x if self.codec is None else self.codec.decode(x)

    def encode(self, images: Tensor) -> Tensor:
        """Pixel images in [-1, 1] -> the space the sampler integrates."""
        return images if self.codec is None else self.codec.encode(images)

    @property
    def class_names(self) -> tuple[str, ...]:
        return getattr(self.conditioner, "class_names", ())

    @property
    def data_name(self) -> str | None:
        """The model's own data set (run config), where it has one."""
        return (self.run_config.get("data") or {}).get("name")

    def trained_prompts(self) -> tuple[str, ...]:
        """The prompts the model was trained on: its class names, or for a text model the names of its data set's
        training images (read from the data set; none for a model without one, e.g. a diffusers pipeline)."""
        if not self.conditioner.has_text:
            return tuple(self.class_names)
        if not self.data_name:
            return ()
        from diffuscope.data import load_dataset

        try:
            return tuple(load_dataset(self.data_name, split="train").class_names)
        except UsageError:  # the data set is not on this machine
            return ()


class _Scheduled:
    """A bare denoiser with the schedule it was given (what ``DiffusionModel.schedule`` reads)."""

    def __init__(self, denoiser: DenoiseFn, schedule: Schedule):
        self.denoiser, self.schedule = denoiser, schedule

    def __call__(self, x: Tensor, sigma: Tensor, cond=None) -> Tensor:
        return self.denoiser(x, sigma, cond)
