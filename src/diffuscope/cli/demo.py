"""``diffuscope demo``: the whole lesson on a model in one run, gathered in one report.html."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    from diffuscope.lesson.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="the whole lesson in one run: forward, reverse, step sweep, phases",
                       description="Forward strip, reverse strip and GIF, the 10/25/50/100-step sweep with its "
                                   "diminishing-returns point, and the phase measures, gathered in DIR/report.html.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", default=d.model, help=f"built-in name, checkpoint or run folder (default {d.model})")
    p.add_argument("--prompt", default=d.prompt, type=types.prompt,
                   help="prompt of the reverse strip (default: 7 for a class model; for a text model 'red apple', "
                        "and the sweep prompts 'red apple', 'crying cat', 'palm tree')")
    p.add_argument("--n", type=types.positive_int, default=d.n, help=f"images per sweep cell (default {d.n})")
    p.add_argument("--seed", type=types.non_negative_int, default=d.seed)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from diffuscope.checks.errors import UsageError
    from diffuscope.io.outputs import no_empty_folder_on_failure, prepare_out
    from diffuscope.lesson.demo import DemoConfig, run_demo

    out = prepare_out(args.out, "demo")  # the one --out rule: new or empty folder, writable, room on its disk
    if args.n < 2:
        raise UsageError(f"--n must be at least 2 for the distribution metrics, got {args.n}")
    from diffuscope.cli.progress import TqdmObserver

    bar = TqdmObserver("sweep", unit="NFE")
    try:
        with no_empty_folder_on_failure(out):  # a model that does not load leaves no empty --out behind
            report = run_demo(DemoConfig(model=args.model, prompt=args.prompt, n=args.n, seed=args.seed,
                                         device=args.device), out, on_event=bar)
    finally:
        bar.close()
    print(f"report: {report}")
    return 0
