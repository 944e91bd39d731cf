"""The command line: ``diffuscope <command> ...``. Flags map onto config dataclasses; the work lives elsewhere.

Bad input (``UsageError`` or a bad flag) prints one line, ``diffuscope: error: ...``, and exits with code 2;
a training run that cannot go on (``TrainingError``: non-finite loss, full disk) prints one line and exits 1;
stdout closed by its reader (``| head``) ends quietly with 141, as Unix tools do.
"""

from __future__ import annotations

import argparse
import sys

from diffuscope.checks.errors import UsageError, one_line

COMMANDS = ("demo", "train", "distill", "sample", "info", "samplers", "sweep", "classifier", "forward", "reverse",
            "phases", "tune_steps", "invert", "autoencoder", "serve")  # module names; tune_steps registers `tune-steps`


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage block first)
        raise UsageError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    parser = _Parser(prog="diffuscope", description="Diffusion image generation, end to end, made measurable.")
    from diffuscope import __version__

    parser.add_argument("--version", action="version", version=f"diffuscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        import_module(f"diffuscope.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # what a command records of how it was run
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except UsageError as e:
        print(f"diffuscope: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from diffuscope.checks.validate import NonFiniteError
        from diffuscope.training.loop import TrainingError

        if not isinstance(e, TrainingError | NonFiniteError):
            raise
        print(f"diffuscope: error: {one_line(str(e))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout closed early (`diffuscope ... | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        return 141  # 128 + SIGPIPE
    except OSError as e:  # a read-only or full file system, met after the up-front checks: one line, not a traceback
        from diffuscope.io.outputs import os_error_line

        print(f"diffuscope: error: {one_line(os_error_line(e))}", file=sys.stderr)
        return 1
    except MemoryError:
        print("diffuscope: error: out of memory (ask for fewer images, steps or a smaller batch)", file=sys.stderr)
        return 1
    except Exception as e:
        if not _is_write_error(e):
            raise
        print(f"diffuscope: error: {one_line(str(e), 200)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("diffuscope: interrupted", file=sys.stderr)
        return 130


def _is_write_error(e: Exception) -> bool:
    """safetensors reports a failed write (a full disk) as SafetensorError, a plain Exception."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, SafetensorError)
