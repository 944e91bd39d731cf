"""The forward process as a picture: x_t of one clean image at chosen t, by the closed form and by the chain.

    fwd = forward_process(x0, schedule, [0, 250, 500, 750, 1000], seed=0)     # closed form and chain, same seed
    save_forward(fwd, "out/")                                                  # out/forward.png, out/forward.json

t counts forward steps 0..T (0 = the clean image, ``VPSchedule.alpha_bar_after``). The closed form draws one
noise image from a generator seeded ``seed`` and uses it at every t; the chain runs the T steps with its own
generator seeded ``seed``, so its noise is the sum of t small draws: the rows agree in distribution, not pixel for
pixel.

A continuous (EDM) model has no T, only sigma: ``forward_process_sigma(x0, sigmas)`` adds noise of standard
deviation sigma, x = x_0 + sigma eps (Karras et al. 2022, Eq. 1 with s(t) = 1), and its chain adds the variance
increments sigma_k^2 - sigma_(k-1)^2 one frame at a time. Its states are stored in VP scale, x / sqrt(1 + sigma^2)
(the same picture as alpha_bar = 1 / (1 + sigma^2)), so both processes show on the same grey range.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.schedules import VPSchedule, forward_chain, q_sample
from diffuscope.viz.strips import labelled_strip, save_png

T_EXAMPLE = "0,250,500,750,1000"


def parse_t_list(text: str, num_timesteps: int) -> list[int]:
    """'0,250,500' -> [0, 250, 500], each in 0..T; empty, malformed or out-of-range lists raise UsageError."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UsageError(f"the t list is empty: give forward steps like {T_EXAMPLE}")
    try:
        ts = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"malformed t list {quote(text)}: expected comma-separated integers like "
                         f"{T_EXAMPLE}") from None
    for t in ts:
        if not 0 <= t <= num_timesteps:
            raise UsageError(f"t={t} is outside 0..{num_timesteps} (0 = clean image, {num_timesteps} = the last "
                             "forward step)")
    return ts


def pick_image(data: str = "mnist", index: int | None = None, image: str | Path | None = None
               ) -> tuple[Tensor, str]:
    """The clean image x_0 [C, H, W]: image ``index`` of a data set (split "all"), or a file that matches the data
    set's size and channels. Returns it with a short description."""
    from diffuscope.data import load_dataset
    from diffuscope.io.imagefile import load_image_file

    ds = load_dataset(data, split="all")
    if image is not None:
        if index is not None:
            raise UsageError("give --index or --image, not both")
        return load_image_file(image, size=ds.image_size, channels=ds.channels), str(image)
    index = 0 if index is None else index
    if not 0 <= index < len(ds):
        raise UsageError(f"--index {index} is outside 0..{len(ds) - 1} ({ds.name} has {len(ds)} images)")
    return ds.images[index], f"{ds.name} #{index} (class {ds.class_names[int(ds.labels[index])]})"


@dataclass(frozen=True)
class ForwardResult:
    t: list[int]  # forward steps (a continuous process: the frame index)
    sqrt_alpha_bar: list[float]
    snr_db: list[float]  # 10 log10(alpha_bar / (1 - alpha_bar)) = -20 log10(sigma); inf at t = 0
    closed_form: Tensor  # [len(t), C, H, W] VP-space states
    chain: Tensor  # [len(t), C, H, W]
    schedule: str
    num_timesteps: int  # 0 for a continuous process
    seed: int
    source: str = ""
    sigma: list[float] | None = None  # sqrt((1 - alpha_bar) / alpha_bar) of each frame

    @property
    def continuous(self) -> bool:
        return self.num_timesteps == 0


def snr_db(alpha_bar: float) -> float:
    return math.inf if alpha_bar >= 1 else 10 * math.log10(alpha_bar / (1 - alpha_bar))


def forward_process(x0: Tensor, schedule: VPSchedule, t: Sequence[int], *, seed: int = 0, source: str = ""
                    ) -> ForwardResult:
    """x_t for each t by the closed form q(x_t | x_0) and by the step-by-step chain, both seeded ``seed``."""
    if not isinstance(schedule, VPSchedule):
        raise UsageError(f"the forward process needs a discrete VP schedule (linear, cosine, scaled_linear), "
                         f"got {schedule.name}")
    t = list(t)
    if not t:
        raise UsageError(f"the t list is empty: give forward steps like {T_EXAMPLE}")
    abar = [schedule.alpha_bar_after(k) for k in t]  # validates 0..T
    x0 = x0.to(torch.float64)[None]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    closed = torch.cat([q_sample(x0, a, noise) for a in abar]).float()
    states = forward_chain(x0, schedule, t, generator=torch.Generator().manual_seed(seed))
    chain = torch.cat([states[k] for k in t]).float()
    sigma = [math.inf if a <= 0 else math.sqrt((1 - a) / a) for a in abar]
    return ForwardResult(t, [a**0.5 for a in abar], [snr_db(a) for a in abar], closed, chain, schedule.name,
                         schedule.num_timesteps, seed, source, sigma)


def sigma_frames(sigma_min: float, sigma_max: float, frames: int = 100) -> list[float]:
    """0, then ``frames`` sigmas log-spaced from sigma_min to sigma_max: a slider's stops for a continuous model."""
    if not 0 < sigma_min < sigma_max or frames < 2:
        raise ValueError(f"need 0 < sigma_min < sigma_max and frames >= 2, got {sigma_min}, {sigma_max}, {frames}")
    ratio = math.log(sigma_max / sigma_min) / (frames - 1)
    return [0.0] + [sigma_min * math.exp(ratio * i) for i in range(frames)]


def forward_process_sigma(x0: Tensor, sigmas: Sequence[float], *, seed: int = 0, source: str = "",
                          schedule: str = "edm") -> ForwardResult:
    """The continuous forward process at ascending ``sigmas`` (module notes): closed form x_0 + sigma eps with one
    noise draw, and the chain of independent variance increments, both seeded ``seed`` and in VP scale."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise UsageError("the sigma list is empty")
    if any(not math.isfinite(s) or s < 0 for s in sigmas) or any(b < a for a, b in itertools.pairwise(sigmas)):
        raise UsageError(f"sigmas must be finite, non-negative and ascending, got {sigmas[:8]}")
    x0 = x0.to(torch.float64)[None]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    closed, chain, x, previous = [], [], x0, 0.0
    for s in sigmas:
        step = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x = x + math.sqrt(s**2 - previous**2) * step  # q(x_k | x_(k-1)) = N(x_(k-1), (s_k^2 - s_(k-1)^2) I)
        previous = s
        scale = 1 / math.sqrt(1 + s**2)
        closed.append((x0 + s * noise) * scale)
        chain.append(x * scale)
    abar = [1 / (1 + s**2) for s in sigmas]
    return ForwardResult(list(range(len(sigmas))), [a**0.5 for a in abar], [snr_db(a) for a in abar],
                         torch.cat(closed).float(), torch.cat(chain).float(), schedule, 0, seed, source, sigmas)


def forward_captions(result: ForwardResult) -> list[list[str]]:
    def db(v: float) -> str:
        return "SNR inf dB" if math.isinf(v) else f"SNR {v:+.1f} dB"

    def root(v: float) -> str:
        return f"{v:.3f}" if v >= 0.001 else f"{v:.0e}"

    if result.continuous:
        return [[f"sigma = {g:.3g}", f"sqrt(abar) {root(s)}", db(d)]
                for g, s, d in zip(result.sigma, result.sqrt_alpha_bar, result.snr_db)]
    return [[f"t = {t}", f"sqrt(abar) {root(s)}", db(d)]
            for t, s, d in zip(result.t, result.sqrt_alpha_bar, result.snr_db)]


def save_forward(result: ForwardResult, out: str | Path, *, scale: int | None = None) -> list[Path]:
    """One PNG, two rows (closed form over chain), captioned with t, sqrt(alpha_bar) and SNR; plus the numbers as
    JSON. Returns the paths written."""
    out = Path(out)
    if result.continuous:
        title = f"forward process: {result.schedule} (continuous), seed {result.seed}; shown / sqrt(1 + sigma^2)"
        rows = ["closed form: x = x_0 + sigma eps",
                "step by step: x_k = x_(k-1) + sqrt(sigma_k^2 - sigma_(k-1)^2) eps_k"]
    else:
        title = f"forward process: {result.schedule} schedule, T = {result.num_timesteps}, seed {result.seed}"
        rows = ["closed form: x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps",
                "step by step: x_k = sqrt(1 - beta_k) x_(k-1) + sqrt(beta_k) eps_k"]
    picture = labelled_strip([result.closed_form, result.chain], forward_captions(result), title=title,
                             row_titles=rows, scale=scale)
    png = save_png(picture, out / "forward.png")
    meta = out / "forward.json"
    from diffuscope.io.outputs import write_text_atomic  # whole or nothing; a full disk: one line

    write_text_atomic(meta, json.dumps({
        "source": result.source, "schedule": result.schedule, "num_timesteps": result.num_timesteps,
        "seed": result.seed, "t": result.t, "sqrt_alpha_bar": result.sqrt_alpha_bar,
        "snr_db": [None if math.isinf(v) else v for v in result.snr_db],
        "sigma": None if result.sigma is None else [None if math.isinf(v) else v for v in result.sigma],
        "rows": ["closed form q(x_t | x_0)", "chain q(x_t | x_(t-1)), same seed"],
    }, indent=2))
    return [png, meta]


def latent_rows(latents: Tensor, decode, image_size: int) -> list[Tensor]:
    """A latent model's forward states [N, C, h, w] as picture rows of pixel size: the decoder's reading of each
    noisy latent, then each latent channel as a grey map (about unit std latents: +-3 std spans the grey range),
    enlarged to the image size by nearest neighbour."""
    with torch.no_grad():
        decoded = decode(latents).float().cpu().clamp(-1, 1)
    rows = [decoded]
    factor = image_size // latents.shape[-1]
    for c in range(latents.shape[1]):
        channel = (latents[:, c:c + 1].float().cpu() / 3).clamp(-1, 1)
        channel = torch.nn.functional.interpolate(channel, scale_factor=factor, mode="nearest")
        rows.append(channel.expand(-1, decoded.shape[1], -1, -1))
    return rows


def save_forward_latent(result: ForwardResult, decode, image_size: int, out: str | Path, *,
                        scale: int | None = None) -> Path:
    """forward_latent.png: the closed-form forward process run on the encoded image (what a latent model is
    trained on): the decoded noisy latent, then its channels, per t."""
    rows = latent_rows(result.closed_form, decode, image_size)
    titles = ["decoded z_t (the autoencoder's reading of the noisy latent)"] + [
        f"latent channel {c + 1} of z_t" for c in range(len(rows) - 1)]
    title = f"forward process in latent space: {result.schedule} schedule, T = {result.num_timesteps}, " \
            f"seed {result.seed}"
    picture = labelled_strip(rows, forward_captions(result), title=title, row_titles=titles, scale=scale)
    return save_png(picture, Path(out) / "forward_latent.png")
