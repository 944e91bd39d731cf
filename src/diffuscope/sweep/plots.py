"""The sweep's two pictures.

grid.png     columns = step counts ("Steps: 25"), plus the convergence reference as the last column; rows = samplers
             x the first ``grid_rows`` images (labelled with the sampler and the image's seed). Pillow only, so the
             geometry is exact: ``grid_layout`` gives every panel's position.
quality.png  one panel per metric that resolves something at this n (``plotted_metrics``; the others are named
             in the title): value vs measured NFE (log x) per sampler with its bootstrap band, the
             real-vs-real floor as a grey band, EDM's diminishing-returns point (ringed) and Kneedle's (x) per
             sampler, and a metric's absolute good-enough level (one grey level for pixel convergence) as a dashed
             line. Matplotlib (Agg), imported only here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from diffuscope.sweep.config import metric_spec
from diffuscope.sweep.series import row_label

PAD = 8
GAP = 4  # between panels
GROUP_GAP = 10  # extra space between samplers
TARGET_PANEL = 56  # panels are upscaled (nearest) to at least this many pixels
TEXT = (20, 20, 20)
DPI = 110


@dataclass(frozen=True)
class GridLayout:
    width: int
    height: int
    panel_w: int
    panel_h: int
    scale: int
    cell_w: int  # column width: max(panel, widest column header)
    label_w: int
    header_h: int
    col_x: tuple[int, ...]  # left edge of each column's panel (steps..., then the reference)
    row_y: tuple[int, ...]  # top edge of each row (sampler-major)


def grid_layout(n_rows: int, n_groups: int, n_cols: int, image_hw: tuple[int, int], label_w: int,
                header_w: int, line_h: int) -> GridLayout:
    """Geometry of the grid: a label column, a header line, n_cols x n_rows panels, groups of rows per sampler.
    Columns are max(panel, widest header) wide with the panel centred; rows are one panel high."""
    from diffuscope.viz.strips import panel_scale

    scale = panel_scale(max(image_hw), TARGET_PANEL)
    pw, ph = image_hw[1] * scale, image_hw[0] * scale
    cell_w = max(pw, header_w)
    header_h = line_h + 2 * GAP
    x0 = PAD + label_w + GAP
    col_x = tuple(x0 + c * (cell_w + GAP) + (cell_w - pw) // 2 for c in range(n_cols))
    per_group = n_rows // max(1, n_groups)
    row_y = tuple(PAD + header_h + r * (ph + GAP) + (r // max(1, per_group)) * GROUP_GAP for r in range(n_rows))
    width = x0 + n_cols * (cell_w + GAP) - GAP + PAD if n_cols else x0 + PAD
    height = (row_y[-1] + ph if n_rows else PAD + header_h) + PAD
    return GridLayout(width, height, pw, ph, scale, cell_w, label_w, header_h, col_x, row_y)


def sweep_grid(result) -> tuple[Image.Image, GridLayout]:
    """The step-comparison grid of a SweepResult (finished cells only; a missing cell stays blank)."""
    from diffuscope.viz import to_pil
    from diffuscope.viz.strips import default_font, text_size

    font = default_font()
    steps = list(result.config.steps)
    samplers = result.samplers or []
    rows = result.config.grid_rows
    if result.reference_images is not None:
        rows = min(rows, len(result.reference_images))
    shape = result.info.get("shape") or [1, 8, 8]
    labels = [f"{s}  seed {result.seed + i}" for s in samplers for i in range(rows)]
    ref = result.reference
    headers = [f"Steps: {k}" for k in steps] + [f"Ref: {row_label(ref.get('model'), ref['sampler'])} {ref['steps']}"]
    line_h = text_size("Ay", font)[1]
    label_w = max([text_size(t, font)[0] for t in labels] or [0])
    header_w = max(text_size(t, font)[0] for t in headers) + GAP
    layout = grid_layout(len(labels), len(samplers), len(headers), (shape[1], shape[2]), label_w, header_w, line_h)
    canvas = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(headers):
        w = text_size(text, font)[0]
        draw.text((layout.col_x[c] + (layout.panel_w - w) // 2, PAD), text, fill=TEXT, font=font)
    for r, text in enumerate(labels):
        y = layout.row_y[r] + (layout.panel_h - line_h) // 2
        draw.text((PAD, y), text, fill=TEXT, font=font)
    for g, sampler in enumerate(samplers):
        for c, k in enumerate(steps):
            cell = result.cell(sampler, k)
            if cell is None or cell.images is None:
                continue
            for i in range(min(rows, len(cell.images))):
                canvas.paste(to_pil(cell.images[i], layout.scale), (layout.col_x[c], layout.row_y[g * rows + i]))
        if result.reference_images is not None:
            for i in range(rows):
                canvas.paste(to_pil(result.reference_images[i], layout.scale),
                             (layout.col_x[-1], layout.row_y[g * rows + i]))
    return canvas, layout


def save_grid(result, path: str | Path) -> Path:
    from diffuscope.io.outputs import save_atomic

    grid = sweep_grid(result)[0]
    return save_atomic(path, lambda f: grid.save(f, format="PNG"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plotted_metrics(result) -> list[str]:
    """The metrics quality.png plots: those that resolve something at this n, or all when none does."""
    folded = result.unresolved_metrics
    return [k for k in result.metric_keys if k not in folded] or result.metric_keys


def save_quality(result, path: str | Path) -> Path | None:
    """quality.png (see the module notes); None when no cell has a metric."""
    from diffuscope.sweep.answer import curve_label

    folded = result.unresolved_metrics
    keys = plotted_metrics(result)
    if not keys:
        return None
    plt = _pyplot()
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        spec = metric_spec(key)
        for s_i, sampler in enumerate(result.samplers):
            color = colors[s_i % len(colors)]
            cells = sorted((c for c in result.cells if c.sampler == sampler and key in c.metrics), key=lambda c: c.nfe)
            if not cells:
                continue
            x, y = [c.nfe for c in cells], [c.metrics[key] for c in cells]
            style = "-" if cells[0].deterministic else "--"
            label = sampler if cells[0].deterministic else f"{sampler} (stochastic)"
            ax.plot(x, y, style, marker="o", ms=4, color=color, label=label)
            band = [c.intervals.get(key) for c in cells]
            if all(b is not None for b in band):
                ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], color=color, alpha=0.12, lw=0)
            knee = result.knees.get(sampler, {}).get(key)
            if knee is not None and knee.edm_nfe is not None and not knee.caveat:
                # a metric with an absolute tolerance (pixel convergence) is circled where the headline says it
                # stops changing (within one grey level, before the largest count), not at its relative 3% point
                point = knee.edm_nfe if knee.tolerance is None else knee.tolerance_nfe
                if point is not None and (knee.tolerance is None or point < max(knee.nfe)):
                    ax.plot([point], [dict(zip(knee.nfe, knee.values))[point]], "o", ms=12, mfc="none", mec=color,
                            mew=1.8)
                if knee.kneedle_nfe is not None:
                    ax.plot([knee.kneedle_nfe], [dict(zip(knee.nfe, knee.values))[knee.kneedle_nfe]], "x", ms=9,
                            color=color, mew=1.8)
                mark = curve_label(knee, max(c.steps for c in cells))  # the headline's words (answer.py)
                if mark:
                    ax.annotate(mark, (x[-1], y[-1]), textcoords="offset points", xytext=(-4, 6),
                                ha="right", fontsize=7, color=color)
        floor = (result.floor or {}).get("metrics", {}).get(key)
        if floor is not None and math.isfinite(floor):
            iv = (result.floor or {}).get("intervals", {}).get(key)
            if iv is not None:
                ax.axhspan(iv[0], iv[1], color="gray", alpha=0.18, lw=0)
            ax.axhline(floor, color="gray", ls=":", lw=1.2, label=f"real vs real (N={result.floor['n']})")
        if spec.tolerance is not None:
            ax.axhline(spec.tolerance, color="black", ls="--", lw=1, label=f"good enough ({spec.tolerance:.4g})")
        ax.set_xscale("log")
        nfes = sorted({c.nfe for c in result.cells if key in c.metrics})
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(v) for v in nfes], fontsize=7)
        ax.minorticks_off()
        if key.startswith("conv_") and all(c.metrics[key] > 0 for c in result.cells if key in c.metrics):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (measured, log scale)")
        ax.set_ylabel(spec.label + (" (higher is better)" if spec.higher_is_better else " (lower is better)"),
                      fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    title = (f"Quality vs NFE  (o = within {100 * result.config.threshold:g}% of the best (EDM rule); on "
             f"pixel convergence, where it stops changing (one grey level); x = Kneedle on log NFE)")
    if folded and len(keys) < len(result.metric_keys):
        title += (f"\nnot resolved at n = {result.config.n}, not plotted: "
                  + ", ".join(metric_spec(k).label for k in folded))
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path
