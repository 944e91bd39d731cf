"""The feature classifier: training quality on digits, strict save/load, run-folder conventions, the CLI."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.cli import _Parser
from diffuscope.cli import classifier as cli_classifier
from diffuscope.data import load_dataset
from diffuscope.metrics import (
    INFO_FILE,
    WEIGHTS_FILE,
    ClassifierTraining,
    find_classifier,
    load_classifier,
    require_classifier,
    save_classifier,
    train_classifier,
)
from diffuscope.metrics.classifier_train import random_shift


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("run") / "classifier"
    info = train_classifier("digits", out, training=ClassifierTraining(epochs=3, seed=0), progress=False)
    return out, info


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", split="test")


def test_digits_classifier_reaches_90_percent_held_out(trained, digits_test):
    out, info = trained
    assert info.accuracy > 0.90, info.accuracy
    assert info.n_test == len(digits_test) == 179 and info.n_train == 1618
    record = json.loads((out / INFO_FILE).read_text())
    assert record["data"] == "digits" and record["image_size"] == 8 and record["channels"] == 1
    assert record["class_names"] == [str(i) for i in range(10)] and len(record["per_class_accuracy"]) == 10
    assert record["train"]["train_time_s"] > 0 and record["weights"]["bytes"] == (out / WEIGHTS_FILE).stat().st_size
    assert sorted(p.name for p in out.iterdir()) == [INFO_FILE, WEIGHTS_FILE]  # no temp files left


def test_save_load_round_trip_gives_identical_logits(trained, digits_test, tmp_path):
    out, info = trained
    clf = load_classifier(out)
    # the loaded weights are the trained ones: the held-out accuracy is reproduced exactly
    assert (clf.predict(digits_test.images) == digits_test.labels).double().mean().item() == info.accuracy
    assert clf.info.class_names == info.class_names and clf.info.accuracy == info.accuracy
    save_classifier(clf.net, clf.info, tmp_path / "copy")
    again = load_classifier(tmp_path / "copy" / INFO_FILE)
    assert torch.equal(again.logits(digits_test.images), clf.logits(digits_test.images))
    feats, logits = clf.embed(digits_test.images, batch_size=50)  # batching does not change results
    assert feats.shape == (179, 128) and torch.allclose(logits, clf.logits(digits_test.images), atol=1e-5)
    with pytest.raises(UsageError, match=r"\[N, 1, 8, 8\]"):
        clf.features(torch.zeros(2, 1, 28, 28))


def test_features_are_normalised_by_the_train_split(trained):
    clf = load_classifier(trained[0])
    f = clf.features(load_dataset("digits", split="train").images).double()
    assert f.mean(0).abs().max() < 1e-4 and f.var(0).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_load_refuses_corrupt_or_mismatched_files(trained, tmp_path):
    out, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the tensor data
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(UsageError, match="do not match"):
        load_classifier(bad)
    (bad / WEIGHTS_FILE).write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(UsageError, match="do not match"):
        load_classifier(bad)
    # weights intact but the config names another architecture: strict loading refuses it
    shutil.copy(out / WEIGHTS_FILE, bad / WEIGHTS_FILE)
    record = json.loads((out / INFO_FILE).read_text())
    record["config"]["widths"] = [16, 32, 64]
    (bad / INFO_FILE).write_text(json.dumps(record))
    with pytest.raises(UsageError, match="does not match"):
        load_classifier(bad)
    record["config"]["unknown_key"] = 1
    (bad / INFO_FILE).write_text(json.dumps(record))
    with pytest.raises(UsageError, match="unknown_key"):
        load_classifier(bad)
    (bad / INFO_FILE).write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        load_classifier(bad)
    with pytest.raises(UsageError, match="no classifier"):
        load_classifier(tmp_path / "nothing")


def test_find_classifier_conventions(trained, tmp_path):
    out, _ = trained
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-0000100"
    ckpt.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"name": "digits", "image_size": 10}}))
    assert find_classifier(run) is None and find_classifier(ckpt) is None
    with pytest.raises(UsageError) as e:
        require_classifier(ckpt)
    msg = str(e.value)
    assert "\n" not in msg and f"diffuscope classifier --data digits --image-size 10 --out {run / 'classifier'}" in msg
    shutil.copytree(out, run / "classifier")
    for path in (run, run / "checkpoints", ckpt, run / "classifier"):
        assert find_classifier(path) == run / "classifier"
    assert require_classifier(ckpt) == run / "classifier"
    shipped = tmp_path / "shipped-model"  # a checkpoint folder carrying its classifier files itself
    shutil.copytree(out, shipped)
    assert find_classifier(shipped) == shipped


def test_random_shift_moves_content_and_keeps_shape():
    x = -torch.ones(3, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    y = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.all(y.max() == 1.0) and (y == 1.0).sum() == 3
    assert torch.equal(y, random_shift(x, 1, torch.Generator().manual_seed(0)))


def run_cli(argv):
    """The command as `diffuscope classifier` runs it (the lead registers it in cli.COMMANDS)."""
    parser = _Parser(prog="diffuscope")
    cli_classifier.add_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    args: argparse.Namespace = parser.parse_args(argv)
    return args.run(args)


def test_cli_errors_are_one_line_usage_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(UsageError, match="unknown dataset 'nosuch'"):
        run_cli(["classifier", "--data", "nosuch", "--out", str(tmp_path / "c")])
    with pytest.raises(UsageError, match=r"8\.\.64"):
        run_cli(["classifier", "--data", "digits", "--image-size", "4", "--out", str(tmp_path / "c")])
    with pytest.raises(UsageError):
        run_cli(["classifier", "--data", "digits", "--epochs", "0", "--out", str(tmp_path / "c")])
    import diffuscope.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", tuple(dict.fromkeys((*cli.COMMANDS, "classifier"))))
    assert cli.main(["classifier", "--data", "nosuch", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffuscope: error: unknown dataset 'nosuch'")
    assert not (tmp_path / "c").exists()


def test_cli_trains_deterministically(tmp_path, capsys, one_thread):
    assert run_cli(["classifier", "--data", "digits", "--epochs", "1", "--quiet", "--out", str(tmp_path / "a")]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    train_classifier("digits", tmp_path / "b", training=ClassifierTraining(epochs=1), progress=False)
    sha = [json.loads((tmp_path / d / INFO_FILE).read_text())["weights"]["sha256"] for d in "ab"]
    assert sha[0] == sha[1]
