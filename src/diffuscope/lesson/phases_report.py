"""The phase measures of a loaded model, and their pictures and summary on disk (the computations are in
phases.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from diffuscope.checks.errors import UsageError
from diffuscope.core.defaults import DEFAULT_GUIDANCE
from diffuscope.core.events import CancelToken, Observer
from diffuscope.io.jsonsafe import json_safe
from diffuscope.lesson.phases import PhasesConfig
from diffuscope.metrics.evaluation import Evaluator
from diffuscope.viz.strips import labelled_strip, save_png


def find_classify(model_path: str | Path | None = None, classifier: str | Path | None = None,
                  class_names: Sequence[str] | None = None) -> tuple[Callable[[Tensor], Tensor] | None, str]:
    """A ``classify(images) -> labels`` function from ``diffuscope.metrics``: an explicit classifier path, else
    the one found for the model; with a note saying which. (None, note) when there is none. A classifier whose
    classes differ from ``class_names`` is refused (UsageError)."""
    from diffuscope.metrics import classifier as classifier_module
    from diffuscope.metrics import locate

    find, load = locate.find_classifier, classifier_module.load_classifier
    path = classifier if classifier is not None else (find(model_path) if model_path is not None else None)
    if path is None:
        return None, "no classifier found for this model: pixel distance only"
    clf = load(path)
    if class_names and hasattr(clf, "check_classes"):
        clf.check_classes(tuple(class_names))

    def classify(images: Tensor) -> Tensor:
        return torch.as_tensor(clf.predict(images.clamp(-1, 1))).cpu().long().reshape(-1)

    return classify, f"classes decided by the classifier {path}"


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
    from diffuscope.lesson.phases import summary_text
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
    from diffuscope.io.outputs import write_text_atomic  # whole or nothing; a full disk: one line

    write_text_atomic(out / "phases.json", json.dumps(json_safe(data), indent=2))
    write_text_atomic(out / "summary.md", summary)
    return [*paths, out / "phases.json", out / "summary.md"], summary


def measure_phases(model, config: PhasesConfig, *, device: str | torch.device = "cpu",
                   on_event: Observer | None = None, cancel: CancelToken | None = None):
    """The three phase measures on a ``DiffusionModel``: (FrequencySplit, Commitment, Consistency, notes).
    ``on_event`` receives a 'phases' Progress event per network call and ``cancel`` stops the work (events.py).

    With a prompt, guidance defaults to DEFAULT_GUIDANCE (as ``diffuscope sample``); without one, sampling uses the
    null condition (unconditional), so for a class model the class itself is decided along the way. Every measure
    is taken on decoded (pixel) images. ``config.grid`` replaces ``make_grid(schedule, steps, spacing)`` for the
    trajectory and the commitment; the step consistency compares other step counts, so it keeps ``spacing`` unless
    that is "tuned" (then the model's default).
    """
    from diffuscope.core.events import ProgressDenoiser
    from diffuscope.core.guidance import check_interval
    from diffuscope.core.schedules import make_grid
    from diffuscope.lesson.phases import (
        commitment_curve,
        commitment_points,
        frequency_split,
        sample_trajectory,
        step_consistency,
    )
    from diffuscope.samplers import get_sampler, make_generators, randn

    c = config
    conditioner, n, steps, spacing = model.conditioner, c.n, c.steps, c.spacing
    notes = []
    if c.prompt is not None:
        prompt = conditioner.check(c.prompt)  # an unconditional model refuses a prompt here
        guidance = DEFAULT_GUIDANCE if c.guidance is None else c.guidance
        interval = check_interval(c.guidance_interval) if guidance != 1 else None
        denoiser = model.guided(guidance, interval)
        cond = conditioner.conditions((prompt,), n)
        on = "" if interval is None else " on ({:g}, {:g}]".format(*interval)
        notes.append(f"prompt {prompt!r}, guidance {guidance:g}{on}: the prompt fixes what is drawn, so class "
                     "agreement is expected to be high throughout; the pixel distance shows when the particular "
                     "image is decided")
    else:
        if c.guidance is not None or c.guidance_interval is not None:
            raise UsageError("--guidance and --guidance-interval need --prompt (without one, sampling is "
                             "unconditional)")
        denoiser, cond = model.denoiser, conditioner.conditions(None, n)  # the null condition (None: no classes)
        notes.append("no prompt: unconditional sampling, so what is drawn is itself decided along the way")
    classify, note = find_classify(model.path, c.classifier, model.class_names) if model.class_names else (
        None, "no classes to decide: pixel distance only")
    if classify is None and c.classifier is None and conditioner.has_text:
        evaluator = Evaluator.for_model(model)  # one real image per prompt: the nearest is it
        if evaluator.is_retrieval:
            judge = evaluator.classifier
            classify = judge.predict
            note = (f"identity decided by retrieval: an image 'keeps its class' when its nearest real image (of "
                    f"{len(judge.class_names)} {judge.data} images, pixels at {judge.gallery.size}x"
                    f"{judge.gallery.size}) stays the same")
    notes.append(note)
    notes.append(f"model {model.path or model.name} (step {model.step}); {steps} steps of "
                 f"{get_sampler(c.sampler).name}; images use seeds {c.seed}..{c.seed + n - 1}; the commitment "
                 "restarts image 0")
    if model.codec is not None:
        notes.append("a latent model: every measure is taken on decoded images")
    schedule = model.schedule
    grid = c.grid
    if grid is None:
        grid = make_grid(schedule, steps, spacing)
    elif len(grid.sigmas) != steps + 1:
        raise UsageError(f"the grid has {len(grid.sigmas) - 1} steps, not {steps}")
    if spacing == "tuned":
        notes.append(f"tuned grid ({steps} steps) for the trajectory and the commitment; the step consistency "
                     "compares the model's default grids")
        spacing = None
    noise = randn((n, *model.sample_shape), make_generators(c.seed, n), device)
    cond = None if cond is None else cond.to(device)
    sigmas = grid.sigmas.to(device)
    decode = model.decode  # the identity for a pixel model
    spec, finish = get_sampler(c.sampler), get_sampler(c.finish_sampler)
    batches = -(-n // c.batch_size)
    total = (spec.nfe(steps) + batches * sum(finish.nfe(steps - k) for k in commitment_points(steps, c.points))
             + batches * sum(spec.nfe(s) for s in set(c.consistency_steps)))  # what the three measures call
    denoiser = ProgressDenoiser(denoiser, "phases", total, on_event, cancel)
    traj = sample_trajectory(denoiser, noise * float(sigmas[0]), sigmas, sampler=c.sampler, cond=cond)
    denoised = torch.stack([_decoded(decode, d, device) for d in traj.denoised])
    freq = frequency_split(denoised, c.cutoff, grid.sigmas.tolist())
    commit = commitment_curve(denoiser, sigmas, noise[:1] * float(sigmas[0]), c,
                              cond=None if cond is None else cond[:1], classify=classify,
                              trajectory=traj.select(slice(0, 1)), decode=decode)
    consist = step_consistency(denoiser, schedule, noise, replace(c, spacing=spacing), cond=cond, classify=classify,
                               decode=decode)
    return freq, commit, consist, notes


def _decoded(decode: Callable[[Tensor], Tensor], x: Tensor, device) -> Tensor:
    with torch.no_grad():
        return decode(x.to(device)).float().cpu()
