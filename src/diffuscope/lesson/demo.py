"""The whole lesson in one run: forward strip, reverse strip, the step sweep with its diminishing-returns point, and
the phase measures, gathered in one self-contained ``report.html`` (``diffuscope demo --out DIR``)."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.core.events import Observer


@dataclass(frozen=True)
class DemoConfig:
    model: str = "mnist"  # a built-in model name, checkpoint folder or run folder
    prompt: str | None = None  # the reverse strip's prompt; None: "7" for a class model, the first TEXT_PROMPTS
    sweep_prompt: str = "all"  # a class model's sweep prompts: "all" spreads the images over every class
    steps: tuple[int, ...] = (10, 25, 50, 100)  # the lesson's step counts
    samplers: tuple[str, ...] = ("DDIM", DEFAULT_SAMPLER)
    n: int = 32  # images per sweep cell (and the real-vs-real floor at the same N); small to keep the demo short
    reference_sampler: str = "DPM++ 2M"  # the sweep's convergence reference: cheaper than Heun's 2N - 1 NFE
    # 150 steps: second order, so about (100/150)^2 x 0.0006 = 0.0003 pixel RMSE from its limit (0.0006 measured at
    # 100 vs 200 steps, docs/benchmarks.md), far below the 2/255 tolerance; 50 fewer steps than `sweep`'s default
    # keep the demo within 5 minutes on 2 cores.
    reference_steps: int = 150
    reverse_steps: int = 50  # steps of the reverse strip and the phase measures
    phases_n: int = 16  # images / finishes for the phase measures
    phases_points: int = 8  # restart points of the commitment curve
    seed: int = 0
    guidance: float = DEFAULT_GUIDANCE
    device: str = "auto"


TEXT_PROMPTS = ("red apple", "crying cat", "palm tree")  # a text model's sweep prompts (issue 18's examples)
FORWARD_SIGMAS = (0.2, 1.0, 5.0)  # the report's forward strip of a continuous model: 0, these, sigma_max


def default_prompt(model) -> str | None:
    """The reverse strip's prompt when none is given: "7" (or the first class), a text model's first example."""
    if model.conditioner.has_classes:
        return "7" if "7" in model.class_names else model.class_names[0]
    return TEXT_PROMPTS[0] if model.conditioner.has_text else None


@dataclass
class Section:
    """One part of report.html: a heading, plain paragraphs (``text``, one per line), a list of numbers (``items``)
    and figures (``images``, each with its caption from ``captions`` or a default from its file name)."""

    title: str
    text: str
    images: list[Path] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)  # file name -> caption
    html: str = ""  # ready-made HTML placed after the paragraphs (the answers' headlines and details)


FIGURE_CAPTIONS = {
    "forward.png": "The forward process: a real image with more and more noise (closed form above, the step-by-step "
                   "chain below, same seed).",
    "reverse.png": "The reverse process, learned: the noisy state x_t (top) and the model's predicted clean image "
                   "(bottom), from early steps (left: composition) through the middle (structure) to late steps "
                   "(right: detail).",
    "reverse.gif": "The reverse process, one frame per step: early frames decide composition, middle ones structure, "
                   "late ones detail.",
    "grid.png": "The same prompts and noise at each step count (columns), with the fine-step reference last.",
    "quality.png": "Quality against network evaluations; the labels use the same words as the answers above.",
    "frequency.png": "How much each step changes the predicted image, split into coarse and fine detail.",
    "commitment.png": "Restarting from step k with fresh noise: how often the class is kept, and how far the finish "
                      "lands from the original.",
}


def _embed(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    kind = "gif" if path.suffix == ".gif" else "png"
    text = caption or path.stem.replace("_", " ")
    return (f'<figure><img alt="{html.escape(text)}" src="data:image/{kind};base64,{data}">'
            f"<figcaption>{html.escape(text)}</figcaption></figure>")


def answers_html(answers, verdicts) -> str:
    """The answers as readable HTML: per sampler its headline paragraph, then its detail; per claim its verdict,
    why, and what was measured."""
    e = html.escape
    parts = []
    for a in answers:
        parts.append(f'<p class="headline"><strong>{e(a.headline)}</strong></p>')
        if a.detail:
            parts.append(f'<p class="detail">{e(a.detail)}</p>')
    if verdicts:
        parts.append("<h3>What gets decided when</h3><ul>")
        parts += [f"<li><strong>{e(v.claim)}: {e(v.verdict)}.</strong> {e(v.why)} <span class='detail'>"
                  f"(measured: {e(v.measured)})</span></li>" for v in verdicts]
        parts.append("</ul>")
    return "\n".join(parts)


def write_report(out: Path, sections: list[Section], title: str) -> Path:
    """One HTML file with every picture embedded, readable offline: headings, paragraphs, lists of numbers and
    figures with captions and alt text (no preformatted blocks)."""
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
             "img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}figure{margin:1em 0}"
             "figcaption{font-size:.9em;color:#555}p.headline{font-size:1.1em}.detail{color:#555;font-size:.92em}"
             "ul.numbers{font-size:.9em;color:#444}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    for s in sections:
        parts.append(f"<section><h2>{e(s.title)}</h2>")
        parts += [f"<p>{e(line)}</p>" for line in s.text.splitlines() if line.strip()]
        if s.html:
            parts.append(s.html)
        if s.items:
            parts.append("<ul class='numbers'>" + "".join(f"<li>{e(i)}</li>" for i in s.items) + "</ul>")
        parts.extend(_embed(Path(p), s.captions.get(Path(p).name) or FIGURE_CAPTIONS.get(Path(p).name, ""))
                     for p in s.images if Path(p).is_file())
        parts.append("</section>")
    parts.append("</body></html>")
    path = Path(out) / "report.html"
    from diffuscope.io.outputs import write_text_atomic  # whole or nothing; a full disk: one line

    write_text_atomic(path, "\n".join(parts))
    return path


def _settled(k) -> str:
    """The settled point (sweep/knee.py) in a few words."""
    if k.settled is None:
        return "settled: not measured"
    return f"settled at NFE {k.settled_nfe}" if k.settled else f"not settled at n = {k.n}"


def knee_summary(result) -> str:
    """One line per sampler and metric that resolves something at this n: the diminishing-returns point (EDM's 3%
    rule, the settled point, Kneedle) and its note; the metrics that resolve nothing are named once, folded."""
    from diffuscope.sweep.report import folded_note

    folded = result.unresolved_metrics
    lines = [f"n = {result.config.n} images per cell; full numbers in sweep/report.html"]
    if folded:
        lines.append(folded_note(result))
    for sampler, knees in result.knees.items():
        for metric, k in knees.items():
            if metric in folded:
                continue
            values = ", ".join(f"{x}: {v:.4g}" for x, v in zip(k.nfe, k.values))
            lines.append(f"{sampler:<10} {metric:<14} knee (EDM 3%) at NFE {k.edm_nfe}, {_settled(k)}, "
                         f"Kneedle {k.kneedle_nfe}; "
                         f"{k.note}  [NFE: value  {values}]")
    return "\n".join(lines)


def run_demo(config: DemoConfig, out: str | Path, *, log: Callable[[str], None] = print,
             on_event: Observer | None = None) -> Path:
    """Run every part of the lesson on ``config.model`` and write ``out/report.html``; returns its path.
    ``on_event`` receives the sweep's Progress events (events.py)."""
    from diffuscope.generation.generate import GenerationRequest
    from diffuscope.io.device import pick_device
    from diffuscope.lesson.forward import forward_process, forward_process_sigma, save_forward
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases, save_phases
    from diffuscope.lesson.reverse import reverse_process, save_reverse
    from diffuscope.models.load import load_model
    from diffuscope.sweep import SweepConfig, sweep, write_reports

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    model = load_model(config.model, device=device)
    channels, size, _ = model.image_shape
    data_name = model.data_name or "mnist"
    sections, t0 = [], time.perf_counter()
    part_s: dict[str, float] = {}  # wall seconds per part, written to demo.json

    def lap(part: str) -> None:
        part_s[part] = time.perf_counter() - t0 - sum(part_s.values())

    # 1. the forward process: fixed, simple math, on the model's own schedule (a continuous one along sigma)
    log("[1/4] forward process")
    from diffuscope.core.schedules import VPSchedule
    from diffuscope.data import load_dataset

    test = load_dataset(data_name, split="test", image_size=size, channels=channels)
    schedule = model.denoiser.schedule
    source = f"{data_name} test image 0"
    if isinstance(schedule, VPSchedule):
        fwd = forward_process(test.images[0], schedule, [0, 250, 500, 750, schedule.num_timesteps],
                              seed=config.seed, source=source)
        rows = [f"t = {k:>4}: sqrt(alpha_bar) = {s:.4f}, SNR = {d:+.1f} dB"
                for k, s, d in zip(fwd.t, fwd.sqrt_alpha_bar, fwd.snr_db)]
    else:
        sigmas = [0.0] + [s for s in FORWARD_SIGMAS if schedule.sigma_min <= s < schedule.sigma_max]
        fwd = forward_process_sigma(test.images[0], [*sigmas, schedule.sigma_max], seed=config.seed,
                                    source=source, schedule=schedule.name)
        rows = [f"sigma = {g:>6.3g}: shown x / sqrt(1 + sigma^2), sqrt(alpha_bar) = {s:.4f}, SNR = {d:+.1f} dB"
                for g, s, d in zip(fwd.sigma, fwd.sqrt_alpha_bar, fwd.snr_db)]
    fwd_paths = save_forward(fwd, out / "forward")
    sections.append(Section("Forward process: adding noise is fixed, simple math",
                            f"Nothing is learned here: the model's own {fwd.schedule} schedule adds noise by a fixed "
                            "formula. Top row: the closed form; bottom row: the step-by-step chain, same seed.",
                            [p for p in fwd_paths if p.suffix == ".png"], items=rows))

    lap("forward")

    # 2. the reverse process from a real model
    log("[2/4] reverse process")
    prompt = (config.prompt or default_prompt(model)) if model.conditioner.takes_prompts else None
    guidance = config.guidance if model.conditioner.has_null else 1.0
    rev = reverse_process(model, GenerationRequest(prompts=(prompt,), sampler=DEFAULT_SAMPLER,
                                                   steps=config.reverse_steps, guidance=guidance, seed=config.seed,
                                                   device=device))
    prompt = rev.prompt
    rev_paths = save_reverse(rev, out / "reverse", show=min(8, config.reverse_steps))
    third = max(1, config.reverse_steps // 3)
    sections.append(Section(f"Reverse process: prompt {prompt!r}, {config.reverse_steps} steps of {rev.sampler}",
                            "The reverse process is the learned one: at every step the trained network predicts the "
                            "clean image from the noisy state, and the sampler steps towards it.\n"
                            f"Early steps (1-{third}) decide composition, where things go; the middle steps "
                            f"({third + 1}-{config.reverse_steps - third}) form structure; late steps "
                            f"({config.reverse_steps - third + 1}-{config.reverse_steps}) add fine detail.",
                            [p for p in rev_paths if p.suffix in (".png", ".gif")],
                            items=[f"sigmas: {', '.join(f'{float(s):.3g}' for s in rev.trajectory.sigmas)}"]))

    lap("reverse")

    # 3. the exercise: the same prompt and seed at 10/25/50/100 steps, measured
    log("[3/4] step sweep")
    sweep_prompts = (config.sweep_prompt,) if model.conditioner.has_classes else (
        (TEXT_PROMPTS if config.prompt is None else (prompt,)) if model.conditioner.has_text else ())
    sweep_cfg = SweepConfig(prompts=sweep_prompts, steps=config.steps, samplers=config.samplers,
                            seed=config.seed, n=config.n, guidance=guidance,
                            reference_sampler=config.reference_sampler, reference_steps=config.reference_steps,
                            ci_resamples=50)
    result = sweep(model, sweep_cfg, device=device, on_event=on_event)
    sweep_paths = write_reports(result, out / "sweep")
    sections.append(Section("The exercise: same prompts and seeds at " + "/".join(map(str, config.steps))
                            + " steps", "Where quality plateaus: the measured numbers behind the answers above "
                            "(full tables in sweep/report.html).",
                            [sweep_paths[k] for k in ("grid.png", "quality.png") if k in sweep_paths],
                            items=knee_summary(result).splitlines()))

    lap("sweep")

    # 4. when are the big decisions made?
    log("[4/4] phases")
    phases = PhasesConfig(steps=config.reverse_steps, n=config.phases_n, seed=config.seed,
                          points=config.phases_points, consistency_steps=tuple(config.steps), batch_size=64)
    freq, commit, consist, notes = measure_phases(model, phases, device=device)
    phase_paths, summary = save_phases(out / "phases", freq=freq, commit=commit, consist=consist, notes=notes)
    sections.append(Section("Phases: early steps decide composition, late steps fine detail",
                            "What the phase measures found on this model (the verdicts are in the answers above).",
                            [p for p in phase_paths if p.suffix == ".png"], items=summary.splitlines()))

    lap("phases")
    from diffuscope.lesson.verdicts import explained_verdicts
    from diffuscope.sweep.answer import sampler_answers

    one_image = model.data_name == "emoji" and phases.prompt is not None  # data/emoji.py: one image per prompt
    verdicts = explained_verdicts(freq, commit, one_image_per_prompt=one_image)
    sections.insert(0, Section("The answers (numbers below)", "", html=answers_html(sampler_answers(result),
                                                                                      verdicts)))
    elapsed = time.perf_counter() - t0
    from diffuscope.io.outputs import write_text_atomic  # whole or nothing; a full disk: one line

    write_text_atomic(out / "demo.json", json.dumps({"model": str(model.path), "elapsed_s": round(elapsed, 1),
                                               "part_s": {k: round(v, 1) for k, v in part_s.items()},
                                               "torch_threads": torch.get_num_threads()}, indent=2))
    title = f"diffuscope: the forward and reverse processes of {config.model} (generated in {elapsed:.0f} s)"
    return write_report(out, sections, title)
