"""``diffuscope info IMAGE.png``: print the generation parameters stored in a PNG; ``diffuscope info --model M``:
what a model is (a distilled student: its K steps, its teacher and how it samples by default)."""

from __future__ import annotations

import argparse
import json

from diffuscope.cli import args as types


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="print the parameters stored in a PNG written by diffuscope, or describe a model")
    p.add_argument("image", metavar="IMAGE.png", nargs="?", type=types.name)
    p.add_argument("--model", type=types.name, metavar="NAME_OR_PATH",
                   help="describe a model instead (a built-in name, run or checkpoint folder): a distilled student "
                        "says its K steps and its teacher")
    p.add_argument("--json", action="store_true", help="print only the full JSON parameters (or the model's record)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from diffuscope.checks.errors import UsageError, printable
    from diffuscope.io.pngmeta import read_png_params

    if (args.image is None) == (args.model is None):
        raise UsageError("give an image (IMAGE.png) or --model NAME_OR_PATH, not both")
    if args.model is not None:
        return _model_info(args.model, as_json=args.json)
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


def _model_info(ref: str, *, as_json: bool) -> int:
    """One line per fact, from the model's config.json alone (no weights load): its name and folder, kind, shape,
    and for a distilled student its K steps, teacher and default sampling."""
    from pathlib import Path

    from diffuscope.checks.errors import printable
    from diffuscope.io.checkpoint import read_manifest, resolve_checkpoint
    from diffuscope.models.load import load_config, model_name
    from diffuscope.models.student import parse_student

    if (Path(ref) / "model_index.json").is_file():
        print(f"{printable(ref)}: a diffusers pipeline folder (not a distilled student)")
        return 0
    ckpt = resolve_checkpoint(ref)
    config, run_config = load_config(ckpt)
    student = parse_student(run_config, ckpt)
    name = model_name(ckpt, run_config)
    if as_json:
        print(json.dumps({"name": name, "path": str(ckpt), "step": read_manifest(ckpt).get("step"),
                          "student": run_config.get("student")}, indent=2, sort_keys=True))
        return 0
    u = config.unet
    kind = f"{config.conditioning} conditioning" + (", latent" if config.autoencoder else "")
    print(printable(f"{name}: {u.in_channels}x{u.image_size}x{u.image_size}, {kind}, step "
                    f"{read_manifest(ckpt).get('step', 0)} ({ckpt})"))
    print(printable(f"{name} is {student.describe()}") if student else f"{printable(name)} is not a distilled student")
    return 0
