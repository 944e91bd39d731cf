"""The forward and reverse process as pictures: the numbers come back as data, the pictures go into a folder.

    fwd = forward_process(x0, schedule, [0, 250, 500, 750, 1000], seed=0)     # closed form and chain, same seed
    save_forward(fwd, "out/")                                                  # out/forward.png, out/forward.json
    rev = reverse_process(model.denoiser, schedule, label=7, shape=(1, 28, 28), steps=50, seed=0)
    save_reverse(rev, "out/", show=8)                   # out/reverse.png (x_t over denoised), out/reverse.gif

Forward: t counts forward steps 0..T (0 = the clean image, ``VPSchedule.alpha_bar_after``). The closed form draws
one noise image from a generator seeded ``seed`` and uses it at every t; the chain runs the T steps with its own
generator seeded ``seed``, so its noise is the sum of t small draws: the rows agree in distribution, not pixel for
pixel. Reverse: ``x_t`` is shown in VP scale, x / sqrt(1 + sigma^2), as the lessons' noisy images are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuscope.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.errors import UsageError
from diffuscope.phases import Trajectory
from diffuscope.schedules import Schedule, VPSchedule, forward_chain, q_sample, to_vp
from diffuscope.viz.strips import labelled_strip, panel_scale, save_gif, save_png, trajectory_frames

T_EXAMPLE = "0,250,500,750,1000"
GIF_PANEL = 112  # GIF panels are upscaled to at least this many pixels (28 -> 112)


# --- input ---------------------------------------------------------------------------------------------------------


def parse_t_list(text: str, num_timesteps: int) -> list[int]:
    """'0,250,500' -> [0, 250, 500], each in 0..T; empty, malformed or out-of-range lists raise UsageError."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UsageError(f"the t list is empty: give forward steps like {T_EXAMPLE}")
    try:
        ts = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"malformed t list {text!r}: expected comma-separated integers like {T_EXAMPLE}") from None
    for t in ts:
        if not 0 <= t <= num_timesteps:
            raise UsageError(f"t={t} is outside 0..{num_timesteps} (0 = clean image, {num_timesteps} = the last "
                             "forward step)")
    return ts


def _describe(channels: int, size: int) -> str:
    kind = "grayscale (mode L, 1 channel)" if channels == 1 else "RGB (mode RGB, 3 channels)"
    return f"{size}x{size} {kind}"


def load_image_file(path: str | Path, *, size: int, channels: int) -> Tensor:
    """A PNG/JPEG file -> [C, H, W] in [-1, 1]; it must already be ``size`` x ``size`` with ``channels`` channels
    (mode L for 1, RGB for 3): nothing is resized or converted silently."""
    from PIL import UnidentifiedImageError

    expected = _describe(channels, size)
    try:
        with Image.open(path) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            pixels = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
    except FileNotFoundError:
        raise UsageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from None
    got_channels = {"L": 1, "RGB": 3}.get(mode)
    if got_channels is None or (w, h) != (size, size) or got_channels != channels:
        got = f"{w}x{h} mode {mode}" + (f" ({got_channels} channel{'s' * (got_channels > 1)})" if got_channels else "")
        raise UsageError(f"image {path} is {got}; expected {expected} to match the data set")
    pixels = pixels.reshape(h, w, channels).permute(2, 0, 1)
    return pixels / 127.5 - 1


def pick_image(data: str = "mnist", index: int | None = None, image: str | Path | None = None
               ) -> tuple[Tensor, str]:
    """The clean image x_0 [C, H, W]: image ``index`` of a data set (split "all"), or a file that matches the data
    set's size and channels. Returns it with a short description."""
    from diffuscope.data import load_dataset

    ds = load_dataset(data, split="all")
    if image is not None:
        if index is not None:
            raise UsageError("give --index or --image, not both")
        return load_image_file(image, size=ds.image_size, channels=ds.channels), str(image)
    index = 0 if index is None else index
    if not 0 <= index < len(ds):
        raise UsageError(f"--index {index} is outside 0..{len(ds) - 1} ({ds.name} has {len(ds)} images)")
    return ds.images[index], f"{ds.name} #{index} (class {ds.class_names[int(ds.labels[index])]})"


# --- forward -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardResult:
    t: list[int]
    sqrt_alpha_bar: list[float]
    snr_db: list[float]  # 10 log10(alpha_bar / (1 - alpha_bar)); inf at t = 0
    closed_form: Tensor  # [len(t), C, H, W] VP-space states
    chain: Tensor  # [len(t), C, H, W]
    schedule: str
    num_timesteps: int
    seed: int
    source: str = ""


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
    return ForwardResult(t, [a**0.5 for a in abar], [snr_db(a) for a in abar], closed, chain, schedule.name,
                         schedule.num_timesteps, seed, source)


def forward_captions(result: ForwardResult) -> list[list[str]]:
    def db(v: float) -> str:
        return "SNR inf dB" if math.isinf(v) else f"SNR {v:+.1f} dB"

    def root(v: float) -> str:
        return f"{v:.3f}" if v >= 0.001 else f"{v:.0e}"

    return [[f"t = {t}", f"sqrt(abar) {root(s)}", db(d)]
            for t, s, d in zip(result.t, result.sqrt_alpha_bar, result.snr_db)]


def save_forward(result: ForwardResult, out: str | Path, *, scale: int | None = None) -> list[Path]:
    """One PNG, two rows (closed form over chain), captioned with t, sqrt(alpha_bar) and SNR; plus the numbers as
    JSON. Returns the paths written."""
    out = Path(out)
    title = f"forward process: {result.schedule} schedule, T = {result.num_timesteps}, seed {result.seed}"
    picture = labelled_strip([result.closed_form, result.chain], forward_captions(result), title=title,
                             row_titles=["closed form: x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps",
                                         "step by step: x_k = sqrt(1 - beta_k) x_(k-1) + sqrt(beta_k) eps_k"],
                             scale=scale)
    png = save_png(picture, out / "forward.png")
    meta = out / "forward.json"
    meta.write_text(json.dumps({
        "source": result.source, "schedule": result.schedule, "num_timesteps": result.num_timesteps,
        "seed": result.seed, "t": result.t, "sqrt_alpha_bar": result.sqrt_alpha_bar,
        "snr_db": [None if math.isinf(v) else v for v in result.snr_db],
        "rows": ["closed form q(x_t | x_0)", "chain q(x_t | x_(t-1)), same seed"],
    }, indent=2))
    return [png, meta]


# --- reverse -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReverseResult:
    trajectory: Trajectory  # batch of 1
    label: int
    prompt: str
    sampler: str
    steps: int
    seed: int
    guidance: float
    nfe: int
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi


def reverse_process(denoiser: Callable, schedule: Schedule, label: int, shape: tuple[int, int, int], *,
                    steps: int = 50, sampler: str = DEFAULT_SAMPLER, guidance: float = 1.0, seed: int = 0,
                    null_label: int | None = None, spacing: str | None = None, prompt: str = "",
                    device: str | torch.device = "cpu",
                    guidance_interval: tuple[float, float] | None = None, grid=None) -> ReverseResult:
    """Generate one image (exactly as ``generate`` does for this seed) and keep every step's state and
    prediction. ``grid`` (a SigmaGrid, e.g. a tuned one) overrides ``steps`` and ``spacing``."""
    from diffuscope.generate import generate

    xs, ds = [], []

    def record(info) -> None:
        xs.append(info.x.detach().float().cpu())
        ds.append(info.denoised.detach().float().cpu())

    gen = generate(denoiser, schedule, torch.tensor([label]), shape, sampler=sampler, steps=steps, spacing=spacing,
                   guidance=guidance, guidance_interval=guidance_interval, seed=seed, null_label=null_label,
                   device=device, callback=record, grid=grid)
    traj = Trajectory(gen.grid.sigmas.double().cpu(), torch.stack(xs), torch.stack(ds), gen.images, gen.sampler)
    return ReverseResult(traj, label, prompt, gen.sampler, gen.grid.steps, gen.seed, gen.guidance, gen.nfe,
                         gen.guidance_interval)


def show_indices(steps: int, show: int) -> list[int]:
    """``show`` step indices evenly spaced over 0..steps-1, first and last included."""
    if show < 2:
        raise UsageError(f"--show must be at least 2 (the first and the last step), got {show}")
    if show > steps:
        raise UsageError(f"--show {show} is larger than --steps {steps}")
    return [round(j * (steps - 1) / (show - 1)) for j in range(show)]


def save_reverse(result: ReverseResult, out: str | Path, *, show: int = 8, scale: int | None = None,
                 frame_ms: int = 120) -> list[Path]:
    """reverse.png: x_t (VP scale) over denoised at ``show`` steps, captioned with step i and sigma;
    reverse.gif: one frame per step plus the final image; reverse.json: the grid and parameters."""
    out = Path(out)
    traj = result.trajectory
    idx = show_indices(traj.steps, show)
    sig = traj.sigmas
    x_vp = torch.stack([to_vp(traj.x[i], sig[i : i + 1])[0] for i in range(traj.steps)])
    den = traj.denoised[:, 0]
    prompt = f"prompt {result.prompt!r}" if result.prompt else f"class {result.label}"
    title = (f"reverse process: {prompt}, {result.sampler}, {result.steps} steps, seed {result.seed}"
             + (f", guidance {result.guidance:g}" if result.guidance != 1 else "")
             + (" on ({:g}, {:g}]".format(*result.guidance_interval) if result.guidance_interval else ""))
    captions = [[f"step {i}", f"sigma {float(sig[i]):.3g}"] for i in idx]
    picture = labelled_strip([x_vp[idx], den[idx]], captions, title=title, scale=scale,
                             row_titles=["x_t, the noisy state (VP scale: x / sqrt(1 + sigma^2))",
                                         "denoised: the model's predicted clean image"])
    png = save_png(picture, out / "reverse.png")
    titles = [f"step {i}/{traj.steps}  sigma {float(sig[i]):.3g}" for i in range(traj.steps)]
    frames = trajectory_frames(torch.cat([x_vp, traj.final]), torch.cat([den, traj.final]),
                               [*titles, f"final image  sigma 0  ({result.steps} steps)"],
                               scale=scale or panel_scale(max(traj.final.shape[-2:]), GIF_PANEL))
    gif = save_gif(frames, out / "reverse.gif", duration_ms=frame_ms)
    meta = out / "reverse.json"
    meta.write_text(json.dumps({
        "prompt": result.prompt, "label": result.label, "sampler": result.sampler, "steps": result.steps,
        "seed": result.seed, "guidance": result.guidance,
        "guidance_interval": None if result.guidance_interval is None else list(result.guidance_interval),
        "nfe": result.nfe, "shown_steps": idx,
        "sigmas": [float(s) for s in sig], "gif_frames": len(frames),
    }, indent=2))
    return [png, gif, meta]


# --- phases --------------------------------------------------------------------------------------------------------


def _classifier_api():
    """(find_classifier, load_classifier) from diffuscope.metrics, or (None, None) when it is not there."""
    try:
        from diffuscope import metrics
    except ImportError:
        return None, None
    find, load = getattr(metrics, "find_classifier", None), getattr(metrics, "load_classifier", None)
    if find is None or load is None:
        try:
            from diffuscope.metrics.classifier import load_classifier as load
            from diffuscope.metrics.locate import find_classifier as find
        except ImportError:
            return None, None
    return find, load


def find_classify(model_path: str | Path | None = None, classifier: str | Path | None = None,
                  class_names: Sequence[str] | None = None) -> tuple[Callable[[Tensor], Tensor] | None, str]:
    """A ``classify(images) -> labels`` function from ``diffuscope.metrics``: an explicit classifier path, else
    the one found for the model; with a note saying which. (None, note) when there is none. A classifier whose
    classes differ from ``class_names`` is refused (UsageError)."""
    find, load = _classifier_api()
    if load is None:
        if classifier is not None:
            raise UsageError("--classifier needs diffuscope.metrics, which is not available")
        return None, "no classifier available (diffuscope.metrics is missing): pixel distance only"
    path = classifier if classifier is not None else (find(model_path) if model_path is not None else None)
    if path is None:
        return None, "no classifier found for this model: pixel distance only"
    clf = load(path)
    if class_names and hasattr(clf, "check_classes"):
        clf.check_classes(tuple(class_names))

    def classify(images: Tensor) -> Tensor:
        return torch.as_tensor(clf.predict(images.clamp(-1, 1))).cpu().long().reshape(-1)

    return classify, f"classes decided by the classifier {path}"


def _finite(value):
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def commitment_strip(commit) -> Image.Image:
    """One row per restart step: the original final image, then finishes from x_k with fresh noise."""
    rows = [torch.cat([commit.original[:1], ex]) for ex in commit.examples]
    titles = [f"restart at step {k} (sigma {s:.3g})" + (f": {100 * v:.0f}% keep the class" if commit.keep else "")
              for k, s, v in zip(commit.points, commit.sigmas, commit.keep or [0.0] * len(rows))]
    return labelled_strip(rows, row_titles=titles, title="first panel: the original; then finishes with fresh noise")


def save_phases(out: str | Path, *, freq=None, commit=None, consist=None, notes: Sequence[str] = (),
                title: str = "") -> tuple[list[Path], str]:
    """A plot per measurement (frequency.png, commitment.png, consistency.png), example pictures
    (commitment_samples.png, consistency_samples.png), the numbers (phases.json) and summary.md.
    Returns (paths, summary)."""
    from diffuscope.phases import summary_text
    from diffuscope.viz import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, data = [], {"notes": list(notes)}
    if freq is not None:
        paths.append(plots.plot_frequency_split(freq, out / "frequency.png", title=title))
        data["frequency"] = {"cutoff": freq.cutoff, "steps": freq.steps, "sigmas": freq.sigmas, "low": freq.low,
                             "high": freq.high, "low_share": freq.low_share, "thirds": freq.band_summary(3)}
    if commit is not None:
        paths.append(plots.plot_commitment(commit, out / "commitment.png", title=title))
        paths.append(save_png(commitment_strip(commit), out / "commitment_samples.png"))
        data["commitment"] = {"method": commit.method, "finish_sampler": commit.finish_sampler, "n": commit.n,
                              "originals": commit.originals, "points": commit.points, "sigmas": commit.sigmas,
                              "keep_class": commit.keep, "rmse": commit.rmse}
    if consist is not None:
        paths.append(plots.plot_consistency(consist, out / "consistency.png", title=title))
        rows = [consist.images[:, r] for r in range(min(4, consist.images.shape[1]))]
        strip = labelled_strip(rows, [[f"Steps: {s}"] for s in consist.steps],
                               title=f"same noise, {consist.sampler}")
        paths.append(save_png(strip, out / "consistency_samples.png"))
        data["consistency"] = {"sampler": consist.sampler, "steps": consist.steps, "rmse": consist.rmse,
                               "reference_steps": consist.reference_steps, "class_agreement": consist.agreement}
    summary = summary_text(freq, commit, consist, notes=notes)
    (out / "phases.json").write_text(json.dumps(_finite(data), indent=2))
    (out / "summary.md").write_text(summary)
    return [*paths, out / "phases.json", out / "summary.md"], summary


def measure_phases(model, *, prompt: str | None, steps: int = 50, n: int = 64, seed: int = 0,
                   sampler: str = DEFAULT_SAMPLER, finish_sampler: str = "DDPM", points: int = 10,
                   cutoff: float = 0.125, consistency_steps=(10, 25, 50, 100), guidance: float | None = None,
                   classifier=None, batch_size: int = 64, device="cpu",
                   guidance_interval: tuple[float, float] | None = None):
    """The three phase measures on a loaded model: (FrequencySplit, Commitment, Consistency, notes).

    With a prompt, guidance defaults to DEFAULT_GUIDANCE (as ``diffuscope sample``); without one, sampling is
    unconditional and the class itself is decided along the way. ``guidance_interval`` = (sigma_lo, sigma_hi)
    limits guidance to sigma_lo < sigma <= sigma_hi (see guidance.py).
    """
    import torch

    from diffuscope.data import class_index
    from diffuscope.errors import UsageError
    from diffuscope.guidance import CFGDenoiser, check_interval
    from diffuscope.phases import commitment_curve, frequency_split, sample_trajectory, step_consistency
    from diffuscope.samplers import get_sampler, make_generators, randn
    from diffuscope.schedules import make_grid

    u = model.config.unet
    denoiser, notes = model.denoiser, []
    if prompt is not None:
        if u.num_classes == 0:
            raise UsageError("this model has no classes: leave out --prompt")
        label = class_index(prompt, model.class_names)
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        interval = check_interval(guidance_interval) if guidance != 1 else None
        if guidance != 1:
            denoiser = CFGDenoiser(denoiser, guidance, u.num_classes, interval)
        on = "" if interval is None else " on ({:g}, {:g}]".format(*interval)
        notes.append(f"prompt {prompt!r}, guidance {guidance:g}{on}: the prompt fixes the class, so class "
                     "agreement is expected to be high throughout; the pixel distance shows when the particular "
                     "image is decided")
    else:
        if guidance is not None or guidance_interval is not None:
            raise UsageError("--guidance and --guidance-interval need --prompt (without one, sampling is "
                             "unconditional)")
        label = u.num_classes  # the null prompt (0 for a model without classes: ignored by the net)
        notes.append("no prompt: unconditional sampling, so the class itself is decided along the way")
    classify, note = find_classify(model.path, classifier, model.class_names)
    notes.append(note)
    notes.append(f"model {model.path} (step {model.step}); {steps} steps of {get_sampler(sampler).name}; "
                 f"images use seeds {seed}..{seed + n - 1}; the commitment restarts image 0")
    schedule = model.denoiser.schedule
    grid = make_grid(schedule, steps)
    shape = (n, u.in_channels, u.image_size, u.image_size)
    noise = randn(shape, make_generators(seed, n), device)
    cond = torch.full((n,), label, dtype=torch.long, device=device)
    sigmas = grid.sigmas.to(device)
    traj = sample_trajectory(denoiser, noise * float(sigmas[0]), sigmas, sampler=sampler, cond=cond)
    freq = frequency_split(traj.denoised, cutoff, grid.sigmas.tolist())
    commit = commitment_curve(denoiser, sigmas, noise[:1] * float(sigmas[0]), cond=cond[:1],
                              finish_sampler=finish_sampler, points=points, n=n, seed=seed,
                              classify=classify, batch_size=batch_size, trajectory=traj.select(slice(0, 1)))
    consist = step_consistency(denoiser, schedule, noise, cond=cond, steps=consistency_steps, sampler=sampler,
                               classify=classify, batch_size=batch_size)
    return freq, commit, consist, notes
