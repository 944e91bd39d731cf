"""The sampling defaults shared by the commands `sample`, `reverse`, `phases`, `sweep` and `demo`. The library's
`generate` and the phase functions take DEFAULT_SAMPLER when none is named; the training previews take the guidance
(their sampler is Heun, 18 steps). The shipped model's quality bar (docs/benchmarks.md) is stated for them."""

# UniPC (order 2, bh2, Karras grid) over DPM++ 2M: on the shipped model at guidance 1.25 (N=256, same seeds) it is
# nearer its own converged FD at 10, 15 and 20 steps (15 steps +4.2% vs +12.8%, 20 steps +1.3% vs +4.3%) and
# within one grey level of the converged pixels from 20 steps (DPM++ 2M: 50); docs/benchmarks.md.
DEFAULT_SAMPLER = "UniPC"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25  # classifier-free guidance scale (1 = off); docs/benchmarks.md: the shipped model's bar
