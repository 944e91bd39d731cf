"""Our own models, built from one frozen config: a network + a noise schedule + a parametrisation (+ a conditioner,
+ a codec for latent models). ``build_denoiser(config)`` gives the denoiser D(x, sigma, cond) that every sampler,
metric and picture speaks to (docs/architecture.md: one contract). The config is what a checkpoint stores as JSON
beside its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from diffuscope.checks.errors import UsageError, choices_error
from diffuscope.checks.limits import MAX_NUM_CLASSES, check_schedule
from diffuscope.core.conditioning import CONDITIONINGS, ClassConditioner, Conditioner, make_conditioner
from diffuscope.core.precond import PARAMETRIZATIONS, Denoiser, make_denoiser
from diffuscope.core.schedules import ScheduleConfig, make_schedule
from diffuscope.nets import UNet, UNetConfig, check_config
from diffuscope.nets.bounds import check_network


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


def check_model(model_config, *, where: str = "model") -> int:
    """Bound a model config (network sizes, parameter count, schedule length) before it is built."""
    check_schedule(model_config.schedule, where=where)
    if len(model_config.class_names) > MAX_NUM_CLASSES:
        raise UsageError(f"{where}.class_names has {len(model_config.class_names)} names, more than "
                         f"{MAX_NUM_CLASSES}")
    return check_network(model_config.unet, where=where)
