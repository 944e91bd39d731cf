"""A diffusion model = a network + a noise schedule + a parametrisation, built from one frozen config.

``build_denoiser(config)`` gives the denoiser D(x, sigma, cond) that every sampler, metric and picture speaks to
(ARCHITECTURE.md: one contract). The config is what a checkpoint stores as JSON beside its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from diffuscope.errors import choices_error
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


def check_model_config(config: ModelConfig) -> None:
    if config.parametrization not in PARAMETRIZATIONS:
        raise choices_error("parametrization", config.parametrization, PARAMETRIZATIONS)
    check_config(config.unet)
    make_schedule(config.schedule)


def fit_to_data(config: ModelConfig, *, image_size: int, channels: int, class_names: tuple[str, ...]) -> ModelConfig:
    """The model config with the data-dependent fields (size, channels, classes) taken from a data set."""
    unet = replace(config.unet, image_size=image_size, in_channels=channels, num_classes=len(class_names))
    return replace(config, unet=unet, class_names=tuple(class_names))


def build_denoiser(config: ModelConfig) -> Denoiser:
    """The network wrapped in its preconditioning: D(x, sigma, class_labels) -> x0_hat."""
    check_model_config(config)
    schedule = make_schedule(config.schedule)
    return make_denoiser(config.parametrization, UNet(config.unet), schedule, sigma_data=config.sigma_data)
