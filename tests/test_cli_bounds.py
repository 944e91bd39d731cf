"""Every argument of every subcommand is bounded or checked (issue 29): this walks the real argparse parsers of
``src/diffuscope/cli/``, so a flag added later without a bound fails here.

- a numeric flag refuses a huge value, NaN, inf and -1 (unless -1 is documented, as a random seed) in one line
  with exit 2, at parse time; where a value passes the parser, the command refuses it before any work;
- a path flag naming something that does not exist (inputs) or a file (``--out``) is one line, exit 2, naming the
  path, before any work, and nothing is written.
"""

from __future__ import annotations

import argparse

import pytest

from diffuscope.checks.errors import UsageError
from diffuscope.cli import build_parser
from hardening_helpers import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

HUGE = ["9" * 30, "1e400", "nan", "inf", "-inf"]
NEGATIVE_OK = {"--seed"}  # -1 = a random seed (reported), documented
# Numbers whose range depends on other flags: the parser takes any int/float, the command refuses before any work.
RUN_CHECKED = {
    ("reverse", "--show"): ["reverse", "--model", "/nonexistent", "--steps", "10", "--show"],
    ("phases", "--n"): ["phases", "--model", "/nonexistent", "--n"],
    ("phases", "--cutoff"): ["phases", "--model", "/nonexistent", "--cutoff"],
}
# Flags whose value is a list or a name that a command parses in run(): argv that must fail there, in one line.
LIST_FLAGS = {
    ("sweep", "--steps"): ["sweep", "--model", "mnist", "--prompt", "7", "--steps", "1000000000"],
    ("sweep", "--samplers"): ["sweep", "--model", "mnist", "--prompt", "7", "--samplers", "nope"],
    ("sweep", "--metrics"): ["sweep", "--model", "mnist", "--prompt", "7", "--metrics", "nope"],
    ("sweep", "--model"): ["sweep", "--model", "mnist", "--model", "mnist", "--prompt", "7"],  # repeatable, not twice
    ("forward", "--t"): ["forward", "--data", "digits", "--t", "1000000000"],
    ("phases", "--consistency-steps"): ["phases", "--model", "mnist", "--consistency-steps", "1000000000"],
    ("tune-steps", "--steps"): ["tune-steps", "--model", "mnist", "--steps", "1000000000"],
    ("tune-steps", "--sampler"): ["tune-steps", "--model", "mnist", "--sampler", "nope"],
    ("tune-steps", "--teacher"): ["tune-steps", "--model", "mnist", "--teacher", "nope"],
    ("invert", "--sampler"): ["invert", "--model", "mnist", "--image", "x.png", "--sampler", "nope"],
    ("invert", "--spacing"): ["invert", "--model", "mnist", "--image", "IMG", "--spacing", "nope"],
}
# Text flags that are neither numbers nor paths (free text checked elsewhere, or a server's address).
TEXT_FLAGS = {"--host", "--token", "--allow-host"}
PATH_FLAGS = {"--out", "--model", "--data", "--image", "--from", "--config", "--autoencoder", "--classifier",
              "--real", "--resume", "image"}
# What each command needs besides the path under test (nothing here does any work before the path is checked).
BASE = {
    "demo": [], "train": ["--data", "digits"], "distill": ["--model", "mnist", "--steps", "4"],
    "sample": ["--model", "mnist", "--prompt", "7"], "sweep": ["--model", "mnist", "--prompt", "7"],
    "classifier": ["--data", "digits"], "forward": ["--data", "digits"],
    "reverse": ["--model", "mnist", "--prompt", "7"], "phases": ["--model", "mnist"],
    "tune-steps": ["--model", "mnist"], "invert": ["--model", "mnist", "--image", "IMG"], "autoencoder": [],
    "info": [],
}
NOT_RUN = {"serve", "samplers"}  # serve starts a server (tests/test_web_api.py); samplers takes no arguments


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flag(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def _is_numeric(action: argparse.Action) -> bool:
    if action.type in (int, float):
        return True
    if action.type is None or isinstance(action, argparse._StoreConstAction | argparse._HelpAction):
        return False
    for text in ("1", "8", "32", "0", "0.5"):  # a number type accepts one of these (ranges differ)
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, UsageError, ValueError, TypeError):
            continue
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False


COMMANDS = _commands()
NUMERIC = [(cmd, _flag(a)) for cmd, p in COMMANDS.items() for a in p._actions if _is_numeric(a)]


def test_the_walk_finds_the_flags():
    assert len(COMMANDS) >= 14 and len(NUMERIC) >= 60, (len(COMMANDS), len(NUMERIC))


def test_every_argument_is_classified():
    """A flag added later must be a bounded number, a checked path, a choice, a switch, or listed above."""
    unknown = []
    for cmd, p in COMMANDS.items():
        for a in p._actions:
            flag = _flag(a)
            if (isinstance(a, argparse._StoreConstAction | argparse._HelpAction) or a.choices or _is_numeric(a)
                    or flag in PATH_FLAGS | TEXT_FLAGS or (cmd, flag) in LIST_FLAGS):
                continue
            if getattr(a.type, "__name__", "") in ("name", "prompt", "interval"):  # checked text types
                continue
            unknown.append(f"{cmd} {flag}")
    assert not unknown, f"unclassified arguments (bound them, or list them in this test): {unknown}"


@pytest.mark.parametrize("cmd, flag", NUMERIC, ids=[f"{c} {f}" for c, f in NUMERIC])
def test_every_numeric_flag_is_bounded(cmd, flag):
    p = COMMANDS[cmd]
    action = next(a for a in p._actions if _flag(a) == flag)
    assert action.type not in (int, float) or action.choices, f"{cmd} {flag}: plain {action.type.__name__}"
    values = HUGE + ([] if flag in NEGATIVE_OK else ["-1"])
    if (cmd, flag) in RUN_CHECKED:  # bounded at parse time all the same; -1 is test_run_checked_numbers' case
        values = HUGE
    for value in values:
        if action.choices and action.type in (int, float):
            try:
                ok = action.type(value) in action.choices
            except (ValueError, OverflowError):
                ok = False
            assert not ok, (cmd, flag, value)
            continue
        with pytest.raises(UsageError, match=f"argument {flag}") as e:
            p.parse_args([flag, value])
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("key", sorted(RUN_CHECKED), ids=[" ".join(k) for k in sorted(RUN_CHECKED)])
def test_run_checked_numbers_are_refused_before_work(capsys, tmp_path, key):
    """Values the parser lets through (-1, 0, 10^6) are refused by the command before the model loads."""
    for value in ("-1", "0", "1000000"):
        one_line_error(capsys, [*RUN_CHECKED[key], value, "--out", str(tmp_path / "o")], pattern=key[1])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", sorted(LIST_FLAGS), ids=[" ".join(k) for k in sorted(LIST_FLAGS)])
def test_list_and_name_flags_are_checked_before_work(capsys, tmp_path, key):
    argv = [str(tmp_path / "x.png") if a in ("x.png", "IMG") else a for a in LIST_FLAGS[key]]
    _png(tmp_path / "x.png")
    one_line_error(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def _png(path):
    from PIL import Image

    Image.new("L", (28, 28)).save(path)


PATH_CASES = [(cmd, _flag(a)) for cmd, p in COMMANDS.items() if cmd not in NOT_RUN for a in p._actions
              if _flag(a) in PATH_FLAGS]


def test_path_flags_are_all_run():
    assert {c for c, _ in PATH_CASES} >= {"sample", "train", "invert", "tune-steps", "autoencoder", "reverse"}


@pytest.mark.parametrize("cmd, flag", PATH_CASES, ids=[f"{c} {f}" for c, f in PATH_CASES])
def test_every_path_flag_is_checked_before_work(capsys, tmp_path, cmd, flag):
    _png(tmp_path / "img.png")
    (tmp_path / "a-file").write_text("precious")
    base = [str(tmp_path / "img.png") if a == "IMG" else a for a in BASE[cmd]]
    out = tmp_path / "o"
    if flag == "--out":  # a file: refused naming it, before the model, data or image is even looked at
        argv = [cmd, *base, "--out", str(tmp_path / "a-file")]
        if "--model" in base:
            argv[argv.index("--model") + 1] = "/nonexistent/model"
        pattern = str(tmp_path / "a-file")
    else:
        missing = str(tmp_path / "no" / "such")
        if cmd == "info":  # no --out: a PNG (its positional argument) or a model to describe
            argv = [cmd, missing] if flag == "image" else [cmd, flag, missing]
        else:
            argv = [cmd, *[a for i, a in enumerate(base) if flag not in base[max(0, i - 1):i + 1]], flag, missing]
            argv += ["--out", str(out)]
        pattern = "no/such" if flag != "--real" else "--real"  # mnist measures against its own data
    one_line_error(capsys, argv, pattern=pattern)
    assert (tmp_path / "a-file").read_text() == "precious"
    assert not out.exists()
