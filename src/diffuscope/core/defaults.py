"""The sampling defaults shared by the commands `sample`, `reverse`, `phases`, `sweep` and `demo`, the page and the
library: a ``GenerationRequest`` (generation/generate.py) takes DEFAULT_SAMPLER and DEFAULT_STEPS when none is named,
as `diffuscope sample` and the page's generate form do; the training previews take the guidance (their sampler is
Heun, 18 steps). The shipped model's quality bar (docs/benchmarks.md) is stated for them."""

# iPNDM (Zhang & Chen 2023; Adams-Bashforth-4 on the PF-ODE, Karras grid): on the shipped model its images are the
# nearest to the converged ones at the default steps (the sweep behind this choice: docs/benchmarks.md).
DEFAULT_SAMPLER = "iPNDM"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25  # classifier-free guidance scale (1 = off); the shipped model's quality bar is stated for it
