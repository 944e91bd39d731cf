"""The step sweep's configuration (one frozen dataclass), its step-list syntax and the metrics it can measure.

Step lists (AUTOMATIC1111's X/Y/Z-plot syntax, comma-separated parts, any mix):

    10,25,50,100       those step counts
    10-15              every integer from 10 to 15
    10-50 (+10)        10, 20, 30, 40, 50 (an increment)
    5-100 [8]          8 values GEOMETRICALLY spaced from 5 to 100, rounded: 5, 8, 12, 18, 28, 42, 65, 100.
                       Log spacing, not A1111's linear one: the quality curve is read against log NFE, so
                       equal ratios put the points evenly on that axis. Values that round to the same integer
                       are merged, so a narrow range may give fewer than 8.

The result is deduplicated and sorted ascending.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from diffuscope.checks import limits
from diffuscope.checks.errors import UsageError, choices_error, quote
from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from diffuscope.core.guidance import check_interval

MAX_STEP_VALUES = 64  # a longer list is almost certainly a typo ("1-1000")
STEP_SYNTAX = "e.g. 10,25,50,100 or 5-100 [8] or 10-50 (+10)"


@dataclass(frozen=True)
class MetricSpec:
    key: str  # the name in cells, knees and report.json
    label: str  # axis/table label
    higher_is_better: bool
    needs: str  # "features" (a classifier's features), "classify" (its predictions) or "" (pixels only)
    group: str  # the --metrics name that turns it on
    tolerance: float | None = None  # an absolute "good enough" value (lower-is-better metrics), if one is meaningful


# One 8-bit grey level in the [-1, 1] pixel range: a convergence RMSE below it is invisible in a saved PNG.
GREY_LEVEL = 2 / 255

# Every number a cell can carry, in report order. Lower is better for distances, higher for the rest.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fd", "FD (classifier features)", False, "features", "fd"),
    MetricSpec("kid", "KID", False, "features", "kid"),
    MetricSpec("precision", "precision", True, "features", "pr"),
    MetricSpec("recall", "recall", True, "features", "pr"),
    MetricSpec("accuracy", "accuracy vs prompt", True, "classify", "accuracy"),
    MetricSpec("conv_pixel", "convergence RMSE (pixels)", False, "", "convergence", tolerance=GREY_LEVEL),
    MetricSpec("conv_feature", "convergence RMSE (features)", False, "features", "convergence"),
)
METRIC_GROUPS = ("fd", "kid", "pr", "accuracy", "convergence")
DISTRIBUTION_GROUPS = ("fd", "kid", "pr")  # compare two sets: need n >= 2 (pr: n >= PR_K + 1)
CLASSIFIER_GROUPS = ("fd", "kid", "pr", "accuracy")
PR_K = 3  # k of improved precision/recall (Kynkaanniemi et al. 2019)


def metric_spec(key: str) -> MetricSpec:
    for m in METRICS:
        if m.key == key:
            return m
    raise choices_error("metric", key, [m.key for m in METRICS])


@dataclass(frozen=True)
class SweepConfig:
    steps: tuple[int, ...] = (10, 25, 50, 100)  # sampler steps per column (sorted, unique)
    samplers: tuple[str, ...] = ("DDIM", DEFAULT_SAMPLER)  # display names or ids (rows)
    prompts: tuple[str, ...] = ()  # class names; "all" = every class; images spread round-robin over them
    seed: int = 0  # image i uses seed + i in every cell: the same initial noise everywhere (-1 = random)
    n: int = 256  # images per cell
    guidance: float = DEFAULT_GUIDANCE  # classifier-free guidance scale (1 = off), as `diffuscope sample`
    guidance_interval: tuple[float, float] | None = None  # guided only where lo < sigma <= hi (None: everywhere)
    spacing: str | None = None  # sigma grid; None = the model's default (trailing discrete, karras continuous)
    reference_sampler: str = "Heun"  # the convergence reference: deterministic, second order
    reference_steps: int | None = None  # None = max(200, 2 * max(steps)), capped at T for discrete models
    metrics: tuple[str, ...] | None = None  # METRIC_GROUPS; None = all when a classifier exists, else convergence
    threshold: float = 0.03  # the tolerance, a fraction of the best value: the settle rule's band and EDM's rule
    batch_size: int = 64
    grid_rows: int = 4  # images per sampler shown in grid.png (the first ones)
    ci_resamples: int = 200  # bootstrap resamples for the intervals (0 = none)
    ci_max_n: int = 2000  # intervals only up to this n (the bootstrap's cost grows with n; its spread shrinks)
    real: str | None = None  # real images for a model without an evaluator (any data set spec): KID in features


def parse_steps(text: str | int | tuple | list) -> tuple[int, ...]:
    """Parse a step list (see the module notes) into sorted unique positive ints; malformed input -> UsageError."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if isinstance(text, tuple | list):
        values = set()
        for v in text:
            values.update(parse_steps(v))
        return _check_values(sorted(values), str(text))
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"malformed step list {quote(text)}: {STEP_SYNTAX}")
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_part(part.strip(), text))
    return _check_values(sorted(values), text)


_INT = r"(\d+)"
_MAX_DIGITS = 18  # a longer number is past every limit (and int() refuses one of over 4,300 digits)
_RANGE = re.compile(rf"^{_INT}\s*-\s*{_INT}$")
_COUNT = re.compile(rf"^{_INT}\s*-\s*{_INT}\s*\[\s*{_INT}\s*\]$")
_INCREMENT = re.compile(rf"^{_INT}\s*-\s*{_INT}\s*\(\s*\+\s*{_INT}\s*\)$")


def _parse_part(part: str, whole: str) -> list[int]:
    if re.fullmatch(_INT, part):
        if len(part) > _MAX_DIGITS:
            raise UsageError(f"{quote(part)} steps is more than the limit of {limits.MAX_STEPS} (docs/limits.md)")
        return [int(part)]
    for pattern in (_RANGE, _COUNT, _INCREMENT):
        m = pattern.match(part)
        if m:
            break
    else:
        raise UsageError(f"malformed step list {quote(whole)} (at {quote(part)}): {STEP_SYNTAX}")
    # bounded before any list is built
    if any(len(g) > _MAX_DIGITS for g in m.groups()):
        raise UsageError(f"step range {quote(part)} goes past the limit of {limits.MAX_STEPS} steps "
                         "(docs/limits.md)")
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi > limits.MAX_STEPS or (m.re.groups >= 3 and int(m.group(3)) > limits.MAX_STEPS):
        raise UsageError(f"step range {quote(part)} goes past the limit of {limits.MAX_STEPS} steps "
                         "(docs/limits.md)")
    if lo < 1 or lo > hi:
        raise UsageError(f"step range {quote(part)} must go from a positive start up to its end")
    if pattern is _RANGE:
        if hi - lo + 1 > MAX_STEP_VALUES:
            raise UsageError(f"step range {quote(part)} has {hi - lo + 1} values (at most {MAX_STEP_VALUES}): "
                             f"give a count, e.g. {lo}-{hi} [8]")
        return list(range(lo, hi + 1))
    k = int(m.group(3))
    if pattern is _INCREMENT:
        if k < 1:
            raise UsageError(f"step increment in {quote(part)} must be positive")
        return list(range(lo, hi + 1, k))
    if k < 1:
        raise UsageError(f"step count in {quote(part)} must be positive")
    if k == 1:
        return [lo]
    return [round(math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (k - 1))) for i in range(k)]


def _check_values(values: list[int], text: str) -> tuple[int, ...]:
    if not values:
        raise UsageError(f"malformed step list {quote(text)}: {STEP_SYNTAX}")
    if values[0] < 1:
        raise UsageError(f"steps must be positive integers, got {values[0]} in {quote(text)}")
    if values[-1] > limits.MAX_STEPS:
        raise UsageError(f"{values[-1]} steps is more than the limit of {limits.MAX_STEPS} (docs/limits.md)")
    if len(values) > MAX_STEP_VALUES:
        raise UsageError(f"{len(values)} step counts in {quote(text)} (at most {MAX_STEP_VALUES})")
    return tuple(values)


def parse_list(text: str | tuple | list) -> tuple[str, ...]:
    """'DDIM, DPM++ 2M' -> ('DDIM', 'DPM++ 2M'); a tuple/list passes through (stripped, empties dropped)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(s.strip() for s in items if str(s).strip())


def resolve_metrics(config: SweepConfig, has_classifier: bool) -> tuple[str, ...]:
    """The metric groups to measure. Asking for a classifier metric without a classifier is a UsageError
    (the caller adds how to train one); the default (None) is everything the inputs allow."""
    if config.metrics is None:
        return METRIC_GROUPS if has_classifier else ("convergence",)
    return tuple(config.metrics)


def check_config(config: SweepConfig) -> None:
    """Fail early, in one line, on anything the sweep cannot run (sampler names are checked by get_sampler)."""
    from diffuscope.samplers import get_sampler

    if not config.steps:
        raise UsageError("no step counts given")
    if list(config.steps) != sorted(set(config.steps)) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in config.steps):
        raise UsageError(f"steps must be unique positive integers in ascending order (use parse_steps), "
                         f"got {config.steps}")
    if not config.samplers:
        raise UsageError("no samplers given")
    ids = [get_sampler(s).id for s in config.samplers]
    if len(set(ids)) != len(ids):
        raise UsageError(f"a sampler is listed twice in {', '.join(config.samplers)}")
    ref = get_sampler(config.reference_sampler)
    if not ref.deterministic:
        raise UsageError(f"the convergence reference must be a deterministic sampler, got {quote(ref.name)} "
                         f"(e.g. Heun, DPM++ 2M)")
    if isinstance(config.n, bool) or not isinstance(config.n, int) or config.n < 1:
        raise UsageError(f"n must be a positive integer, got {quote(config.n)}")
    for group in config.metrics or ():
        if group not in METRIC_GROUPS:
            raise choices_error("metric", group, METRIC_GROUPS)
    groups = config.metrics or ()
    if config.n < 2 and any(g in DISTRIBUTION_GROUPS for g in groups):
        raise UsageError(f"n={config.n}: distribution metrics ({', '.join(DISTRIBUTION_GROUPS)}) compare sets "
                         f"of images and need n >= 2")
    if config.n < PR_K + 1 and "pr" in groups:
        raise UsageError(f"n={config.n}: precision/recall (k={PR_K} nearest neighbours) need n >= {PR_K + 1}")
    if not 0 < config.threshold < 1:
        raise UsageError(f"threshold must lie in (0, 1), e.g. 0.03 for 3%, got {config.threshold}")
    if not 0 <= config.guidance <= limits.MAX_GUIDANCE:  # also refuses NaN and inf
        raise UsageError(f"guidance must be a finite number in [0, {limits.MAX_GUIDANCE:g}], got {config.guidance}")
    limits.check_range("n", config.n, 1, limits.MAX_N)
    limits.check_range("batch size", config.batch_size, 1, limits.MAX_BATCH_SIZE)
    if config.reference_steps is not None:
        limits.check_range("reference steps", config.reference_steps, 1, limits.MAX_STEPS)
    check_interval(config.guidance_interval)
    if config.reference_steps is not None and config.reference_steps < 1:
        raise UsageError(f"reference steps must be a positive integer, got {config.reference_steps}")
    for name in ("batch_size", "grid_rows"):
        if getattr(config, name) < 1:
            raise UsageError(f"{name.replace('_', ' ')} must be a positive integer, got {getattr(config, name)}")
    if config.ci_resamples < 0 or config.ci_resamples == 1:
        raise UsageError(f"ci resamples must be 0 (none) or >= 2, got {config.ci_resamples}")


def reference_steps(config: SweepConfig, num_timesteps: int | None) -> int:
    """The convergence reference's step count: as configured, else max(200, 2 * max(steps)) (capped at T)."""
    steps = config.reference_steps or max(200, 2 * max(config.steps))
    return min(steps, num_timesteps) if num_timesteps and config.reference_steps is None else steps
