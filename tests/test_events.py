"""Long work reports Progress events and stops at a CancelToken: generation, the sweep, the phase measures and
training (events.py). tqdm (cli/progress.py) and the web page are two observers of the same events."""

import threading

import pytest
import torch

from diffuscope.core.conditioning import ClassConditioner
from diffuscope.core.events import Cancelled, CancelToken, Progress
from diffuscope.core.model import DiffusionModel
from diffuscope.core.reference import GaussianMixtureDenoiser
from diffuscope.core.schedules import EDMSchedule
from diffuscope.generation.generate import GenerationRequest, generate


@pytest.fixture
def model():
    means = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), 1.0)])
    den = GaussianMixtureDenoiser(means, 0.3)
    den.schedule = EDMSchedule()
    return DiffusionModel(den, ClassConditioner(("a", "b")), (1, 4, 4))


def test_generation_reports_every_step_and_stops_when_cancelled(model):
    events = []
    generate(model, GenerationRequest(prompts=("a",), n=3, steps=5, batch_size=2), observer=events.append)
    assert [e.task for e in events] == ["generate"] * 10  # 5 steps x 2 batches
    assert [e.done for e in events[:5]] == [1, 2, 3, 4, 5] and all(e.total == 5 for e in events)
    token = CancelToken()

    seen = []

    def cancel_at_step_2(event: Progress) -> None:
        seen.append(event.done)
        if event.done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        generate(model, GenerationRequest(prompts=("a",), n=2, steps=8), observer=cancel_at_step_2, cancel=token)
    assert seen == [1, 2]  # stopped at the check after step 3: never reported


def test_a_cancelled_sweep_returns_a_valid_partial_result(model):
    from diffuscope.sweep import SweepConfig, sweep

    token = CancelToken()
    seen = []

    def watch(event: Progress) -> None:
        seen.append(event)
        if event.message.startswith("Euler 4"):
            token.cancel()

    result = sweep(model, SweepConfig(steps=(2, 4, 8), samplers=("Euler",), prompts=("a",), n=2, reference_steps=16,
                                      metrics=("convergence",)), on_event=watch, cancel=token)
    assert result.interrupted and [c.steps for c in result.cells] == [2]
    assert seen[-1].task == "sweep" and seen[-1].done < seen[-1].total


def test_phases_report_progress_within_their_announced_total(model):
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases

    events = []
    config = PhasesConfig(prompt="b", steps=4, n=2, points=2, consistency_steps=(2, 4))
    measure_phases(model, config, on_event=events.append)
    assert events and all(e.task == "phases" for e in events)
    assert events[-1].done == events[-1].total  # the announced total is what was called


def test_training_reports_steps_and_a_cancel_from_another_thread_stops_it(tmp_path):
    from diffuscope.training import train
    from diffuscope.training.config import preset

    cfg = preset("digits")
    from dataclasses import replace

    cfg = replace(cfg, train=replace(cfg.train, max_steps=200, checkpoint_every=2, sample_every=0, device="cpu"))
    token, events = CancelToken(), []

    def watch(event: Progress) -> None:
        events.append(event)
        if event.done == 3:  # cancelled from another thread, which is done before step 3's report returns
            canceller = threading.Thread(target=token.cancel)
            canceller.start()
            canceller.join()

    with pytest.raises(Cancelled):
        train(cfg, tmp_path / "run", on_event=watch, cancel=token)
    assert events[0].task == "train" and events[0].total == 200 and "loss" in events[0].data
    assert [e.done for e in events] == [1, 2, 3]  # step 4 found the token cancelled


def test_progress_denoiser_counts_calls_passes_cond_and_checks_the_token():
    from diffuscope.core.events import ProgressDenoiser

    calls = []

    def denoiser(x, sigma, cond=None):
        calls.append(cond)
        return x * 0.5

    denoiser.schedule = EDMSchedule()
    token, events = CancelToken(), []
    wrapped = ProgressDenoiser(denoiser, "sweep", 3, events.append, token)
    assert wrapped.schedule is denoiser.schedule and (wrapped.done, wrapped.stage) == (0, "")
    assert torch.equal(wrapped(torch.ones(2), 1.0, "c"), torch.full((2,), 0.5))
    wrapped.stage = "Euler 4"
    wrapped(torch.ones(2), 0.5)
    assert calls == ["c", None]
    assert [(e.task, e.done, e.total, e.message) for e in events] == [("sweep", 1, 3, ""), ("sweep", 2, 3, "Euler 4")]
    token.cancel()
    with pytest.raises(Cancelled, match=r"^cancelled$"):
        wrapped(torch.ones(2), 0.25)
    assert len(calls) == 2  # checked before the call: the network is not run

    late = CancelToken()

    def cancel_inside(x, sigma, cond=None):  # cancelled during the call: its event is not reported
        late.cancel()
        return x

    inside, seen = ProgressDenoiser(cancel_inside, "phases", 1, events.append, late), len(events)
    with pytest.raises(Cancelled):
        inside(torch.ones(1), 1.0)
    assert len(events) == seen and inside.schedule is None
