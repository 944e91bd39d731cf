"""``diffuscope info IMAGE.png``: print the generation parameters stored in a PNG."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="print the parameters stored in a PNG written by diffuscope")
    p.add_argument("image", metavar="IMAGE.png")
    p.add_argument("--json", action="store_true", help="print only the full JSON parameters")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks.errors import UsageError, printable
    from diffuscope.io.pngmeta import read_png_params

    text, params = read_png_params(args.image)
    if text is None and params is None:
        raise UsageError(f"{args.image} carries no generation parameters")
    if args.json:
        print(json.dumps(params, indent=2, sort_keys=True))
        return 0
    if text:  # a file's text, shown, never acted on: escape sequences and other control characters escaped
        print(printable(text, keep_newlines=True))
    if params:
        print()
        print(json.dumps(params, indent=2, sort_keys=True))
    return 0
