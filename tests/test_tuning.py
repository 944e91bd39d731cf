"""Tuned step grids: the search (tuning.py) on exact denoisers, and their storage and lookup (tuned_grids.py)."""

import json
import math

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule, karras_sigmas, make_grid
from diffuscope.grids import store as tuned_grids
from diffuscope.grids import tuning
from diffuscope.samplers import get_sampler
from diffuscope.samplers.steppers import STEPPERS


def _mixture():
    g = torch.Generator().manual_seed(3)
    means = torch.randn((4, 1, 4, 4), generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(means, 0.15)


def _grid(steps, smin=0.002, smax=20.0):
    return torch.cat([karras_sigmas(steps, smin, smax), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("sampler", sorted(STEPPERS))
def test_each_stepper_reproduces_its_sampler(sampler):
    """Stepping along a grid one step at a time is the sampler function itself (same formulas, same history)."""
    d = _mixture()
    sigmas = _grid(7)
    x0 = torch.randn((3, 1, 4, 4), dtype=torch.float64) * 20.0
    expected = get_sampler(sampler).fn(d, x0, sigmas)
    step, x, hist, sig = STEPPERS[sampler], x0, (), sigmas.tolist()
    for i in range(len(sig) - 1):
        x, hist = step(x, d(x, sig[i]), sig[i], sig[i + 1], hist)
    assert torch.allclose(x, expected, atol=1e-12, rtol=0)


def test_teacher_states_follow_the_teacher_on_the_fine_grid():
    d = _mixture()
    noise = torch.randn((5, 1, 4, 4), dtype=torch.float64)
    fine = _grid(12)
    states = tuning.teacher_states(d, noise, fine, teacher="Euler", batch_size=2)
    assert states.shape == (13, 5, 1, 4, 4)
    assert torch.allclose(states[0], noise * fine[0])
    assert torch.allclose(states[-1], get_sampler("Euler").fn(d, noise * 20.0, fine))
    s0, s1 = fine[0].item(), fine[1].item()
    assert torch.allclose(states[1], torch.lerp(d(states[0], s0), states[0], s1 / s0))  # one Euler step


@pytest.mark.parametrize("sampler", ["Euler", "iPNDM"])
def test_search_finds_valid_grids_that_beat_karras_on_other_noise(sampler):
    """The tuned (and refined) grids are subsets of the fine grid from sigma_max to 0 and, on noise they were not
    tuned on, land nearer the converged images than the Karras grid with as many steps (the GITS / OSS claim, on a
    mixture)."""
    d = _mixture()
    fine = _grid(60)
    cal = torch.randn((16, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ev = torch.randn((32, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    states = tuning.teacher_states(d, cal, fine, teacher="iPNDM")
    calibration = tuning.Calibration(cal, states)
    found = tuning.search_grids(d, calibration, fine, [6, 8], sampler=sampler, batch_size=64)
    assert sorted(found) == [6, 8]
    refined = {k: tuning.refine_grid(d, calibration, fine, g, sampler=sampler, rounds=3)
               for k, g in found.items()}
    assert all(refined[k].calibration_mse <= found[k].calibration_mse for k in found)
    found = refined
    fine_values = set(fine.tolist())
    ref = tuning.solve(d, ev, _grid(400), sampler="iPNDM")
    for k, g in found.items():
        assert len(g.sigmas) == k + 1 and g.sigmas[0] == float(fine[0]) and g.sigmas[-1] == 0.0
        assert set(g.sigmas) <= fine_values and all(a > b for a, b in zip(g.sigmas, g.sigmas[1:]))
        tuned = tuning.solve(d, ev, torch.tensor(g.sigmas, dtype=torch.float64), sampler=sampler)
        karras = tuning.solve(d, ev, _grid(k), sampler=sampler)
        err_tuned = tuning.rmse_per_image(tuned, ref).mean()
        err_karras = tuning.rmse_per_image(karras, ref).mean()
        assert err_tuned < 0.8 * err_karras, (k, float(err_tuned), float(err_karras))


def test_search_rejects_what_it_cannot_do():
    d = _mixture()
    noise = torch.randn((2, 1, 4, 4), dtype=torch.float64)
    calibration = tuning.Calibration(noise, tuning.teacher_states(d, noise, _grid(10)))
    with pytest.raises(UsageError, match=r"no one-step form.*valid: Euler, DDIM"):
        tuning.search_grids(d, calibration, _grid(10), [3], sampler="Heun")
    with pytest.raises(UsageError, match="fine grid of at least 12"):
        tuning.search_grids(d, calibration, _grid(10), [12], sampler="Euler")
    with pytest.raises(UsageError, match="deterministic"):
        tuning.teacher_states(d, noise, _grid(10), teacher="Euler a")


def _doc(grids):
    doc = tuned_grids.empty()
    doc["grids"] = grids
    return doc


def test_make_grid_tuned_and_lookup(tmp_path):
    doc = _doc({"ipndm": {"3": [20.0, 2.5, 0.1, 0.0]}})
    (tmp_path / tuned_grids.TUNED_FILE).write_text(json.dumps(doc))
    schedule = EDMSchedule(0.002, 20.0)
    g = tuned_grids.grid_for(tmp_path, schedule, 3, "tuned", "ipndm")
    assert g.spacing == "tuned" and g.sigmas.tolist() == [20.0, 2.5, 0.1, 0.0] and g.steps == 3
    assert g.describe()["sigmas"] == [20.0, 2.5, 0.1, 0.0]  # what a PNG records, exactly
    assert tuned_grids.grid_for(tmp_path, schedule, 3, "karras", "ipndm").spacing == "karras"
    with pytest.raises(UsageError, match=r"no tuned grid for 4 steps \(tuned: 3\)"):
        tuned_grids.grid_for(tmp_path, schedule, 4, "tuned", "iPNDM")
    with pytest.raises(UsageError, match=r"no grids tuned for Euler on this model.*tuned samplers: iPNDM"):
        tuned_grids.grid_for(tmp_path, schedule, 3, "tuned", "Euler")
    with pytest.raises(UsageError, match="needs grids tuned"):
        make_grid(schedule, 3, "tuned")
    with pytest.raises(UsageError, match=r"grid spacing.*tuned"):
        make_grid(schedule, 3, "wiggly")


def test_a_png_s_recorded_tuned_grid_is_used_as_recorded(tmp_path):
    (tmp_path / tuned_grids.TUNED_FILE).write_text(json.dumps(_doc({"ipndm": {"2": [20.0, 1.0, 0.0]}})))
    params = {"sampler": "iPNDM", "grid": {"spacing": "tuned", "sigmas": [20.0, 3.0, 0.0]}}
    assert tuned_grids.grid_for_sample(tmp_path, "ipndm", 2, "tuned", params).sigmas.tolist() == [20.0, 3.0, 0.0]
    assert tuned_grids.grid_for_sample(tmp_path, "ipndm", 2, "tuned", {}).sigmas.tolist() == [20.0, 1.0, 0.0]
    assert tuned_grids.grid_for_sample(tmp_path, "ipndm", 2, "karras", params) is None


@pytest.mark.parametrize("bad, message", [
    ({"format": "x"}, "not a diffuscope-tuned-grids"),
    (_doc({"nope": {}}), "sampler"),
    (_doc({"euler": {"3": [20.0, 1.0, 0.0]}}), "3 \\+ 1 strictly decreasing"),
    (_doc({"euler": {"2": [1.0, 20.0, 0.0]}}), "strictly decreasing"),
    (_doc({"euler": {"2": [20.0, 1.0, 0.5]}}), "ending at 0"),
])
def test_bad_tuned_files_are_refused_in_one_line(tmp_path, bad, message):
    (tmp_path / tuned_grids.TUNED_FILE).write_text(json.dumps(bad))
    with pytest.raises(UsageError, match=message):
        tuned_grids.load_tuned(tmp_path)


def test_merge_adds_and_never_replaces():
    a = _doc({"euler": {"2": [20.0, 1.0, 0.0]}})
    b = _doc({"euler": {"3": [20.0, 2.0, 0.5, 0.0]}, "ipndm": {"2": [20.0, 2.0, 0.0]}})
    b["tuning"] = {"euler": [{"run": 2}]}
    merged = tuned_grids.merge_tuned(a, b)
    assert merged["grids"]["euler"] == {"2": [20.0, 1.0, 0.0], "3": [20.0, 2.0, 0.5, 0.0]}
    assert merged["tuning"]["euler"] == [{"run": 2}]
    assert tuned_grids.merge_tuned(merged, b)["grids"] == merged["grids"]  # the same grid again: fine
    with pytest.raises(UsageError, match="refusing to replace"):
        tuned_grids.merge_tuned(merged, _doc({"euler": {"2": [20.0, 1.5, 0.0]}}))


def test_sweep_rows_side_by_side_and_missing_step_counts(tmp_path):
    (tmp_path / tuned_grids.TUNED_FILE).write_text(json.dumps(_doc({"ipndm": {"2": [20.0, 1.0, 0.0]}})))
    schedule = EDMSchedule(0.002, 20.0)
    rows, notes = tuned_grids.sweep_rows(tmp_path, schedule, ["iPNDM"], (2, 5), "karras,tuned")
    assert [(label, sorted(per)) for label, _, per in rows] == [("iPNDM (karras)", [2, 5]), ("iPNDM (tuned)", [2])]
    assert notes and "no tuned grid at 5 steps" in notes[0]
    rows, _ = tuned_grids.sweep_rows(tmp_path, schedule, ["iPNDM"], (2,), None)
    assert rows[0][0] == "iPNDM" and rows[0][2][2].spacing == "karras"
    with pytest.raises(UsageError, match="no grids tuned for Euler"):
        tuned_grids.sweep_rows(tmp_path, schedule, ["Euler"], (2,), "tuned")
    with pytest.raises(UsageError, match="different names"):
        tuned_grids.split_spacings("karras,karras")
    assert tuned_grids.reference_spacing("karras,tuned") is None and tuned_grids.reference_spacing("logsnr") == "logsnr"


def test_the_shipped_emoji_model_ships_tuned_grids_that_beat_karras():
    from diffuscope.core.defaults import DEFAULT_SAMPLER
    from diffuscope.io.checkpoint import builtin_models, read_manifest, resolve_checkpoint

    if "emoji" not in builtin_models():
        pytest.skip("the shipped emoji model is not installed")
    ckpt = resolve_checkpoint("emoji")
    assert tuned_grids.TUNED_FILE in read_manifest(ckpt)["files"]
    assert sorted(tuned_grids.tuned_table(ckpt, DEFAULT_SAMPLER)) == [5, 8, 10, 12, 15, 20]  # 20: learned (session 12)
    record = tuned_grids.load_tuned(ckpt)["tuning"]["ipndm"][0]
    rows = {r["steps"]: r for r in record["evaluation"]["rows"]}
    assert all(rows[k]["change"] < 0 for k in (5, 8, 10, 12, 15)) and rows[20]["change"] > 0


def test_the_shipped_model_ships_tuned_grids_for_the_default_sampler():
    """`--spacing tuned` works out of the box on the shipped model: its folder's tuned_grids.json (listed in its
    manifest) holds iPNDM grids from its sigma_max at the tuned step counts."""
    from diffuscope.core.defaults import DEFAULT_SAMPLER
    from diffuscope.io.checkpoint import read_manifest, resolve_checkpoint
    from diffuscope.models.load import load_config

    ckpt = resolve_checkpoint("mnist")
    assert tuned_grids.TUNED_FILE in read_manifest(ckpt)["files"]
    table = tuned_grids.tuned_table(ckpt, DEFAULT_SAMPLER)
    assert sorted(table) == [5, 8, 10, 12, 15, 20]
    sigma_max = load_config(ckpt)[0].schedule.sigma_max
    for steps in table:
        grid = tuned_grids.grid_for(ckpt, None, steps, "tuned", DEFAULT_SAMPLER)
        assert grid.steps == steps and float(grid.sigmas[0]) == sigma_max


@pytest.mark.parametrize("sampler", ["Euler", "iPNDM", "iPNDM v"])
def test_differentiable_steppers_pass_gradients_to_the_step_times(sampler):
    """The gradient of the final error with respect to the step times, through the (exact) denoiser and the
    stepper, matches central finite differences: what learn_grid descends is the true slope."""
    d = _mixture()
    noise = torch.randn((4, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.randn((4, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    step = STEPPERS[get_sampler(sampler).id]
    logits = tuning._logits_from_grid(_grid(5).tolist(), math.log(0.002))

    def loss(z):
        sigmas = tuning._grid_from_logits(z, math.log(20.0), math.log(0.002))
        return ((tuning._final(d, step, noise * sigmas[0], (), sigmas, None) - target) ** 2).mean()

    z = logits.clone().requires_grad_(True)
    loss(z).backward()
    eps = 1e-6
    for i in range(len(z)):
        e = torch.zeros_like(logits)
        e[i] = eps
        numeric = (loss(logits + e) - loss(logits - e)) / (2 * eps)
        assert float(z.grad[i]) == pytest.approx(float(numeric), rel=1e-4, abs=1e-9)


def test_logits_round_trip_a_grid_and_any_logits_give_a_valid_grid():
    sigmas = tuning._grid_from_logits(tuning._logits_from_grid(_grid(6).tolist(), math.log(0.001)),
                                      math.log(20.0), math.log(0.001))
    assert torch.allclose(sigmas, _grid(6), rtol=1e-9, atol=0)
    z = torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    s = tuning._grid_from_logits(z, math.log(80.0), math.log(0.002))
    assert len(s) == 10 and s[0] == pytest.approx(80.0) and s[-1] == 0
    assert bool((s[:-1] > s[1:]).all()) and float(s[-2]) >= 0.002 * (1 - 1e-12)


@pytest.mark.parametrize("sampler", ["Euler", "iPNDM"])
def test_learned_step_times_lower_the_error_on_other_noise(sampler):
    """Learning from the search's grid lowers the calibration error, and the gain holds on noise it never saw
    (what LD3 claims; on a mixture, against a 400-step solution)."""
    d = _mixture()
    fine = _grid(40)
    cal = torch.randn((32, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ev = torch.randn((64, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    states = tuning.teacher_states(d, cal, fine, teacher="iPNDM")
    calibration = tuning.Calibration(cal, states)
    grid = tuning.search_grids(d, calibration, fine, [4], sampler=sampler)[4]
    learned = tuning.learn_grid(d, calibration, grid, sampler=sampler, sigma_min=0.002,
                                learning=tuning.Learning(iterations=60, learning_rate=0.05, batch_size=16))
    assert learned is not grid and learned.calibration_mse < 0.95 * grid.calibration_mse
    assert len(learned.sigmas) == 5 and learned.sigmas[0] == pytest.approx(20.0) and learned.sigmas[-1] == 0
    assert all(a > b for a, b in zip(learned.sigmas, learned.sigmas[1:]))
    ref = tuning.solve(d, ev, _grid(400), sampler="iPNDM")

    def err(g):
        out = tuning.solve(d, ev, torch.tensor(g.sigmas, dtype=torch.float64), sampler=sampler)
        return float(tuning.rmse_per_image(out, ref).mean())

    assert err(learned) < err(grid)


def test_learning_keeps_the_grid_when_it_cannot_improve_and_refuses_other_samplers():
    d = _mixture()
    fine = _grid(20)
    cal = torch.randn((8, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    states = tuning.teacher_states(d, cal, fine, teacher="iPNDM")
    calibration = tuning.Calibration(cal, states)
    grid = tuning.search_grids(d, calibration, fine, [3], sampler="Euler")[3]
    none = tuning.Learning(iterations=0)
    assert tuning.learn_grid(d, calibration, grid, sampler="Euler", sigma_min=0.002, learning=none) is grid
    # the teacher's images are the grid's own: nothing can beat zero error, the grid comes back unchanged
    own = tuning.solve(d, cal, torch.tensor(grid.sigmas, dtype=torch.float64), sampler="Euler")
    perfect = tuning.TunedGrid(3, grid.sigmas, 0.0)
    assert tuning.learn_grid(d, tuning.Calibration(cal, own[None]), perfect, sampler="Euler", sigma_min=0.002,
                             learning=tuning.Learning(iterations=5, learning_rate=0.5)) is perfect
    with pytest.raises(UsageError, match=r"differentiable in sigma.*valid: Euler"):
        tuning.learn_grid(d, calibration, grid, sampler="DPM++ 2M", sigma_min=0.002)
