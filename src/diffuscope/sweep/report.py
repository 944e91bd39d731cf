"""The sweep's reports in an output folder: grid.png, quality.png, report.json, report.md and a self-contained
report.html (both pictures embedded as base64 data URIs). Markdown and HTML render the same sections: the set-up,
the real-vs-real floor, one table per metric (samplers x steps), the diminishing-returns points, every cell's
measured NFE and wall time, and the exact sigma grid of every cell.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from diffuscope.sweep.config import metric_spec
from diffuscope.sweep.series import row_label

Table = tuple[list[str], list[list[str]]]


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.1f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _with_ci(value, interval) -> str:
    return fmt(value) + (f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "")


def _interval(interval) -> str:
    return "" if not interval else " on ({:g}, {:g}] (guidance interval)".format(*interval)


def _models_setup(result) -> list[str]:
    """The set-up lines of a side-by-side sweep (SweepResult.models): what each model was swept with, and whose
    reference every model's convergence is measured against."""
    c, ref = result.config, result.reference
    lines = []
    for i, m in enumerate(result.models):
        role = (" (the reference model)" if i == 0 else
                f" (a distilled student of {m['student_of']})" if m.get("student_of") else "")
        where = f"{m['model_path']}, step {m.get('model_step')}" if m.get("model_path") else "a denoiser"
        lines.append(f"Model {m['name']}{role}: {where}; "
                     f"samplers {', '.join(m['samplers'])}; steps {', '.join(map(str, m['steps']))}; guidance "
                     f"{m['guidance_used']:g}{_interval(m.get('guidance_interval_used'))}; spacing "
                     f"{m.get('spacing') or 'model default'}")
    return [
        *lines, f"Batch size {c.batch_size}; every model from the same prompts and the same noise",
        f"Convergence reference: {ref.get('model')}, {ref['sampler']}, {ref['steps']} steps ({fmt(ref.get('nfe'))} "
        f"NFE, {fmt(ref.get('wall_s'), 3)} s): every model's convergence is measured against these converged "
        f"images from the same noise",
    ]


def _setup(result) -> list[str]:
    c, info, ref = result.config, result.info, result.reference
    prompts = ", ".join(map(str, info.get("prompts") or [])) or ("unconditional" if result.labels is None else "-")
    lines = [
        f"Model: {info.get('model_name', '-')} ({info.get('model_path', 'a denoiser')}, "
        f"step {info.get('model_step', '-')})",
        f"Prompts: {prompts}; n = {c.n} images per cell, image i seeded {result.seed} + i in every cell",
        f"Guidance: {info.get('guidance_used', c.guidance):g}{_interval(info.get('guidance_interval_used'))}; "
        f"spacing: {c.spacing or 'model default'}; "
        f"batch size {c.batch_size}",
        f"Samplers: {', '.join(c.samplers)}; steps: {', '.join(map(str, c.steps))}",
        f"Convergence reference: {ref['sampler']}, {ref['steps']} steps ({fmt(ref.get('nfe'))} NFE, "
        f"{fmt(ref.get('wall_s'), 3)} s), same prompts, noise, guidance and spacing",
        f"Metrics: {', '.join(result.groups)}; diminishing returns: within {100 * c.threshold:g}% of the best "
        f"(EDM rule) and Kneedle on log NFE; pixel convergence good enough at one 8-bit grey level (RMSE <= 2/255)",
        f"Total wall time: {result.wall_s:.1f} s" + ("; INTERRUPTED: partial results" if result.interrupted else ""),
    ]
    judge = info.get("classifier")
    judged_by = (judge or {}).get("kind")
    if judged_by == "features":
        lines.append(f"Real images (--real): {judge['path']}; FD/KID/precision/recall and feature convergence in "
                     f"{judge['features']}")
    elif judged_by == "retrieval":
        lines.append(f"Judge: {judge['path']}: accuracy vs prompt = retrieval top-1 (real images score "
                     f"{fmt(judge['held_out_accuracy'])}: duplicates tie); FD/KID/precision/recall and feature "
                     f"convergence in {judge.get('features', 'the retrieval space')}")
    elif judge:
        lines.append(f"Classifier: {judge['path']} (held-out accuracy "
                     f"{fmt(judge['held_out_accuracy'])}); real images: {info.get('data', '-')}")
    elif info.get("features"):
        lines.append(f"Features: {info['features']}")
    if c.ci_resamples and c.n <= c.ci_max_n:
        lines.append(f"Intervals: 95% bootstrap ({c.ci_resamples} resamples)")
    if result.models:  # side by side: each model's own line replaces the lines of one model (model to reference)
        lines = [lines[1], *_models_setup(result), *lines[5:]]
    return lines


def _floor_table(result) -> Table | None:
    f = result.floor
    if not f:
        return None
    rows = [[metric_spec(k).label, _with_ci(v, f["intervals"].get(k))] for k, v in f["metrics"].items()]
    return ["metric", f"{f['comparison']}, N = {f['n']} vs {f['n_reference']}"], rows


def _metric_table(result, key: str) -> Table:
    steps = list(result.config.steps)
    rows = []
    for s in result.samplers:
        row = [s]
        for k in steps:
            cell = result.cell(s, k)
            row.append("" if cell is None or key not in cell.metrics else
                       f"{_with_ci(cell.metrics[key], cell.intervals.get(key))} ({cell.nfe} NFE)")
        rows.append(row)
    floor = (result.floor or {}).get("metrics", {}).get(key)
    if floor is not None:
        rows.append([f"real vs real (N={result.floor['n']})", *[fmt(floor)] * len(steps)])
    return [_row_header(result), *[f"Steps: {k}" for k in steps]], rows


def _row_header(result) -> str:
    return "model · sampler" if result.models else "sampler"


def _knee_table(result) -> Table:
    rows = []
    for s, per in result.knees.items():
        for key, k in per.items():
            rows.append([s, metric_spec(key).label, f"{fmt(k.best_value)} @ {fmt(k.best_nfe)}",
                         fmt(k.edm_nfe), _settled_cell(k), fmt(k.kneedle_nfe), _tolerance_cell(k),
                         "-" if k.plateaued is None else ("yes" if k.plateaued else "NO"), k.note])
    pct = f"{100 * result.config.threshold:g}%"
    return ["sampler", "metric", "best @ NFE", f"EDM {pct} point (NFE)", f"settled within {pct} (NFE)",
            "Kneedle (NFE)", "good enough (NFE)", "plateaued", "note"], rows


def _settled_cell(k) -> str:
    """The settled point (knee.py): its NFE, 'not at n = N (n' = M)' when nothing settles, '-' when not measured."""
    if k.settled is None:
        return "-"
    if k.settled:
        return fmt(k.settled_nfe)
    return f"not at n = {k.n}" + (f" (n = {k.needed_n} would)" if k.needed_n else "")


def _tolerance_cell(k) -> str:
    """The absolute good-enough point: '-' for metrics without a tolerance, '> max NFE' when never reached."""
    if k.tolerance is None:
        return "-"
    return fmt(k.tolerance_nfe) if k.tolerance_nfe is not None else f"> {max(k.nfe)}"


def _cell_table(result) -> Table:
    rows = [[c.sampler, str(c.steps), str(c.nfe), str(c.nfe_expected), "yes" if c.deterministic else "no",
             f"{c.wall_s:.3f}", f"{c.metrics_s:.3f}"] for c in result.cells]
    return [_row_header(result), "steps", "NFE (measured)", "NFE (formula)", "deterministic", "generation s",
            "metrics s"], rows


def _grid_table(result) -> Table:
    def fmt_grid(g: dict) -> str:
        s = ", ".join(f"{v:.6g}" for v in g["sigmas"])
        return s + (f" (timesteps {', '.join(map(str, g['timesteps']))})" if "timesteps" in g else "")

    ref = result.reference
    rows = [[c.sampler, str(c.steps), c.grid["spacing"], fmt_grid(c.grid)] for c in result.cells]
    rows.append([f"reference: {row_label(ref.get('model'), ref['sampler'])}", str(ref["steps"]),
                 ref["grid"]["spacing"], fmt_grid(ref["grid"])])
    return [_row_header(result), "steps", "spacing", "sigmas (steps + 1, last = 0)"], rows


def folded_note(result) -> str | None:
    """The one-line note on the metrics folded away (SweepResult.unresolved_metrics), or None."""
    keys = result.unresolved_metrics
    if not keys:
        return None
    names = ", ".join(metric_spec(k).label for k in keys)
    return (f"Folded, not plotted: {names}: at n = {result.config.n} no step count differs from the best beyond "
            f"sampling noise for any sampler (the worst cell's 95% interval against the best); raise --n to "
            f"resolve {'it' if len(keys) == 1 else 'them'}.")


Section = tuple[str, "list[str] | Table", bool]  # (title, paragraphs or (headers, rows), folded away)


def answer_blocks(result) -> list[tuple[str, str]]:
    """(headline, detail) per sampler (answer.py): what every report leads with, before any table."""
    from diffuscope.sweep.answer import sampler_answers

    if result.interrupted:  # a partial sweep is no answer: say how far it got instead
        planned = (sum(len(m["samplers"]) * len(m["steps"]) for m in result.models)
                   or len(result.config.samplers) * len(result.config.steps))
        return [(f"Interrupted after {len(result.cells)} of {planned} cells: the numbers below are partial, not an "
                 "answer.", "")]
    return [(a.headline, a.detail) for a in sampler_answers(result)] if result.cells else []


def sections(result) -> list[Section]:
    """(title, paragraphs or (headers, rows), folded) in report order; folded sections are the tables of metrics
    that resolve nothing at this n, shown collapsed after the ones that do."""
    out: list[Section] = [("Set-up", _setup(result), False)]
    notes = list(result.notes)
    folded = result.unresolved_metrics
    if folded:
        notes.append(folded_note(result))
    if notes:
        out.append(("Notes", notes, False))
    floor = _floor_table(result)
    if floor:
        out.append(("Real-vs-real floor (the best a generated set can look at this N)", floor, False))
    for key in sorted(result.metric_keys, key=lambda k: k in folded):
        spec = metric_spec(key)
        better = "higher is better" if spec.higher_is_better else "lower is better"
        resolves = "" if key not in folded else f"; not resolved at n = {result.config.n}"
        out.append((f"{spec.label} ({better}{resolves})", _metric_table(result, key), key in folded))
    if result.knees:
        out.append(("Diminishing returns per sampler", _knee_table(result), False))
    out.append(("Cells: measured NFE and wall time", _cell_table(result), False))
    out.append(("Sigma grids (exactly what each step count meant)", _grid_table(result), False))
    return out


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(result, images: dict[str, str]) -> str:
    lines = ["# Step sweep" + (" (interrupted: partial)" if result.interrupted else ""), ""]
    blocks = answer_blocks(result)
    if blocks:
        lines += ["## The answer", ""]
        for headline, detail in blocks:
            lines += [f"**{headline}**", ""] + ([detail, ""] if detail else [])
    for name, file in images.items():
        lines += [f"![{name}]({file})", ""]
    for title, body, _ in sections(result):
        lines += [f"## {title}", ""]
        if isinstance(body, tuple):
            headers, rows = body
            lines.append("| " + " | ".join(map(_md_cell, headers)) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
        else:
            lines += [f"- {_md_cell(p)}" for p in body]
        lines.append("")
    return "\n".join(lines)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 "
        "1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}td.grid{font-family:monospace;font-size:11px;max-width:60em;word-break:break-all}"
        "img{max-width:100%;image-rendering:pixelated}summary{font-weight:bold;margin:1em 0;cursor:pointer}")


def render_html(result, images: dict[str, bytes]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>diffuscope step sweep</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Step sweep{' (interrupted: partial)' if result.interrupted else ''}</h1>"]
    blocks = answer_blocks(result)
    if blocks:
        out.append("<h2>The answer</h2>")
        for headline, detail in blocks:
            out.append(f"<p class='headline'><strong>{e(headline)}</strong></p>"
                       + (f"<p class='detail'>{e(detail)}</p>" if detail else ""))
    for name, data in images.items():
        b64 = base64.b64encode(data).decode("ascii")
        out.append(f"<h2>{e(name)}</h2><img alt='{e(name)}' src='data:image/png;base64,{b64}'>")
    for title, body, folded in sections(result):
        out.append(f"<details><summary>{e(title)}</summary>" if folded else f"<h2>{e(title)}</h2>")
        if isinstance(body, tuple):
            headers, rows = body
            grid = title.startswith("Sigma grids")
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
            for r in rows:
                tds = [f"<td class='grid'>{e(v)}</td>" if grid and i == len(r) - 1 else f"<td>{e(v)}</td>"
                       for i, v in enumerate(r)]
                out.append("<tr>" + "".join(tds) + "</tr>")
            out.append("</table>")
        else:
            out.append("<ul>" + "".join(f"<li>{e(p)}</li>" for p in body) + "</ul>")
        if folded:
            out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(result, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every output into ``out_dir`` (created); returns {name: path}. Files are replaced, never appended."""
    from diffuscope.sweep.plots import save_grid, save_quality

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if plots and result.cells:
        paths["grid.png"] = save_grid(result, out / "grid.png")
        quality = save_quality(result, out / "quality.png")
        if quality is not None:
            paths["quality.png"] = quality
    for name in ("grid.png", "quality.png"):  # a picture of an earlier sweep in this folder would mislead
        if name not in paths:
            (out / name).unlink(missing_ok=True)
    data = result.to_dict()
    _write_text(out / "report.json", json.dumps(data, indent=2, allow_nan=False))
    paths["report.json"] = out / "report.json"
    shown = {name: name for name in ("grid.png", "quality.png") if name in paths}
    _write_text(out / "report.md", render_markdown(result, shown))
    paths["report.md"] = out / "report.md"
    _write_text(out / "report.html", render_html(result, {n: paths[n].read_bytes() for n in shown}))
    paths["report.html"] = out / "report.html"
    return paths


def _write_text(path: Path, text: str) -> None:
    """Write to a temp file and rename: an interrupted write leaves the old report, never half of one."""
    from diffuscope.io.outputs import write_text_atomic

    write_text_atomic(path, text)  # a full disk: one line naming the file, no half or 0-byte file
