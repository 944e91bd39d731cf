"""A folder written by diffusers' ``DiffusionPipeline.save_pretrained`` (``model_index.json``) as a ``DiffusionModel``.

Two layouts:

    pixel   a ``UNet2DModel`` (DDPMPipeline, DDIMPipeline): unconditional, or class-conditional with
            ``num_class_embeds`` classes named "0".."K-1" (no null class: guidance is refused)
    text    a ``UNet2DConditionModel`` + ``AutoencoderKL`` + a transformers text encoder and tokenizer (the Stable
            Diffusion 1.x/2.x layout): prompts -> CLIP token embeddings, the empty prompt as the null condition,
            latents decoded by the VAE with its ``scaling_factor``

The folder's scheduler config decides the noise schedule (betas, ``rescale_betas_zero_snr``), the parametrisation
(``prediction_type``) and the default grid (``timestep_spacing`` + ``steps_offset``, or Karras sigmas with
``use_karras_sigmas``), so "25 steps" visits the noise levels diffusers' scheduler of that folder visits; the
scheduler's own stepping rule is not used: every sampler of ours runs on the denoiser.

Loading is offline and refuses pickles: only ``*.safetensors`` weights are read (a component folder with only
``.bin``/``.ckpt`` weights is refused, naming the file), always with ``local_files_only=True``.
"""

from __future__ import annotations

import importlib
import json
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from diffuscope.adapters.diffusers import PREDICTION_TYPES, schedule_from_diffusers
from diffuscope.checks.errors import UsageError, choices_error, quote
from diffuscope.checks.limits import MAX_TIMESTEPS, check_range
from diffuscope.core.conditioning import ClassConditioner, Conditioner, NoConditioner
from diffuscope.core.model import DiffusionModel
from diffuscope.core.schedules import DISCRETE_GRIDS, VPSchedule, check_sigmas

PIPELINE_INDEX = "model_index.json"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PIXEL_UNETS = ("UNet2DModel",)
TEXT_UNETS = ("UNet2DConditionModel",)
VAES = ("AutoencoderKL",)
EXTRA = "pip install 'diffuscope[diffusers]'"


def is_pipeline(path: str | Path) -> bool:
    """Whether ``path`` is a diffusers pipeline folder (has ``model_index.json``)."""
    return (Path(path) / PIPELINE_INDEX).is_file()


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """"fp16" | "bf16" | "fp32" (or a torch dtype among them) -> torch dtype; anything else a UsageError."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if name not in DTYPES:
        raise choices_error("dtype", name, DTYPES)
    return DTYPES[name]


def _require(module: str):
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        raise UsageError(f"loading a diffusers pipeline needs the {module} package: {EXTRA}") from None
    # local files load in milliseconds: the libraries' own "Loading weights" bars would only interleave with our
    # progress and one-line errors on stderr
    quiet = getattr(getattr(getattr(loaded, "utils", None), "logging", None), "disable_progress_bar", None)
    if quiet is not None:
        quiet()
    return loaded


@contextmanager
def quiet_libraries(*names: str):
    """transformers' and diffusers' own log lines (unused weights, config notes, ~25 lines before an error) held
    back to errors only while we load: what the user sees is our one-line message (their logging.set_verbosity_error,
    restored after). ``names``: libraries to import first (their import sets their own level)."""
    for name in names:
        _require(name)
    restore = []
    for name in ("transformers", "diffusers"):
        logging = getattr(getattr(sys.modules.get(name), "utils", None), "logging", None)
        if logging is not None and hasattr(logging, "set_verbosity_error"):
            restore.append((logging, logging.get_verbosity()))
            logging.set_verbosity_error()
    try:
        yield
    finally:
        for logging, level in restore:
            logging.set_verbosity(level)


def read_index(path: Path) -> dict:
    index = path / PIPELINE_INDEX
    if not path.is_dir() or not index.is_file():
        raise UsageError(f"{path} is not a diffusers pipeline folder (no {PIPELINE_INDEX})")
    try:
        data = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{index} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{index} is not a pipeline index (a JSON object)")
    return data


def component_class(index: dict, path: Path, name: str) -> tuple[str, str]:
    """(library, class name) of component ``name``; a missing or empty one is a UsageError."""
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
        raise UsageError(f"pipeline {path} has no {name} component (model_index.json; a {index.get('_class_name')})")
    if not (path / name).is_dir():
        raise UsageError(f"pipeline {path} lacks its {name} folder")
    return entry[0], entry[1]


def check_safetensors(folder: Path) -> str | None:
    """The weights variant to load ("fp16" for ``*.fp16.safetensors`` only, else None); a folder with pickle
    weights only, or no weights, is refused in one line."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if not safetensors:
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UsageError(f"{pickles[0]} is a pickle weights file: refusing to unpickle it (only .safetensors "
                             "weights are loaded; re-save with save_pretrained(..., safe_serialization=True))")
        raise UsageError(f"{folder} holds no .safetensors weights")
    plain = [p for p in safetensors if p.name.count(".") == 1 or ".safetensors.index" in p.name
             or "-of-" in p.name]
    if plain:
        return None
    return safetensors[0].name.split(".")[-2]  # name.VARIANT.safetensors


def _load(cls, folder: Path, what: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``cls.from_pretrained`` offline, safetensors only, in eval mode without gradients. diffusers models load in
    ``dtype`` (its ``torch_dtype``); transformers models in float32 and are cast after (the keyword differs between
    transformers 4 and 5)."""
    variant = check_safetensors(folder)
    kwargs = {"local_files_only": True, "use_safetensors": True}
    if variant is not None:
        kwargs["variant"] = variant
    diffusers_model = cls.__module__.startswith("diffusers")
    if diffusers_model:
        kwargs["torch_dtype"] = dtype
    try:
        module = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UsageError(f"cannot load the {what} from {folder}: {str(e).strip().splitlines()[0]}") from None
    module = module.to(device) if diffusers_model else module.to(device, dtype)
    return module.eval().requires_grad_(False)


def _class(library: str, name: str, valid: tuple[str, ...] | None, what: str):
    if library not in ("diffusers", "transformers") or (valid is not None and name not in valid):
        raise choices_error(f"{what} class", f"{library}.{name}", valid or ("diffusers.*", "transformers.*"))
    module = _require(library)
    cls = getattr(module, name, None)
    if cls is None:
        raise UsageError(f"{library} {module.__version__} has no {what} class {name}")
    return cls


def _shape(channels: int, size) -> tuple[int, int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(channels), int(h), int(w)


def check_scheduler_file(folder: Path) -> None:
    """The scheduler config's sizes, read before diffusers builds its tables: ``num_train_timesteps`` (and
    ``trained_betas``) at most ``MAX_TIMESTEPS`` (1e9 would allocate 4 GB of betas, then fail)."""
    file = folder / "scheduler_config.json"
    try:
        data = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError) as e:
        raise UsageError(f"{file} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{file} is not a scheduler config (a JSON object)")
    t = data.get("num_train_timesteps", 1000)
    if isinstance(t, bool) or not isinstance(t, int):
        raise UsageError(f"{file}: num_train_timesteps must be an integer, got {quote(t)}")
    check_range(f"{file.parent.parent.name} scheduler num_train_timesteps", t, 2, MAX_TIMESTEPS)
    betas = data.get("trained_betas")
    if isinstance(betas, list):
        check_range(f"{file.parent.parent.name} scheduler trained_betas length", len(betas), 2, MAX_TIMESTEPS)


def load_scheduler_config(path: Path, index: dict) -> dict:
    """The folder's scheduler config with the scheduler class's defaults filled in (e.g. ``timestep_spacing`` is
    "leading" for DDPM/DDIM/PNDM and "linspace" for Euler/DPM-Solver when the file does not say)."""
    diffusers = _require("diffusers")
    library, name = component_class(index, path, "scheduler")
    cls = _class(library, name, None, "scheduler")
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise UsageError(f"pipeline {path}: {name} is not a diffusers scheduler")
    check_scheduler_file(path / "scheduler")
    try:
        scheduler = cls.from_pretrained(str(path / "scheduler"), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"cannot load the scheduler config of {path}: {str(e).strip().splitlines()[0]}") from None
    config = dict(scheduler.config)
    if "beta_schedule" not in config and config.get("trained_betas") is None:
        raise UsageError(f"pipeline {path}: scheduler {name} has no betas (only DDPM-family VP schedules are "
                         "supported, not flow matching)")
    return config


# Schedulers whose Karras grid rounds the timesteps handed to the UNet while stepping with the exact Karras sigmas
# (diffusers 0.42; DPMSolverMultistep not for squaredcos_cap_v2); Euler and Heun keep fractional timesteps.
ROUNDING_SCHEDULERS = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
                       "DEISMultistepScheduler")


def rounds_timesteps(config: dict) -> bool:
    """Whether the folder's scheduler feeds its UNet rounded timesteps on its default grid."""
    name = config.get("_class_name")
    if name not in ROUNDING_SCHEDULERS or not (config.get("use_karras_sigmas") or config.get("use_lu_lambdas")):
        return False
    return not (name == "DPMSolverMultistepScheduler" and config.get("beta_schedule") == "squaredcos_cap_v2")


# Config switches that make a scheduler's grid a sigma grid (Karras et al. 2022, Eq. 5, and its relatives): the
# timesteps are then t(sigma) interpolated in log sigma (diffusers' ``_sigma_to_t``).
SIGMA_GRIDS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")


def _distinct(values: torch.Tensor) -> torch.Tensor:
    """``values`` without consecutive repeats (Heun's interleaved [t0, t1, t1, t2, ...], PNDM's repeated step)."""
    values = values.reshape(-1)
    keep = torch.ones(len(values), dtype=torch.bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def scheduler_grid(config: dict, schedule: VPSchedule):
    """steps -> (sigmas ending at 0, timesteps): the grid the folder's own scheduler visits, by its own
    ``set_timesteps`` (each diffusers scheduler has its own rule: Euler's ``linspace`` is fractional timesteps
    linspace(0, T-1, N) with sigma interpolated linearly, DPM-Solver's is round(linspace(0, T-1, N + 1))[:-1], ...).
    Sigma grids (Karras) take the scheduler's sigmas; timestep grids take ``schedule.sigma(t)``, with the linear
    interpolation of ``schedule`` where t is fractional. The last sigma is 0 (diffusers' ``final_sigmas_type``
    "zero"; DDIM with ``set_alpha_to_one``)."""
    diffusers = _require("diffusers")
    cls = getattr(diffusers, str(config.get("_class_name")), None)
    sigma_grid = any(config.get(k) for k in SIGMA_GRIDS)

    def grid(steps: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if steps > schedule.num_timesteps:
            raise UsageError(f"steps must be in 1..{schedule.num_timesteps} for this discrete model, got {steps}")
        scheduler = cls.from_config(config)
        try:
            with quiet_libraries():
                scheduler.set_timesteps(steps)
        except (ValueError, IndexError) as e:
            raise UsageError(f"{cls.__name__} cannot make {steps} steps: {str(e).strip().splitlines()[0]}") from None
        ts = _distinct(torch.as_tensor(scheduler.timesteps).detach().cpu().to(torch.float64))
        if len(ts) != steps:  # not one timestep per step (PNDM's Runge-Kutta warm-up): make_grid's spacing rule
            return None
        if bool((ts == ts.round()).all()):
            ts = ts.long()  # whole timesteps: table lookups, reported as integers
        own = getattr(scheduler, "sigmas", None)
        if sigma_grid and own is not None:
            sigmas = _distinct(torch.as_tensor(own).detach().cpu().to(torch.float64))[: len(ts)]
        else:
            sigmas = schedule.sigma(ts)
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
        try:
            check_sigmas(sigmas)
        except ValueError as e:
            raise UsageError(f"{cls.__name__}'s {steps}-step grid is unusable here: {e}") from None
        return sigmas, ts

    return grid if cls is not None else None


def denoiser_from_pipeline(unet: nn.Module, config: dict, *, net_dtype: torch.dtype = torch.float32):
    """The denoiser of a pipeline's UNet under its scheduler config, with the config's default grid (spacing,
    ``steps_offset``; Karras sigmas with ``use_karras_sigmas``) attached to its schedule and computed by the folder's
    scheduler itself (``scheduler_grid``). The UNet sees the timesteps that scheduler feeds it: fractional ones
    inverted by linear sigma interpolation (Euler-family ``linspace``), log-sigma interpolation on sigma grids, and
    rounded where the scheduler rounds them (``rounds_timesteps``)."""
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise choices_error("diffusers prediction_type", prediction_type, PREDICTION_TYPES)
    spacing = "karras" if config.get("use_karras_sigmas") else config.get("timestep_spacing", "leading")
    if spacing not in (*DISCRETE_GRIDS, "karras"):
        raise choices_error("timestep_spacing", spacing, DISCRETE_GRIDS)
    schedule = replace(schedule_from_diffusers(config), default_spacing=spacing,
                       steps_offset=int(config.get("steps_offset", 0)),
                       interpolation="log" if any(config.get(k) for k in SIGMA_GRIDS) else "linear")
    schedule = replace(schedule, native_grid=scheduler_grid(config, schedule))
    denoiser = PREDICTION_TYPES[prediction_type](unet, schedule)
    if net_dtype != torch.float32:
        denoiser.net_dtype = net_dtype
    denoiser.round_timesteps = rounds_timesteps(config)
    return denoiser.eval().requires_grad_(False)


class _IndexConditioner(ClassConditioner):
    """Class indices "0".."K-1" as prompts for a diffusers class-conditional UNet2DModel, which has no null class
    (its embedding table has exactly K rows): no classifier-free guidance."""

    @property
    def has_null(self) -> bool:
        return False

    def null(self, n: int):
        raise UsageError("this diffusers class-conditional UNet has no null class: guidance must be 1")


def load_pipeline_model(path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = torch.float32) -> DiffusionModel:
    """A diffusers pipeline folder as a ``DiffusionModel`` (UNet, VAE and text encoder in ``dtype`` on ``device``,
    eval mode, no gradients). Errors are one-line UsageErrors."""
    path = Path(path)
    dtype = parse_dtype(dtype)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (valid: auto, cpu, cuda)")
    index = read_index(path)
    unet_entry = index.get("unet")
    text = isinstance(unet_entry, list) and unet_entry[-1:] == [TEXT_UNETS[0]]
    with quiet_libraries("diffusers", *(("transformers",) if text else ())):
        return _load_pipeline(path, index, device, dtype)


def _load_pipeline(path: Path, index: dict, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    library, unet_name = component_class(index, path, "unet")
    unet_cls = _class(library, unet_name, (*PIXEL_UNETS, *TEXT_UNETS), "unet")
    config = load_scheduler_config(path, index)
    if unet_name in TEXT_UNETS:
        return _load_text_pipeline(path, index, unet_cls, config, device, dtype)
    unet = _load(unet_cls, path / "unet", "unet", device, dtype)
    conditioner: Conditioner = NoConditioner()
    if unet.config.num_class_embeds:
        if unet.config.class_embed_type not in (None,):
            raise UsageError(f"pipeline {path}: class_embed_type {quote(unet.config.class_embed_type)} is not "
                             "supported (valid: None, an embedding table of num_class_embeds)")
        conditioner = _IndexConditioner([str(i) for i in range(unet.config.num_class_embeds)])
    return DiffusionModel(
        denoiser=denoiser_from_pipeline(unet, config, net_dtype=dtype),
        conditioner=conditioner,
        sample_shape=_shape(unet.config.in_channels, unet.config.sample_size),
        name=path.name, path=path, config=config,
        run_config={"pipeline": index.get("_class_name"), "dtype": str(dtype).removeprefix("torch.")},
    )


def check_vocabulary(path: Path, tokenizer, text_encoder: nn.Module) -> None:
    """Every id the tokenizer can produce has a row in the text encoder's token embedding (else the first prompt
    with such a token is an IndexError deep in the encoder): checked once, at load time."""
    embeddings = text_encoder.get_input_embeddings() if hasattr(text_encoder, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    try:
        ids = len(tokenizer)  # the vocabulary with added tokens
    except TypeError:
        ids = getattr(tokenizer, "vocab_size", None)
    if rows is not None and ids is not None and int(ids) > int(rows):
        raise UsageError(f"pipeline {path}: the tokenizer has {ids} token ids but the text encoder embeds only "
                         f"{rows} (tokenizer and text_encoder folders do not belong together)")


def _load_text_pipeline(path: Path, index: dict, unet_cls, config: dict, device: torch.device,
                        dtype: torch.dtype) -> DiffusionModel:
    from diffuscope.adapters.text_encoder import text_conditioner
    from diffuscope.adapters.vae import VAECodec

    vae_cls = _class(*component_class(index, path, "vae"), VAES, "vae")
    te_library, te_name = component_class(index, path, "text_encoder")
    tok_library, tok_name = component_class(index, path, "tokenizer")
    _require("transformers")
    te_cls = _class(te_library, te_name, None, "text_encoder")
    tok_cls = _class(tok_library, tok_name, None, "tokenizer")
    unet = _load(unet_cls, path / "unet", "unet", device, dtype)
    # A VAE that asks for it (``force_upcast``, AutoencoderKL's default) decodes in float32 under fp16, as diffusers'
    # SD-XL pipeline does: SD VAEs can overflow in fp16.
    try:
        upcast = dtype == torch.float16 and vae_cls.load_config(str(path / "vae")).get("force_upcast", True)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the vae config of {path}: {str(e).strip().splitlines()[0]}") from None
    vae_dtype = torch.float32 if upcast else dtype
    vae = _load(vae_cls, path / "vae", "vae", device, vae_dtype)
    text_encoder = _load(te_cls, path / "text_encoder", "text encoder", device, dtype)
    try:
        tokenizer = tok_cls.from_pretrained(str(path / "tokenizer"), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"cannot load the tokenizer from {path / 'tokenizer'}: {str(e).strip().splitlines()[0]}") \
            from None
    check_vocabulary(path, tokenizer, text_encoder)
    sample_shape = _shape(unet.config.in_channels, unet.config.sample_size)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    image_shape = (int(vae.config.out_channels), sample_shape[1] * factor, sample_shape[2] * factor)
    codec = VAECodec(vae, image_shape, sample_shape)
    return DiffusionModel(
        denoiser=denoiser_from_pipeline(unet, config, net_dtype=dtype),
        conditioner=text_conditioner(tokenizer, text_encoder, te_name),
        sample_shape=sample_shape,
        name=path.name, path=path, config=config, codec=codec,
        run_config={"pipeline": index.get("_class_name"), "dtype": str(dtype).removeprefix("torch."),
                    "vae_dtype": str(vae_dtype).removeprefix("torch.")},
    )
