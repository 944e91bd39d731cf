"""The step sweep: a grid of (sampler x steps) from the same prompts and initial noise, measured against real
images and against a high-NFE reference, with the diminishing-returns point per sampler and reports.

    from diffuscope.sweep import SweepConfig, parse_steps, sweep, write_reports
    config = SweepConfig(steps=parse_steps("5-100 [8]"), samplers=("DDIM", "DPM++ 2M"), prompts=("7",), n=256)
    result = sweep("runs/mnist", config, on_event=print)      # or SweepInputs(any denoiser D, schedule, shape, ...)
    write_reports(result, "out/sweep")                         # grid.png, quality.png, report.{json,md,html}
    result.knees["DDIM"]["fd"].edm_nfe                         # EDM's 3% point; .kneedle_nfe, .plateaued

Modules: config (SweepConfig, step-list syntax, metric table), inputs (model -> denoiser, prompts, classifier,
real sets), measure (one image set's numbers), knee (EDM rule, Kneedle, plateau), run (the loop, Cell,
SweepResult, sweep_models), series (several models side by side: SweepModel, row labels), plots (grid.png,
quality.png), report (md/json/html).
"""

from diffuscope.metrics.floor import real_sets
from diffuscope.sweep.config import METRIC_GROUPS, METRICS, MetricSpec, SweepConfig, check_config, parse_steps
from diffuscope.sweep.inputs import SweepInputs, model_inputs, prompt_labels
from diffuscope.sweep.knee import Knee, edm_knee, find_knee, kneedle_knee, plateau
from diffuscope.sweep.report import write_reports
from diffuscope.sweep.run import Cell, SweepResult, compute_knees, sweep, sweep_models
from diffuscope.sweep.series import SweepModel

__all__ = [
    "METRICS",
    "METRIC_GROUPS",
    "Cell",
    "Knee",
    "MetricSpec",
    "SweepConfig",
    "SweepInputs",
    "SweepModel",
    "SweepResult",
    "check_config",
    "compute_knees",
    "edm_knee",
    "find_knee",
    "kneedle_knee",
    "model_inputs",
    "parse_steps",
    "plateau",
    "prompt_labels",
    "real_sets",
    "sweep",
    "sweep_models",
    "write_reports",
]
