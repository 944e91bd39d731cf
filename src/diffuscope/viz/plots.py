"""Plots of the phase measurements (matplotlib, Agg backend, imported only when a plot is made).

Each function takes a result object of ``diffuscope.lesson.phases`` (read by attribute only) and a path, writes one PNG
and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    _pyplot().close(fig)
    return path


def _log_y(ax, values) -> None:
    """Log scale when the positive values span a decade or more; linear otherwise (e.g. all zero)."""
    values = [v for v in values if v > 0]  # zeros (no change at all) are left out of a log plot
    if values and max(values) / min(values) >= 10:
        ax.set_yscale("log", nonpositive="mask")
    else:
        ax.set_ylim(bottom=0)


def plot_frequency_split(freq, path: str | Path, *, title: str = "") -> Path:
    """Top: energy of the change of the predicted clean image per step, coarse and fine (log scale).
    Bottom: the coarse share of each step's change."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    steps = freq.steps
    ax1.plot(steps, freq.low, "o-", ms=3, label=f"coarse (|f| <= {freq.cutoff:g} cycles/pixel)")
    ax1.plot(steps, freq.high, "s-", ms=3, label="fine (above)")
    _log_y(ax1, [*freq.low, *freq.high])
    ax1.set_ylabel("energy of the change")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    ax1.set_title(title or "Change of the predicted clean image, step i-1 -> i")
    ax2.plot(steps, [100 * v for v in freq.low_share], "o-", ms=3, color="tab:green")
    if not math.isnan(freq.white_share):
        ax2.axhline(100 * freq.white_share, ls=":", color="gray")
        ax2.text(steps[-1], 100 * freq.white_share + 2, "white noise", ha="right", fontsize=8, color="gray")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("coarse share of the change (%)")
    ax2.set_xlabel("sampler step i")
    ax2.grid(alpha=0.3)
    _sigma_axis(ax1, steps, freq.sigmas)
    return _save(fig, path)


def _sigma_axis(ax, steps, sigmas) -> None:
    """A second x axis on top showing sigma at a few steps."""
    if not sigmas or any(math.isnan(s) for s in sigmas):
        return
    top = ax.secondary_xaxis("top")
    picks = steps[:: max(1, len(steps) // 6)]
    top.set_xticks(picks)
    top.set_xticklabels([f"{sigmas[steps.index(s)]:.2g}" for s in picks], fontsize=7)
    top.set_xlabel("sigma", fontsize=8)


def plot_commitment(commit, path: str | Path, *, title: str = "") -> Path:
    """Share of finishes keeping the class (when measured) and their pixel RMSE to the original, per step k."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(commit.points, commit.rmse, "o-", color="tab:red", label="RMSE to the original final image")
    ax.set_xlabel(f"restart step k (of {commit.steps})")
    ax.set_ylabel("pixel RMSE", color="tab:red")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if commit.keep is not None:
        ax2 = ax.twinx()
        ax2.plot(commit.points, [100 * v for v in commit.keep], "s-", color="tab:blue", label="keep the class")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("finishes keeping the class (%)", color="tab:blue")
    ax.set_title(title or f"Commitment: {commit.n} finishes from x_k with fresh noise ({commit.finish_sampler})")
    _sigma_axis(ax, commit.points, commit.sigmas)
    return _save(fig, path)


def plot_consistency(consist, path: str | Path, *, title: str = "") -> Path:
    """RMSE of each step count's result to the reference result (log-log), and class agreement when measured."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = consist.steps[:-1]
    ax.plot(steps, consist.rmse[:-1], "o-", color="tab:red")
    ax.set_xscale("log")
    _log_y(ax, consist.rmse[:-1])
    ax.minorticks_off()
    ax.set_xticks(steps)
    ax.set_xticklabels([str(s) for s in steps])
    ax.set_xlabel("sampler steps")
    ax.set_ylabel(f"RMSE to the {consist.reference_steps}-step result", color="tab:red")
    ax.grid(alpha=0.3, which="both")
    if consist.agreement is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, [100 * v for v in consist.agreement[:-1]], "s--", color="tab:blue")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("class agrees (%)", color="tab:blue")
    ax.set_title(title or f"Same noise, {consist.sampler}: how far from {consist.reference_steps} steps")
    return _save(fig, path)
