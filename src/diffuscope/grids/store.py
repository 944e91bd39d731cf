"""Tuned step grids stored with a model: ``tuned_grids.json`` in its checkpoint folder, keyed by sampler and steps.

    {"format": "diffuscope-tuned-grids", "version": 1,
     "grids": {"ipndm": {"10": [20.0, ..., 0.0], ...}, ...},      # sampler id -> steps -> exact sigmas
     "tuning": {"ipndm": [{...how they were found: one record per tune-steps run...}]}}

``--spacing tuned`` resolves here: the grid tuned for the sampler in use at that step count (``make_grid`` with
``tuned=tuned_table(...)``). Sigmas are stored rounded to 6 decimals, as ``SigmaGrid.describe`` writes them into a
PNG's parameters, so the grid read back from a PNG (``sample --from``) is the very same grid.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.schedules import TUNED, Schedule, SigmaGrid, check_sigmas, make_grid, tuned_sigma_grid
from diffuscope.samplers import get_sampler

TUNED_FILE = "tuned_grids.json"
FORMAT = "diffuscope-tuned-grids"
VERSION = 1


def round_sigmas(sigmas) -> list[float]:
    return [round(float(s), 6) for s in sigmas]


def empty() -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "grids": {}, "tuning": {}}


def check_tuned(data: Any, source: str = "tuned grids") -> dict[str, Any]:
    """Validate a tuned-grids document (one line per problem, naming ``source``); returns it."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise UsageError(f"{source} is not a {FORMAT} v{VERSION} file")
    grids = data.get("grids")
    if not isinstance(grids, dict):
        raise UsageError(f"{source}: 'grids' must map sampler ids to {{steps: sigmas}}")
    for sampler, table in grids.items():
        get_sampler(sampler)
        if not isinstance(table, dict):
            raise UsageError(f"{source}: grids[{quote(sampler)}] must map step counts to sigmas")
        for steps, sigmas in table.items():
            try:
                ok = int(steps) == len(sigmas) - 1 >= 1
                check_sigmas(torch.tensor(sigmas, dtype=torch.float64))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise UsageError(f"{source}: grids[{quote(sampler)}][{quote(steps)}] must be {steps} + 1 strictly "
                                 f"decreasing sigmas ending at 0")
    return data


def load_tuned(model_dir: str | Path) -> dict[str, Any]:
    """The model folder's tuned grids (an empty document when it has none)."""
    from diffuscope.io.checkpoint import verify_listed

    path = Path(model_dir) / TUNED_FILE
    if not path.is_file():
        return empty()
    verify_listed(model_dir, TUNED_FILE)  # in a checkpoint: listed in its manifest, size and sha256 unchanged
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable: {e}") from None
    return check_tuned(data, str(path))


def tuned_table(model_dir: str | Path, sampler: str) -> dict[int, list[float]]:
    """{steps: sigmas} tuned for ``sampler`` on the model in ``model_dir`` (empty when none)."""
    table = load_tuned(model_dir)["grids"].get(get_sampler(sampler).id, {})
    return {int(k): v for k, v in table.items()}


def tuned_grid(model_dir: str | Path, sampler: str, steps: int) -> SigmaGrid:
    """The grid tuned for ``sampler`` at ``steps``; a UsageError names what is tuned when it is missing."""
    table = tuned_table(model_dir, sampler)
    if not table:
        tuned = load_tuned(model_dir)["grids"]
        have = ", ".join(get_sampler(s).name for s in tuned) or "none"
        raise UsageError(f"no grids tuned for {get_sampler(sampler).name} on this model (tuned samplers: {have}); "
                         f"run `diffuscope tune-steps --model M --sampler S --steps ... --out DIR --install`")
    return tuned_sigma_grid(table, steps)


def grid_for(model_dir: str | Path | None, schedule: Schedule, steps: int, spacing: str | None, sampler: str
             ) -> SigmaGrid:
    """``make_grid`` for any spacing, the model's tuned grid for ``sampler`` when ``spacing`` is "tuned"."""
    if spacing != TUNED:
        return make_grid(schedule, steps, spacing)
    if model_dir is None:
        raise UsageError("spacing 'tuned' needs a model folder (its tuned_grids.json)")
    return tuned_grid(model_dir, sampler, steps)


def grid_for_sample(model_dir: str | Path, sampler: str, steps: int, spacing: str | None,
                    params: dict | None = None) -> SigmaGrid | None:
    """The hook for ``sample``: None unless ``spacing`` is "tuned" (then ``make_grid`` does as before). With the
    parameters of a PNG (``--from``) tuned for the same sampler and steps, its recorded sigmas, exactly."""
    if spacing != TUNED:
        return None
    recorded = (params or {}).get("grid") or {}
    same = (params or {}).get("sampler") and get_sampler(params["sampler"]).id == get_sampler(sampler).id
    if same and recorded.get("spacing") == TUNED and len(recorded.get("sigmas", [])) == steps + 1:
        sigmas = torch.tensor([float(s) for s in recorded["sigmas"]], dtype=torch.float64)
        try:
            check_sigmas(sigmas)
        except ValueError as e:
            raise UsageError(f"the recorded tuned grid is not a valid grid: {e}") from None
        return SigmaGrid(sigmas, TUNED)
    return tuned_grid(model_dir, sampler, steps)


def merge_tuned(base: dict[str, Any], new: dict[str, Any], replace: Collection[str] = ()) -> dict[str, Any]:
    """``base`` with ``new``'s grids added. A grid already stored for a (sampler, steps) is replaced only where
    ``replace`` names those steps (the caller has measured the new one better); elsewhere a different one raises."""
    out = json.loads(json.dumps(check_tuned(base)))
    for sampler, table in check_tuned(new)["grids"].items():
        mine = out["grids"].setdefault(sampler, {})
        for steps, sigmas in table.items():
            if steps in mine and mine[steps] != sigmas and steps not in replace:
                raise UsageError(f"a different grid is already tuned for {get_sampler(sampler).name} at {steps} "
                                 f"steps: refusing to replace it (re-tune with --replace, which measures both)")
            mine[steps] = sigmas
        out["tuning"].setdefault(sampler, []).extend(new.get("tuning", {}).get(sampler, []))
    return out


def split_spacings(spacing: str | None) -> list[str | None]:
    """``--spacing karras,tuned`` -> ["karras", "tuned"] (the sweep compares them side by side); None -> [None]."""
    if spacing is None:
        return [None]
    parts = [p.strip() for p in spacing.split(",")]
    if any(not p for p in parts) or len(set(parts)) != len(parts):
        raise UsageError(f"spacing must be one name or a comma-separated list of different names, got {quote(spacing)}")
    return parts


def sweep_rows(model_dir: str | Path | None, schedule: Schedule, samplers, steps, spacing: str | None):
    """The sweep's rows: (label, sampler spec, {steps: grid}) per sampler and spacing, and notes. With several
    spacings the label is "Sampler (spacing)"; a tuned row holds only the step counts tuned for its sampler (the
    others are named in a note, never silently replaced by another grid)."""
    spacings = split_spacings(spacing)
    rows, notes = [], []
    for s in samplers:
        spec = get_sampler(s)
        for sp in spacings:
            label = spec.name if len(spacings) == 1 else f"{spec.name} ({sp or 'default'})"
            if sp == TUNED:
                table = tuned_table(model_dir, spec.name) if model_dir is not None else {}
                missing = [k for k in steps if k not in table]
                if len(missing) == len(steps):
                    tuned_grid(model_dir, spec.name, steps[0]) if model_dir is not None else grid_for(
                        None, schedule, steps[0], sp, spec.name)  # raises, naming what is tuned
                if missing:
                    notes.append(f"{label}: no tuned grid at {', '.join(map(str, missing))} steps (tuned: "
                                 f"{', '.join(map(str, sorted(table)))}): those cells are not run")
                grids = {k: tuned_sigma_grid(table, k) for k in steps if k in table}
            else:
                grids = {k: make_grid(schedule, k, sp) for k in steps}
            rows.append((label, spec, grids))
    return rows, notes


def reference_spacing(spacing: str | None) -> str | None:
    """The spacing of the sweep's high-NFE reference: the asked one when it is a single formula, else the model's
    default (no grid is tuned at the reference's step count)."""
    spacings = split_spacings(spacing)
    return spacings[0] if len(spacings) == 1 and spacings[0] != TUNED else None
