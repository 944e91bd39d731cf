"""The sampling defaults shared by every command and API: `sample`, `reverse`, `phases`, `sweep`, `demo` and the
training previews. The shipped model's quality bar (docs/benchmarks.md) is stated for them."""

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.25  # classifier-free guidance scale (1 = off); docs/benchmarks.md: the shipped model's bar
