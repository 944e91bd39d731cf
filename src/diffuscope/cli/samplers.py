"""``diffuscope samplers``: list the samplers, their ids, order and cost in network evaluations."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("samplers", help="list the samplers (display names, ids, order, NFE for N steps)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.core.defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
    from diffuscope.samplers import SAMPLERS, get_sampler

    default = get_sampler(DEFAULT_SAMPLER)
    print(f"{'name':<14} {'id':<16} {'order':>5}  {'NFE(N=20)':>9}  kind")
    for spec in SAMPLERS.values():
        kind = ("deterministic" if spec.deterministic else "stochastic") + (", the default" if spec is default else "")
        print(f"{spec.name:<14} {spec.id:<16} {spec.order:>5}  {spec.nfe(20):>9}  {kind}")
    print(f"defaults: {default.name}, {DEFAULT_STEPS} steps, guidance {DEFAULT_GUIDANCE:g} (docs/samplers.md)")
    return 0
