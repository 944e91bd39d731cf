"""Forward/reverse pictures and the forward, reverse and phases commands (on a tiny untrained model)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from diffuscope.checks.errors import UsageError
from diffuscope.core.conditioning import ClassConditioner
from diffuscope.core.model import DiffusionModel
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, ScheduleConfig, make_schedule
from diffuscope.generation.generate import GenerationRequest
from diffuscope.io.imagefile import load_image_file
from diffuscope.lesson.forward import forward_process, parse_t_list, save_forward
from diffuscope.lesson.reverse import reverse_process, save_reverse, show_indices
from diffuscope.viz.strips import GAP, PAD, labelled_strip, strip_layout

COMMANDS = ("forward", "reverse", "phases")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small convolutions run faster on one thread


def cli_main(argv: list[str]) -> int:
    """``diffuscope.cli.main`` once these commands are registered; until then the same wiring built here."""
    import argparse
    import sys
    from importlib import import_module

    from diffuscope import cli

    if all(c in cli.COMMANDS for c in COMMANDS):
        return cli.main(argv)
    parser = cli._Parser(prog="diffuscope")
    sub = parser.add_subparsers(dest="command", parser_class=cli._Parser)
    for name in COMMANDS:
        import_module(f"diffuscope.cli.{name}").add_parser(sub)
    try:
        args: argparse.Namespace = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except UsageError as e:
        print(f"diffuscope: error: {e}", file=sys.stderr)
        return 2


def expected_width(panels: int, cell: int) -> int:
    return 2 * PAD + panels * cell + (panels - 1) * GAP


# --- forward --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("", "empty"), (" , ", "empty"), ("0,,5", "malformed"), ("0,1.5", "malformed"), ("a", "malformed"),
    ("0,1001", "outside 0..1000"), ("-1", "outside 0..1000"),
])
def test_parse_t_list_rejects_bad_lists(text, message):
    with pytest.raises(UsageError, match=message):
        parse_t_list(text, 1000)


def test_parse_t_list():
    assert parse_t_list("0, 250,500,750,1000", 1000) == [0, 250, 500, 750, 1000]


def test_forward_closed_form_and_chain_have_the_same_statistics():
    schedule = make_schedule(ScheduleConfig(kind="linear"))
    x0 = torch.rand(1, 48, 48) * 2 - 1
    r = forward_process(x0, schedule, [0, 100, 500, 1000], seed=3)
    assert torch.equal(r.closed_form[0], x0) and torch.equal(r.chain[0], x0)
    assert r.sqrt_alpha_bar[0] == 1 and math.isinf(r.snr_db[0])
    assert r.snr_db[3] == pytest.approx(-43.9, abs=0.1)  # linear T=1000: alpha_bar_1000 = 4.04e-5
    for row in (r.closed_form, r.chain):
        for i, s in enumerate(r.sqrt_alpha_bar[1:], start=1):
            noise = (row[i] - s * x0) / math.sqrt(1 - s**2)  # must be standard normal
            assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.06
    assert not torch.equal(r.closed_form[1], r.chain[1])  # different realisations, same distribution
    again = forward_process(x0, schedule, [0, 100, 500, 1000], seed=3)
    assert torch.equal(again.chain, r.chain) and torch.equal(again.closed_form, r.closed_form)


def test_continuous_forward_process_along_sigma():
    from diffuscope.lesson.forward import forward_process_sigma, sigma_frames

    sigmas = sigma_frames(0.002, 20.0, 100)
    assert len(sigmas) == 101 and sigmas[0] == 0 and sigmas[1] == pytest.approx(0.002)
    assert sigmas[-1] == pytest.approx(20.0) and sigmas[51] / sigmas[50] == pytest.approx(sigmas[2] / sigmas[1])
    x0 = torch.rand(1, 48, 48, dtype=torch.float64) * 2 - 1
    r = forward_process_sigma(x0, sigmas, seed=3)
    assert r.continuous and r.num_timesteps == 0 and r.sigma == sigmas and r.t == list(range(101))
    assert torch.equal(r.closed_form[0], x0.float()) and torch.equal(r.chain[0], x0.float())
    assert math.isinf(r.snr_db[0]) and r.snr_db[-1] == pytest.approx(-20 * math.log10(20), abs=1e-9)
    assert r.sqrt_alpha_bar[-1] == pytest.approx(1 / math.sqrt(401))  # VP scale 1 / sqrt(1 + sigma^2)
    # the closed form: one noise draw, x = x0 + sigma eps, stored in VP scale
    eps = [(r.closed_form[k].double() * math.sqrt(1 + s**2) - x0) / s for k, s in enumerate(sigmas) if s > 0]
    assert all(torch.allclose(e, eps[0], atol=1e-4) for e in eps)
    assert abs(float(eps[0].std()) - 1) < 0.05
    # the chain: independent variance increments sigma_k^2 - sigma_(k-1)^2, so x_k - x0 has std sigma_k
    ve = [r.chain[k].double() * math.sqrt(1 + s**2) for k, s in enumerate(sigmas)]
    for k in (20, 60, 100):
        assert float((ve[k] - x0).std()) / sigmas[k] == pytest.approx(1, abs=0.06)
        step = (ve[k] - ve[k - 1]) / math.sqrt(sigmas[k] ** 2 - sigmas[k - 1] ** 2)
        assert abs(float(step.std()) - 1) < 0.06
        assert abs(float(np.corrcoef(step.flatten(), (ve[k - 1] - x0).flatten())[0, 1])) < 0.06
    assert not torch.equal(r.closed_form[50], r.chain[50])  # different realisations, same distribution
    with pytest.raises(UsageError, match="ascending"):
        forward_process_sigma(x0, [0.0, 2.0, 1.0])
    with pytest.raises(UsageError, match="empty"):
        forward_process_sigma(x0, [])


def test_forward_png_has_one_panel_per_t(tmp_path):
    schedule = make_schedule(ScheduleConfig(kind="cosine", num_timesteps=200))
    x0 = torch.zeros(1, 28, 28)
    widths = {}
    for ts in ([0, 50, 100, 150, 200], [0, 40, 80, 120, 160, 200]):
        r = forward_process(x0, schedule, ts)
        png, meta = save_forward(r, tmp_path / str(len(ts)))
        with Image.open(png) as im:
            assert im.format == "PNG"
            widths[len(ts)] = im.width
        assert json.loads(meta.read_text())["t"] == ts
    assert widths[5] == expected_width(5, 84)  # 28 px panels upscaled x3; captions fit under them
    assert widths[6] - widths[5] == 84 + GAP


# --- strips ---------------------------------------------------------------------------------------------------------


def test_strip_panels_land_where_the_layout_says():
    rows = [torch.full((4, 1, 8, 8), 1.0), torch.full((4, 1, 8, 8), -1.0)]  # white row, black row
    captions = [[f"p{i}"] for i in range(4)]
    img = labelled_strip(rows, captions, row_titles=["a", "b"], title="t", scale=11)
    lay = strip_layout(2, 4, 88, 88, captions, ["a", "b"], "t")
    assert img.size == (lay.width, lay.height) and lay.width == expected_width(4, 88)
    arr = np.asarray(img.convert("L"))
    for c in range(4):
        x, y = lay.panel_box(1, c)  # the black row: every panel is black where the layout puts it
        assert arr[y : y + 88, x : x + 88].max() == 0
        assert arr[y - 1, x + 40] == 255 or arr[y + 88 + 1, x + 40] != 0  # its border is not black all round


def test_load_image_file_checks_size_and_channels(tmp_path):
    Image.fromarray(np.full((28, 28), 255, np.uint8), "L").save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(tmp_path / "big.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8), "RGB").save(tmp_path / "rgb.png")
    x = load_image_file(tmp_path / "ok.png", size=28, channels=1)
    assert x.shape == (1, 28, 28) and float(x.min()) == 1.0
    with pytest.raises(UsageError, match=r"32x32 mode L.*expected 28x28 grayscale"):
        load_image_file(tmp_path / "big.png", size=28, channels=1)
    with pytest.raises(UsageError, match=r"mode RGB \(3 channels\); expected 28x28 grayscale"):
        load_image_file(tmp_path / "rgb.png", size=28, channels=1)
    with pytest.raises(UsageError, match="not found"):
        load_image_file(tmp_path / "missing.png", size=28, channels=1)


# --- reverse --------------------------------------------------------------------------------------------------------


def test_show_indices():
    assert show_indices(50, 8) == [0, 7, 14, 21, 28, 35, 42, 49]
    assert show_indices(5, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(UsageError, match="larger than --steps"):
        show_indices(5, 6)
    with pytest.raises(UsageError, match="at least 2"):
        show_indices(5, 1)


def test_reverse_strip_and_gif(tmp_path):
    means = torch.stack([torch.full((1, 8, 8), 0.5), torch.full((1, 8, 8), -0.5)])
    den = GaussianMixtureDenoiser(means, 0.2)
    model = DiffusionModel(den, ClassConditioner(("0", "1")), (1, 8, 8))
    den.schedule = EDMSchedule()
    r = reverse_process(model, GenerationRequest(prompts=("0",), steps=12, sampler="Euler", seed=4))
    assert r.trajectory.x.shape == (12, 1, 1, 8, 8) and r.nfe == 12
    png, gif, meta = save_reverse(r, tmp_path, show=5)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width == expected_width(5, 88)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 12 + 1  # every step, then the final image
    info = json.loads(meta.read_text())
    assert info["shown_steps"] == [0, 3, 6, 8, 11] and len(info["sigmas"]) == 13


# --- the commands on a tiny untrained model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A tiny digits-size model with random weights, saved as a checkpoint (no training: milliseconds)."""
    from diffuscope.io.checkpoint import save_checkpoint
    from diffuscope.models.config import ModelConfig, build_denoiser, fit_to_data
    from helpers import TINY_UNET

    config = fit_to_data(ModelConfig(unet=TINY_UNET), image_size=8, channels=1,
                         class_names=tuple(str(d) for d in range(10)))
    torch.manual_seed(0)
    net = build_denoiser(config).net
    run = tmp_path_factory.mktemp("tiny")
    save_checkpoint(run / "checkpoints", 1, model=net, ema=net, model_config=config, run_config={}, state={})
    return run


def _one_line_error(capsys, argv, pattern):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffuscope: error:") and pattern in err[0], err


def test_reverse_command(untrained_model, tmp_path, capsys):
    out = tmp_path / "rev"
    assert cli_main(["reverse", "--model", str(untrained_model), "--prompt", "seven", "--steps", "7", "--show", "6",
                     "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "reverse.png") in printed and str(out / "reverse.gif") in printed
    with Image.open(out / "reverse.png") as im:
        assert im.width == expected_width(6, 88)
    with Image.open(out / "reverse.gif") as im:
        assert im.n_frames == 8


def test_phases_command(untrained_model, tmp_path, capsys):
    out = tmp_path / "ph"
    assert cli_main(["phases", "--model", str(untrained_model), "--steps", "4", "--n", "3", "--points", "2",
                     "--consistency-steps", "2,4", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Coarse vs fine" in printed and "Commitment" in printed and "- 2 steps: RMSE" in printed
    for name in ("frequency.png", "commitment.png", "consistency.png", "consistency_samples.png", "summary.md"):
        assert (out / name).is_file() and str(out / name) in printed
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                assert im.format == "PNG"
    data = json.loads((out / "phases.json").read_text())
    assert data["commitment"]["points"] == [0, 3] and len(data["frequency"]["steps"]) == 3


def test_phases_command_with_a_classifier(untrained_model, tmp_path, capsys, monkeypatch):
    """The classifier diffuscope.metrics finds for the model decides 'same class' (a stand-in here)."""
    from diffuscope.metrics import classifier, locate

    class Brightness:  # class 1 = brighter than average, class 0 = darker
        def predict(self, images):
            return (images.mean((1, 2, 3)) > 0).long()

    found = []

    def find(model_path):
        found.append(model_path)
        return "clf"

    monkeypatch.setattr(locate, "find_classifier", find)
    monkeypatch.setattr(classifier, "load_classifier", lambda path: Brightness())
    out = tmp_path / "ph"
    assert cli_main(["phases", "--model", str(untrained_model), "--steps", "3", "--n", "2", "--points", "2",
                     "--consistency-steps", "2,3", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert found and "classes decided by the classifier clf" in printed
    assert "keep the class" in printed and "class agrees for" in printed
    data = json.loads((out / "phases.json").read_text())
    assert len(data["commitment"]["keep_class"]) == 2 and data["consistency"]["class_agreement"][-1] == 1.0


@pytest.mark.parametrize("argv,pattern", [
    (["forward", "--data", "digits", "--t", "0,2000"], "outside 0..1000"),
    (["forward", "--data", "digits", "--t", ""], "empty"),
    (["forward", "--data", "digits", "--t", "0;5"], "malformed"),
    (["forward", "--data", "digits", "--index", "1797"], "outside 0..1796"),
    (["forward", "--data", "digits", "--schedule", "edm"], "invalid choice"),
    (["reverse", "--prompt", "7", "--steps", "4", "--show", "5"], "larger than --steps"),
    (["reverse", "--prompt", "7", "--steps", "4", "--show", "1"], "at least 2"),
    (["reverse", "--prompt", "seventy"], "unknown prompt 'seventy'"),
    (["reverse"], "--prompt is required"),
    (["phases", "--n", "1"], "--n must be at least 2"),
    (["phases", "--sampler", "Euler a"], "must be deterministic"),
    (["phases", "--consistency-steps", "10,x"], "malformed"),
    (["phases", "--guidance", "2"], "need --prompt"),
    (["phases", "--guidance-interval", "0.3,5"], "need --prompt"),
    (["phases", "--prompt", "3", "--guidance-interval=-1,5"], "0 <= LO < HI"),
])
def test_command_errors_are_one_line(untrained_model, tmp_path, capsys, argv, pattern):
    argv = [*argv, "--out", str(tmp_path / "o")]
    if argv[0] != "forward":
        argv += ["--model", str(untrained_model)]
    _one_line_error(capsys, argv, pattern)


def test_forward_command_with_a_wrong_image(tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(tmp_path / "x.png")
    _one_line_error(capsys, ["forward", "--data", "digits", "--image", str(tmp_path / "x.png"), "--out",
                             str(tmp_path / "o")], "expected 8x8 grayscale")


def test_forward_command(tmp_path, capsys):
    out = tmp_path / "f"
    assert cli_main(["forward", "--data", "digits", "--index", "3", "--t", "0,1,10,100,1000",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "forward.png") in printed and "digits #3" in printed
    with Image.open(out / "forward.png") as im:
        assert im.width == expected_width(5, 88)


def test_phases_with_a_prompt_uses_the_default_guidance(untrained_model, tmp_path, capsys):
    """`phases --prompt` without --guidance guides at DEFAULT_GUIDANCE, as its help and `sample` say."""
    from diffuscope.core.defaults import DEFAULT_GUIDANCE

    out = tmp_path / "ph"
    assert cli_main(["phases", "--model", str(untrained_model), "--prompt", "1", "--steps", "3", "--n", "2",
                     "--points", "2", "--consistency-steps", "2,3", "--out", str(out), "--device", "cpu"]) == 0
    assert f"guidance {DEFAULT_GUIDANCE:g}:" in (out / "summary.md").read_text()
    assert cli_main(["phases", "--model", str(untrained_model), "--prompt", "1", "--steps", "3", "--n", "2",
                     "--points", "2", "--consistency-steps", "2,3", "--guidance-interval", "0.5,5", "--out",
                     str(tmp_path / "lim"), "--device", "cpu"]) == 0
    assert f"guidance {DEFAULT_GUIDANCE:g} on (0.5, 5]:" in (tmp_path / "lim" / "summary.md").read_text()


def test_reverse_command_with_a_guidance_interval(untrained_model, tmp_path, capsys):
    out = tmp_path / "rev"
    assert cli_main(["reverse", "--model", str(untrained_model), "--prompt", "3", "--steps", "6", "--show", "3",
                     "--guidance", "2", "--guidance-interval", "0.5,5", "--out", str(out), "--device", "cpu"]) == 0
    assert "guidance 2 on (0.5, 5], seed 0" in capsys.readouterr().out
    assert json.loads((out / "reverse.json").read_text())["guidance_interval"] == [0.5, 5.0]
    _one_line_error(capsys, ["reverse", "--model", str(untrained_model), "--prompt", "3", "--guidance-interval", "5,0",
                             "--out", str(tmp_path / "bad")], "0 <= LO < HI")
    assert not (tmp_path / "bad").exists()


# --- the reverse strip is the image `generate` makes --------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "guidance", "interval"), [("iPNDM", 2.0, None), ("Euler a", 1.5, (0.3, 5.0)),
                                                                 ("DPM++ 2M SDE", 1.0, None)])
def test_reverse_process_matches_generate_bit_for_bit(sampler, guidance, interval):
    """`reverse_process` promises "exactly as generate does for this seed": the same final image (bit-identical),
    the same grid and NFE, and a last recorded prediction that is that image; deterministic or not, guided or not."""
    from diffuscope.generation.generate import generate
    from diffuscope.io.checkpoint import builtin_models
    from diffuscope.models.load import load_model

    if "mnist" not in builtin_models():
        pytest.skip("the shipped mnist model is not installed")
    model = load_model("mnist")
    u = model.config.unet
    shape = (u.in_channels, u.image_size, u.image_size)
    request = GenerationRequest(prompts=("3",), steps=6, sampler=sampler, guidance=guidance,
                                guidance_interval=interval, seed=11)
    r = reverse_process(model, request)
    gen = generate(model, request)
    assert torch.equal(r.trajectory.final, gen.images)
    assert torch.equal(r.trajectory.sigmas, gen.grid.sigmas.double())
    assert (r.nfe, r.seed, r.sampler, r.steps) == (gen.nfe, gen.seed, gen.sampler, gen.grid.steps)
    assert r.trajectory.x.shape == (6, 1, *shape)
    torch.testing.assert_close(r.trajectory.denoised[-1], gen.images)  # the step to sigma = 0 lands on D
    other = generate(model, replace(request, seed=12))
    assert not torch.equal(other.images, gen.images)  # the seed matters: the equality above is not vacuous
