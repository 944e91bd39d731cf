"""The step sweep: a known-answer sweep on an exact Gaussian-mixture denoiser, the step-list syntax, the reports,
Ctrl-C, and the command line's one-line errors."""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import diffuscope.cli as cli
from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, ScheduleConfig, make_grid, make_schedule
from diffuscope.data import load_dataset
from diffuscope.sweep import (
    SweepConfig,
    SweepInputs,
    check_config,
    parse_steps,
    prompt_labels,
    real_sets,
    sweep,
    write_reports,
)
from diffuscope.sweep.plots import GAP, plotted_metrics, sweep_grid
from diffuscope.viz import to_pil

N = 48
STEPS = (2, 4, 8, 16, 32)
SAMPLERS = ("DDIM", "DPM++ 2M", "Euler a")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


def _mixture() -> GaussianMixtureDenoiser:
    g = torch.Generator().manual_seed(0)
    return GaussianMixtureDenoiser(torch.randn(3, 1, 4, 4, generator=g) * 0.6, 0.25, classes=torch.arange(3))


def _real(gmm, labels, seed):
    """Exact data samples with the class counts of `labels`."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=3)
    images = torch.cat([gmm.sample(int(counts[c]), g, cond=c)[0] for c in range(3)])
    return images, torch.repeat_interleave(torch.arange(3), counts)


def _inputs(gmm, n=N, denoiser=None):
    """Pixels as features, the nearest component mean as the classifier, exact samples as the real sets."""
    labels = torch.arange(n) % 3
    means = gmm.means.flatten(1).double()
    floor, floor_labels = _real(gmm, labels, 2)
    return SweepInputs(denoiser or gmm, EDMSchedule(), (1, 4, 4), labels, null_label=3,
                       features=lambda x: x.flatten(1),
                       classify=lambda x: torch.cdist(x.flatten(1).double(), means).argmin(1),
                       reference_images=_real(gmm, labels, 1)[0], floor_images=floor, floor_labels=floor_labels,
                       num_classes=3)


@pytest.fixture(scope="module")
def known():
    config = SweepConfig(steps=STEPS, samplers=SAMPLERS, n=N, guidance=1.0, ci_resamples=50)
    return sweep(_inputs(_mixture()), config)


def _by_hand_edm(cells, key, higher, threshold=0.03):
    xs, vs = [c.nfe for c in cells], [c.metrics[key] for c in cells]
    best = max(vs) if higher else min(vs)
    inside = [x for x, v in zip(xs, vs) if (v >= best * (1 - threshold) if higher else v <= best * (1 + threshold))]
    return min(inside), min(inside) != xs[-1]


def test_known_answer_sweep_converges_and_reports_the_right_knee(known):
    r = known
    assert r.groups == ("fd", "kid", "pr", "accuracy", "convergence")  # the default: all the inputs allow
    assert [(c.sampler, c.steps) for c in r.cells] == [(s, k) for s in SAMPLERS for k in STEPS]
    assert all(c.nfe == c.nfe_expected == c.steps and c.wall_s > 0 for c in r.cells)
    for c in r.cells:  # the exact grid of every cell
        assert c.grid == make_grid(EDMSchedule(), c.steps).describe() and c.grid["sigmas"][-1] == 0
    floor = r.floor
    assert floor["n"] == floor["n_reference"] == N and floor["metrics"]["accuracy"] == 1.0
    for s in ("DDIM", "DPM++ 2M"):
        cells = [r.cell(s, k) for k in STEPS]
        conv = [c.metrics["conv_pixel"] for c in cells]
        assert all(a > b for a, b in itertools.pairwise(conv)), conv  # deterministic: monotone convergence
        # the metric converges to the data: from far above the real-vs-real floor into its interval
        assert cells[0].metrics["fd"] > floor["intervals"]["fd"][1]
        assert floor["intervals"]["fd"][0] <= cells[-1].metrics["fd"] <= floor["intervals"]["fd"][1]
        assert cells[-1].metrics["accuracy"] == 1.0
        for key, higher in (("fd", False), ("accuracy", True), ("conv_pixel", False), ("recall", True)):
            knee = r.knees[s][key]
            assert (knee.edm_nfe, knee.plateaued) == _by_hand_edm(cells, key, higher), (s, key)
    ddim = [r.cell("DDIM", k).metrics["conv_pixel"] for k in STEPS]
    assert 1.6 < ddim[-2] / ddim[-1] < 2.4  # first order: halving the step halves the error
    assert r.cell("DPM++ 2M", 32).metrics["conv_pixel"] < ddim[-1] / 3  # second order is far closer
    assert r.knees["DDIM"]["conv_pixel"].plateaued is False and "not plateaued" in r.knees["DDIM"]["conv_pixel"].note
    # the absolute point: the fewest NFE within one 8-bit grey level of the reference, computed by hand
    for s in ("DDIM", "DPM++ 2M"):
        knee, cells = r.knees[s]["conv_pixel"], [r.cell(s, k) for k in STEPS]
        assert knee.tolerance == 2 / 255 and r.knees[s]["fd"].tolerance is None
        assert knee.tolerance_nfe == next((c.nfe for c in cells if c.metrics["conv_pixel"] <= 2 / 255), None)
    assert r.knees["Euler a"]["conv_pixel"].tolerance is None  # stochastic: never converges to the reference
    for s in ("DDIM", "DPM++ 2M"):  # the settle rule: a candidate's paired interval against the best cell
        for key in ("fd", "accuracy", "conv_pixel"):
            knee = r.knees[s][key]
            assert knee.n == N and knee.settled is not None
            assert knee.settled_nfe is None or knee.settled_nfe < knee.against_nfe <= max(STEPS)
            if knee.settle_gap is None:
                continue
            cell, best = r.cell(s, knee.settle_nfe), r.cell(s, knee.against_nfe)
            est, lo, hi = knee.settle_gap
            assert est == pytest.approx(cell.metrics[key] - best.metrics[key], rel=1e-6, abs=1e-9)
            assert knee.settled == (-knee.band <= lo and hi <= knee.band)
    # accuracy is 100% everywhere: the 2-step images are as right as the 32-step ones, image by image
    assert (r.knees["DDIM"]["accuracy"].settled_nfe, r.knees["DDIM"]["accuracy"].against_nfe) == (2, 32)
    # deterministic convergence keeps improving up to the largest count: nothing settles there
    assert r.knees["DDIM"]["conv_pixel"].settled is False
    # the same initial noise in every cell: two first-order 2-step runs coincide
    assert torch.allclose(r.cell("DDIM", 2).images, r.cell("DPM++ 2M", 2).images, atol=1e-6)
    # the stochastic sampler is flagged, and its convergence does not converge
    assert any(n.startswith("Euler a is stochastic") for n in r.notes)
    assert "stochastic" in r.knees["Euler a"]["conv_pixel"].note
    euler_a = [r.cell("Euler a", k).metrics["conv_pixel"] for k in STEPS]
    assert min(euler_a) > 5 * ddim[-1]


def test_reports_are_written_and_hold_every_cell(known, tmp_path):
    paths = write_reports(known, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png", "quality.png", "report.html", "report.json", "report.md"]
    data = json.loads((tmp_path / "report.json").read_text())  # allow_nan=False on write: strict JSON
    assert len(data["cells"]) == 15 and data["interrupted"] is False
    assert data["knees"]["DDIM"]["fd"]["edm_nfe"] == known.knees["DDIM"]["fd"].edm_nfe
    assert data["cells"][0]["grid"]["sigmas"] == known.cells[0].grid["sigmas"]
    assert data["floor"]["metrics"]["fd"] == pytest.approx(known.floor["metrics"]["fd"])
    # grid.png: rows = samplers x 4 images, columns = 5 step counts + the reference; every panel is its image
    grid = Image.open(paths["grid.png"]).convert("RGB")
    _, layout = sweep_grid(known)
    assert grid.size == (layout.width, layout.height)
    assert len(layout.row_y) == 3 * 4 and len(layout.col_x) == len(STEPS) + 1
    assert layout.col_x[1] - layout.col_x[0] == layout.cell_w + GAP and layout.panel_w == 4 * layout.scale
    for s_i, s in enumerate(SAMPLERS):
        for c_i, k in ((0, 2), (4, 32)):
            for i in (0, 3):
                x, y = layout.col_x[c_i], layout.row_y[s_i * 4 + i]
                panel = grid.crop((x, y, x + layout.panel_w, y + layout.panel_h))
                want = to_pil(known.cell(s, k).images[i], layout.scale).convert("RGB")
                assert np.array_equal(np.asarray(panel), np.asarray(want)), (s, k, i)
    # report.html: self-contained, the two pictures embedded, every cell and its sigma grid present
    page = (tmp_path / "report.html").read_text()
    blobs = page.split("data:image/png;base64,")[1:]
    assert len(blobs) == 2 and "src='grid.png'" not in page
    embedded = Image.open(io.BytesIO(base64.b64decode(blobs[0].split("'")[0])))
    assert embedded.size == grid.size
    for c in known.cells:
        assert f"<td>{c.sampler}</td><td>{c.steps}</td><td>{c.nfe}</td>" in page.replace("&#x27;", "'")
        assert ", ".join(f"{v:.6g}" for v in c.grid["sigmas"]) in page
    md = (tmp_path / "report.md").read_text()
    assert "not plateaued" in md and "| DDIM |" in md and "real vs real" in md and "good enough (NFE)" in md
    # the two-layer answer leads: each sampler's headline (bold) before any picture or table, its detail after
    from diffuscope.sweep.answer import sampler_answers

    answers = sampler_answers(known)
    assert md.index("## The answer") < md.index("![") < md.index("| DDIM |")
    for a in answers:
        assert f"**{a.headline}**\n\n{a.detail}" in md and md.index(a.headline) < md.index("![")
    assert page.index("<p class='headline'>") < page.index("<table>")


def test_metrics_that_resolve_nothing_are_folded_away_with_a_note(known, tmp_path):
    # the worst cell against the best, paired: deterministic convergence separates far beyond the noise
    for s in SAMPLERS:
        knee = known.knees[s]["conv_pixel"]
        worst, best = known.cell(s, knee.worst_nfe), known.cell(s, knee.best_nfe)
        assert knee.spread[0] == pytest.approx(worst.metrics["conv_pixel"] - best.metrics["conv_pixel"], rel=1e-6)
        assert knee.separated is True
    # precision is a mean over the generated images: it has an interval and a paired spread; recall has neither
    for s in SAMPLERS:
        knee = known.knees[s]["precision"]
        assert knee.spread is not None and knee.separated is not None
        worst, best = known.cell(s, knee.worst_nfe), known.cell(s, knee.best_nfe)
        assert knee.spread[0] == pytest.approx(worst.metrics["precision"] - best.metrics["precision"], abs=1e-12)
        assert all("precision" in c.intervals and "recall" not in c.intervals for c in known.cells)
        assert known.knees[s]["recall"].separated is None
    # accuracy is 100% in every cell of every sampler (exact mixture, nearest-mean classifier): nothing to plot
    assert all(c.metrics["accuracy"] == 1.0 for c in known.cells)
    assert "accuracy" in known.unresolved_metrics and "conv_pixel" not in known.unresolved_metrics

    def with_fd_separated(which):
        return replace(known, knees={s: {k: replace(kn, separated=s in which) if k == "fd" else kn
                                         for k, kn in per.items()} for s, per in known.knees.items()})

    assert "fd" not in with_fd_separated({"DDIM"}).unresolved_metrics  # one sampler separating keeps a metric
    assert "fd" in with_fd_separated(set()).unresolved_metrics
    fd_paths = write_reports(with_fd_separated(set()), tmp_path / "fd")
    assert "<details><summary>FD" in fd_paths["report.html"].read_text()
    write_reports(known, tmp_path)
    md = (tmp_path / "report.md").read_text()
    note = next(line for line in md.splitlines() if "Folded, not plotted" in line)
    assert f"at n = {N} no step count differs" in note and "accuracy" in note and "raise --n" in note
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    acc = next(i for i, t in enumerate(titles) if t.startswith("## accuracy"))
    conv = next(i for i, t in enumerate(titles) if "convergence" in t.lower())
    assert acc > conv and f"not resolved at n = {N}" in titles[acc]  # the folded tables after the others
    page = (tmp_path / "report.html").read_text()
    assert page.count("<details>") == len(known.unresolved_metrics)
    assert "<details><summary>accuracy" in page
    assert "<details><summary>FD" not in page
    assert plotted_metrics(known) == [k for k in known.metric_keys if k not in known.unresolved_metrics]
    everything = replace(known, knees={s: {k: replace(kn, separated=False) for k, kn in per.items()}
                                       for s, per in known.knees.items()})
    assert plotted_metrics(everything) == known.metric_keys  # nothing resolves: plot all rather than nothing


def test_ctrl_c_leaves_a_valid_partial_report(tmp_path):
    gmm = _mixture()
    config = SweepConfig(steps=(2, 4, 8), samplers=("DDIM", "Euler"), n=8, guidance=1.0, ci_resamples=0,
                         reference_steps=8, metrics=("fd", "convergence"))
    seen = []

    def stop_after_three(cell):
        seen.append(cell)
        if len(seen) == 3:
            raise KeyboardInterrupt

    r = sweep(_inputs(gmm, 8), config, on_cell=stop_after_three)
    assert r.interrupted and [(c.sampler, c.steps) for c in r.cells] == [("DDIM", 2), ("DDIM", 4), ("DDIM", 8)]
    assert list(r.knees) == ["DDIM"] and r.knees["DDIM"]["fd"].nfe == (2, 4, 8)
    write_reports(r, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["interrupted"] is True and len(data["cells"]) == 3
    md = (tmp_path / "report.md").read_text()
    assert "interrupted" in md
    # no answer that reads as final: the answer section says how far it got
    assert "**Interrupted after 3 of 6 cells: the numbers below are partial, not an answer.**" in md
    assert "(DDIM).**" not in md
    # interrupted inside a cell (from the denoiser): the unfinished cell is dropped
    calls = []

    def flaky(x, sigma, cond=None):
        calls.append(1)
        if len(calls) == 15 + 2 + 4 + 3:  # reference Heun 8 steps (15 NFE), DDIM 2, DDIM 4, then inside DDIM 8
            raise KeyboardInterrupt
        return gmm(x, sigma, cond)

    r = sweep(_inputs(gmm, 8, flaky), config)
    assert r.interrupted and [c.steps for c in r.cells] == [2, 4]


def test_parse_steps():
    assert parse_steps("10,25,50,100") == (10, 25, 50, 100)
    assert parse_steps(" 100, 10,25 ,10") == (10, 25, 100)  # sorted, deduplicated
    assert parse_steps("5-100 [8]") == (5, 8, 12, 18, 28, 42, 65, 100)  # geometric spacing
    assert parse_steps("1-4 [8]") == (1, 2, 3, 4)  # rounding merges values
    assert parse_steps("10-15") == (10, 11, 12, 13, 14, 15)
    assert parse_steps("10-50 (+10)") == (10, 20, 30, 40, 50)
    assert parse_steps("5, 10-30 (+10), 100") == (5, 10, 20, 30, 100)
    assert parse_steps("7-7 [3]") == (7,) and parse_steps(25) == (25,)
    for bad in ("", "abc", "10,,20", "10;20", "0", "10-5", "5-100 [0]", "1-1000", "2.5", "-5", "5-100 [8", "9" * 5000,
                "1-" + "9" * 5000):
        with pytest.raises(UsageError):
            parse_steps(bad)


def test_bad_config_and_inputs_raise_one_line_usage_errors():
    gmm = _mixture()
    bad = [
        (SweepConfig(samplers=("DDIM", "nope")), "unknown sampler 'nope'"),
        (SweepConfig(samplers=("DDIM", "ddim")), "twice"),
        (SweepConfig(n=1, metrics=("fd",)), "n >= 2"),
        (SweepConfig(n=3, metrics=("pr",)), "n >= 4"),
        (SweepConfig(threshold=0.0), "threshold"),
        (SweepConfig(reference_sampler="Euler a"), "deterministic"),
        (SweepConfig(metrics=("fid",)), "unknown metric"),
        (SweepConfig(steps=(25, 10)), "ascending"),
        (SweepConfig(guidance_interval=(5.0, 1.0)), "guidance interval"),
    ]
    for config, message in bad:
        with pytest.raises(UsageError, match=message):
            check_config(config)
    discrete = make_schedule(ScheduleConfig(kind="linear", num_timesteps=50))
    with pytest.raises(UsageError, match="T=50"):
        sweep(SweepInputs(gmm, discrete, (1, 4, 4)), SweepConfig(steps=(10, 100), n=2, guidance=1.0,
                                                                  metrics=("convergence",)))
    with pytest.raises(UsageError, match="features"):
        sweep(SweepInputs(gmm, EDMSchedule(), (1, 4, 4)), SweepConfig(n=4, metrics=("fd",)))
    with pytest.raises(UsageError, match="schedule"):
        sweep(gmm, SweepConfig(n=4))
    # without features, classifier or labels the default is convergence only, unconditional
    r = sweep(SweepInputs(gmm, EDMSchedule(), (1, 4, 4), null_label=3),
              SweepConfig(steps=(1, 2), samplers=("Euler",), n=2, reference_steps=3))
    assert r.groups == ("convergence",) and r.labels is None and r.info["guidance_used"] == 1.0
    assert set(r.cells[0].metrics) == {"conv_pixel"}


def test_prompts_and_real_sets():
    names = tuple(str(i) for i in range(10))
    assert prompt_labels(("all",), names, 12)[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    labels, shown = prompt_labels(("seven", "3"), names, 5)
    assert labels.tolist() == [7, 3, 7, 3, 7] and shown == ["7", "3"]
    assert prompt_labels(("seven, 3", "1"), names, 3)[0].tolist() == [7, 3, 1]  # a class model's comma lists
    for prompts, message in ((("all", "3"),), "alone"), ((("3", "three"),), "twice"), ((("eleven",),), "unknown"):
        with pytest.raises(UsageError, match=message):
            prompt_labels(prompts[0], names, 4)
    test = load_dataset("digits", split="test")  # 18 held-out images of a 7
    train = lambda: load_dataset("digits", split="train")  # noqa: E731
    sets = real_sets(test, torch.full((8,), 7), train=train)
    assert sets.comparison == "held-out vs held-out" and len(sets.reference) == len(sets.stand_in) == 8
    assert (sets.stand_in_labels == 7).all()
    sets = real_sets(test, torch.full((30,), 7), train=train)  # 18 held-out 7s: reference 18, stand-in from train
    assert sets.comparison == "train vs held-out" and len(sets.reference) == 18 and len(sets.stand_in) == 30
    with pytest.raises(UsageError, match="too large"):
        real_sets(test, torch.full((200,), 7), train=train)


# --- the command line (called through diffuscope.cli.main with "sweep" registered) ------------------------------


@pytest.fixture
def run_cli(monkeypatch, capsys):
    if "sweep" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "sweep"))

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _fast(model, out, *extra):
    return ("sweep", "--model", model, "--steps", "1,2", "--samplers", "Euler", "--n", "2", "--reference-steps", "4",
            "--no-progress", "--out", out, *extra)


def test_cli_sweep_on_a_model_without_classifier(run_cli, tiny_model, tmp_path):
    code, out, err = run_cli(*_fast(tiny_model, tmp_path / "s", "--prompt", "7"))
    assert code == 0, err
    assert {p.name for p in (tmp_path / "s").iterdir()} >= {"grid.png", "quality.png", "report.json", "report.md",
                                                             "report.html"}
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert data["metric_groups"] == ["convergence"] and [c["steps"] for c in data["cells"]] == [1, 2]
    assert data["labels"] == [7, 7] and data["info"]["prompts"] == ["7"]
    assert "no classifier" in out and "diffuscope classifier" in out
    headlines = [line for line in out.splitlines() if line.endswith(").") and "steps" in line]
    assert len(headlines) == 1 and "at 2, the largest count run" in headlines[0]  # 1 and 2 steps: nothing beyond


def test_cli_sweep_with_a_guidance_interval_records_it(run_cli, tiny_model, tmp_path):
    code, _, err = run_cli(*_fast(tiny_model, tmp_path / "s", "--prompt", "7", "--guidance", "2",
                                    "--guidance-interval", "0.28,5.42"))
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert data["config"]["guidance_interval"] == [0.28, 5.42]
    assert data["info"]["guidance_interval_used"] == [0.28, 5.42]
    assert "Guidance: 2 on (0.28, 5.42] (guidance interval)" in (tmp_path / "s" / "report.md").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (("--prompt", "7", "--steps", "10,abc"), "malformed step list"),
    (("--prompt", "7", "--samplers", "DDIM,nope"), "unknown sampler 'nope'"),
    (("--prompt", "7", "--n", "1", "--metrics", "fd"), "n >= 2"),
    (("--prompt", "7", "--metrics", "fd,accuracy"), "diffuscope classifier --data digits"),
    (("--prompt", "eleven",), "unknown prompt"),
    (("--prompt", "7", "--threshold", "3"), "threshold"),
    (("--prompt", "7", "--guidance-interval", "1"), "LO,HI"),
])
def test_cli_errors_exit_2_with_one_line(run_cli, tiny_model, tmp_path, extra, message):
    argv = ["sweep", "--model", tiny_model, "--n", "4", "--no-progress", "--out", tmp_path / "e", *extra]
    code, _, err = run_cli(*argv)
    assert code == 2 and err.startswith("diffuscope: error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "e").exists()


def test_cli_with_a_classifier_measures_everything(run_cli, tiny_model, tmp_path):
    from diffuscope.metrics import ClassifierConfig, ClassifierInfo, ClassifierNet, save_classifier

    run = shutil.copytree(tiny_model, tmp_path / "run")
    torch.manual_seed(0)
    cfg = ClassifierConfig(channels=1, image_size=8, num_classes=10, widths=(8, 16), feature_dim=16)
    info = ClassifierInfo(cfg, "digits", tuple(str(i) for i in range(10)), 0.5, (0.5,) * 10, 0, 0)
    save_classifier(ClassifierNet(cfg).eval(), info, run / "classifier")
    code, out, err = run_cli(*_fast(run, tmp_path / "s", "--prompt", "3", "--prompt", "7", "--n", "8",
                                    "--samplers", "DDIM,Euler a", "--ci-resamples", "20"))
    assert code == 0, err
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert data["metric_groups"] == ["fd", "kid", "pr", "accuracy", "convergence"]
    assert data["floor"]["comparison"] == "held-out vs held-out" and data["floor"]["n"] == 8
    assert set(data["cells"][0]["metrics"]) == {"fd", "kid", "precision", "recall", "accuracy", "conv_pixel",
                                                "conv_feature"}
    assert data["labels"] == [3, 7] * 4 and "fd" in data["knees"]["DDIM"]
    assert "FD (classifier features)" in out
    fd = data["knees"]["DDIM"]["fd"]  # the settle rule's fields, in the JSON, the summary and report.md
    assert {"settled", "settled_nfe", "settle_nfe", "settle_gap", "needed_n", "against_nfe", "band"} <= set(fd)
    assert fd["n"] == 8 and fd["settled"] is not None and f"DDIM: FD (classifier features): {fd['note']}" in out
    assert "settled within 3% (NFE)" in (tmp_path / "s" / "report.md").read_text()


def test_cli_ctrl_c_writes_partial_report_and_exits_130(run_cli, tiny_model, tmp_path, monkeypatch):
    import diffuscope.sweep.run as gen_module  # the sweep calls generate from there

    real, calls = gen_module.generate, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the reference, the first cell, then Ctrl-C during the second
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_module, "generate", interrupting)
    code, out, _ = run_cli(*_fast(tiny_model, tmp_path / "s", "--prompt", "7"))
    assert code == 130 and "interrupted" in out
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert data["interrupted"] is True and [c["steps"] for c in data["cells"]] == [1]


def test_error_lines_quote_user_text_at_most_80_characters():
    from diffuscope.data import load_dataset

    for call in (lambda: parse_steps("5-" + "9" * 300), lambda: parse_steps("0-" + "5" * 300),
                 lambda: load_dataset("/nonexistent/" + "a" * 400)):
        with pytest.raises(UsageError) as e:
            call()
        assert len(str(e.value)) < 260 and "characters)" in str(e.value)
