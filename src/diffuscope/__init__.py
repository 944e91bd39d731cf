"""diffuscope: diffusion image generation end to end, made visible and measurable.

Everything meets at one contract (docs/architecture.md):

    D(x, sigma, cond=None) -> x0_hat

The top-level import stays light; import submodules (``diffuscope.core.schedules``, ``diffuscope.samplers`` ...)
for work.
"""

__version__ = "0.1.0"
