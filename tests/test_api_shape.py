"""Rules of the library's shape (issue 28, parts 3 and 4), checked on the source so that they stay true:

- one path through the core: a model's kind is asked of its conditioner and model (``has_classes``, ``has_text``,
  ``takes_prompts``, ``decode``), never tested by name outside core/conditioning.py and core/model.py, and the
  denoiser is guided only by ``DiffusionModel.guided``;
- objects instead of long signatures: no public function or method of the library takes more than 8 parameters
  (a sampler's paper knobs come as one option object: samplers.Churn, SDENoise, UniPCOptions; metrics.MetricOptions,
  ClassifierTraining).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import diffuscope

SRC = Path(diffuscope.__file__).resolve().parent
CORE_OWNERS = {SRC / "core" / "conditioning.py", SRC / "core" / "model.py"}
MAX_PARAMETERS = 8
NOT_LIBRARY = {"cli", "web", "__main__"}  # the shells: flags and routes map onto the library's config objects


def _sources():
    return [p for p in sorted(SRC.rglob("*.py")) if "egg-info" not in str(p)]


def test_the_kind_of_a_model_is_asked_only_in_the_core():
    """`grep -rn "kind ==\\|kind !=\\|is_latent" src` finds only core/conditioning.py and core/model.py."""
    pattern = re.compile(r"kind ==|kind !=|is_latent")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in _sources() if p not in CORE_OWNERS
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "ask the conditioner/model (has_classes, has_text, takes_prompts, decode):\n" + "\n".join(hits)


def test_guidance_is_wrapped_only_by_the_model():
    """CFGDenoiser is built in one place, DiffusionModel.guided (which refuses a model without a null condition)."""
    hits = [f"{p.relative_to(SRC)}:{i}" for p in _sources() if p != SRC / "core" / "model.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if "CFGDenoiser(" in line
            and not line.lstrip().startswith(("class ", "return f\"CFGDenoiser"))]
    assert not hits, "guide with model.guided(scale, interval): " + ", ".join(hits)


def _public_callables():
    for info in pkgutil.walk_packages(diffuscope.__path__, "diffuscope."):
        if info.name.split(".")[1] in NOT_LIBRARY:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    if attr == "__init__" and dataclasses.is_dataclass(obj):
                        continue  # a config object's fields are the point of it
                    value = value.__func__ if isinstance(value, staticmethod | classmethod) else value
                    if inspect.isfunction(value):
                        yield f"{module.__name__}.{name}.{attr}", value


def _count(fn) -> int:
    return sum(1 for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls"))


def test_no_public_function_takes_more_than_eight_parameters():
    counts = {name: _count(fn) for name, fn in _public_callables()}
    assert "diffuscope.generation.generate.generate" in counts and counts["diffuscope.sweep.run.sweep"] <= 8
    long = {name: n for name, n in counts.items() if n > MAX_PARAMETERS}
    assert not long, f"more than {MAX_PARAMETERS} parameters (take a config object): {long}"
