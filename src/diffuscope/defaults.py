"""The sampling defaults shared by the commands `sample`, `reverse`, `phases`, `sweep` and `demo`. The library's
`generate` and the phase functions take DEFAULT_SAMPLER when none is named; the training previews take the guidance
(their sampler is Heun, 18 steps). The shipped model's quality bar (docs/benchmarks.md) is stated for them."""

# iPNDM (Adams-Bashforth-4 on the PF-ODE, Karras grid): on the shipped model at guidance 1.25 (N=256, the sweep's
# seeds) its FD is within 3% of its best from 15 NFE (+1.3%; UniPC +5.1%, DPM++ 2M +12.9%), and its images are the
# nearest to the converged ones at 15-25 steps; docs/benchmarks.md, session 7.
DEFAULT_SAMPLER = "iPNDM"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25  # classifier-free guidance scale (1 = off); docs/benchmarks.md: the shipped model's bar
