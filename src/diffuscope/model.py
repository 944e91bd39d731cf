"""A diffusion model = a network + a noise schedule + a parametrisation (+ a conditioner, + a codec for latent
models), built from one frozen config; and ``DiffusionModel``, what every consumer asks of a model of any kind.

``build_denoiser(config)`` gives the denoiser D(x, sigma, cond) that every sampler, metric and picture speaks to
(ARCHITECTURE.md: one contract). The config is what a checkpoint stores as JSON beside its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from diffuscope.conditioning import CONDITIONINGS, ClassConditioner, Conditioner, make_conditioner
from diffuscope.errors import UsageError, choices_error
from diffuscope.nets import UNet, UNetConfig, check_config
from diffuscope.precond import PARAMETRIZATIONS, Denoiser, make_denoiser
from diffuscope.schedules import ScheduleConfig, make_schedule


@dataclass(frozen=True)
class ModelConfig:
    parametrization: str = "edm"  # eps | x0 | v | edm (Karras et al. 2022, Table 1)
    sigma_data: float = 0.5  # EDM's data standard deviation (edm only)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # noise levels: training density and grids
    unet: UNetConfig = field(default_factory=UNetConfig)  # the network; size, channels, classes come from the data
    class_names: tuple[str, ...] = ()  # prompt vocabulary: class i is prompted by class_names[i] (filled from data)
    conditioning: str = "class"  # none | class | text (conditioning.py)
    text_encoder: str = ""  # the registered text encoder of a text model (conditioning.TEXT_ENCODERS)
    # A latent model (Rombach et al. 2022): the autoencoder run it was trained in ("" = pixel space). Its weights
    # travel in every checkpoint (codec.CODEC_FILES); this records where they came from.
    autoencoder: str = ""


def check_model_config(config: ModelConfig) -> None:
    if config.parametrization not in PARAMETRIZATIONS:
        raise choices_error("parametrization", config.parametrization, PARAMETRIZATIONS)
    if config.conditioning not in CONDITIONINGS:
        raise choices_error("conditioning", config.conditioning, CONDITIONINGS)
    check_config(config.unet)
    u = config.unet
    if config.conditioning == "class" and (not config.class_names or u.num_classes != len(config.class_names)):
        raise UsageError(f"a class model needs class_names, one per class of its U-Net (num_classes = "
                         f"{u.num_classes}, {len(config.class_names)} names)")
    if config.conditioning == "none" and (u.num_classes or u.text_dim):
        raise UsageError("an unconditional model's U-Net must have num_classes = 0 and text_dim = 0")
    if config.conditioning == "text" and (not u.text_dim or not config.text_encoder):
        raise UsageError("a text model needs unet.text_dim > 0 and a text_encoder name")
    make_schedule(config.schedule)


def fit_to_data(config: ModelConfig, *, image_size: int, channels: int, class_names: tuple[str, ...]) -> ModelConfig:
    """The model config with the data-dependent fields (size, channels, classes) taken from a data set. An
    unconditional model keeps no classes; a text model keeps the class names as its training prompts' vocabulary."""
    num_classes = len(class_names) if config.conditioning == "class" else 0
    unet = replace(config.unet, image_size=image_size, in_channels=channels, num_classes=num_classes)
    return replace(config, unet=unet, class_names=tuple(class_names) if config.conditioning != "none" else ())


def build_denoiser(config: ModelConfig) -> Denoiser:
    """The network wrapped in its preconditioning: D(x, sigma, cond) -> x0_hat."""
    check_model_config(config)
    schedule = make_schedule(config.schedule)
    return make_denoiser(config.parametrization, UNet(config.unet), schedule, sigma_data=config.sigma_data)


def build_conditioner(config: ModelConfig) -> Conditioner:
    """The conditioner a model config names (prompt -> condition)."""
    if config.conditioning == "class":
        return ClassConditioner(config.class_names)
    return make_conditioner({"kind": config.conditioning, "encoder": config.text_encoder})


class Codec(Protocol):
    """A latent model's frozen autoencoder (Rombach et al. 2022): pixels in [-1, 1] <-> scaled latents."""

    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


@dataclass
class DiffusionModel:
    """What generation, the sweep, the strips, phases and the page ask of a model, whatever its kind
    (ARCHITECTURE.md, "A model, whatever its kind"). Pictures and metrics always see decoded images."""

    denoiser: Any  # D(x, sigma, cond) -> x0_hat in the model's own space (pixels or latents); has .schedule
    conditioner: Conditioner
    sample_shape: tuple[int, int, int]  # (C, H, W) of what the sampler integrates
    name: str = "model"
    path: Path | None = None
    step: int = 0
    config: Any = None  # ModelConfig for our own models
    run_config: dict[str, Any] = field(default_factory=dict)
    codec: Codec | None = None  # latent models only

    @property
    def schedule(self):
        return self.denoiser.schedule

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.codec.image_shape) if self.codec is not None else tuple(self.sample_shape)

    @property
    def is_latent(self) -> bool:
        return self.codec is not None

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
        if self.conditioner.kind != "text":
            return tuple(self.class_names)
        if not self.data_name:
            return ()
        from diffuscope.data import load_dataset
        from diffuscope.errors import UsageError

        try:
            return tuple(load_dataset(self.data_name, split="train").class_names)
        except UsageError:  # the data set is not on this machine
            return ()

    def evaluator(self, device="cpu", real: str | None = None):
        """The evaluation path for this model: real images, features/classifier and floor (evaluation.py);
        ``real``: a data set to judge a model without an evaluator of its own against."""
        from diffuscope.evaluation import Evaluator

        return Evaluator.for_model(self, device=device, real=real)
