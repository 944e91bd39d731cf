"""Regression tests for issue 19 ("nothing crashes, nothing lies"): one per reproduced failure kind.

Every bad input ends in ONE line on stderr (`diffuscope: error: ...`) with exit 2 (bad input) or 1 (the machine or
the numbers said no), and nothing already written is changed.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError
from diffuscope.io import outputs
from diffuscope.io.checkpoint import list_checkpoints, read_manifest, remanifest
from diffuscope.models.load import load_model
from diffuscope.nets.bounds import check_network, count_unet_parameters
from hardening_helpers import one_line_error, rehash, run_cli, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

# --- 1. silent garbage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "-1", "-inf"])
def test_non_finite_or_huge_guidance_is_refused(capsys, tmp_path, value):
    one_line_error(capsys, ["sample", "--model", "mnist", "--prompt", "7", "--n", "2", "--steps", "5",
                            "--guidance", value, "--out", str(tmp_path / "o")], pattern="--guidance")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--sampler", "--spacing", "--prompt", "--model"])
@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_names_are_errors_not_defaults(capsys, tmp_path, flag, value):
    argv = {"--model": "mnist", "--prompt": "7", "--n": "1", "--steps": "2", "--out": str(tmp_path / "o")}
    argv[flag] = value
    one_line_error(capsys, ["sample", *[x for kv in argv.items() for x in kv]], pattern="empty")


def test_guidance_refused_by_the_library_too():
    from diffuscope.core.conditioning import ClassConditioner
    from diffuscope.core.model import DiffusionModel
    from diffuscope.core.schedules import ScheduleConfig, make_schedule
    from diffuscope.generation.generate import GenerationRequest, generate

    model = DiffusionModel.bare(lambda x, s, cond=None: x, make_schedule(ScheduleConfig()), (1, 4, 4),
                                ClassConditioner(("0",)))
    for value in (float("inf"), float("nan"), 1e300):
        with pytest.raises(UsageError, match="guidance"):
            generate(model, GenerationRequest(prompts=("0",), guidance=value))


def test_nan_weights_are_refused(ckpt):
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt / "ema.safetensors"))
    key = next(iter(tensors))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(ckpt / "ema.safetensors"))
    rehash(ckpt, "ema.safetensors")  # a consistent manifest: the finiteness check itself must refuse
    with pytest.raises(UsageError, match="NaN or inf"):
        load_model(ckpt)


def test_a_denoiser_returning_nan_stops_with_one_line():
    from diffuscope.core.conditioning import ClassConditioner
    from diffuscope.core.model import DiffusionModel
    from diffuscope.core.schedules import ScheduleConfig, make_schedule
    from diffuscope.generation.generate import GenerationRequest, generate

    def nan_denoiser(x, sigma, cond=None):
        return torch.full_like(x, float("nan"))

    model = DiffusionModel.bare(nan_denoiser, make_schedule(ScheduleConfig()), (1, 8, 8), ClassConditioner(("0",)))
    with pytest.raises(validate.NonFiniteError, match="NaN/inf"):
        generate(model, GenerationRequest(prompts=("0", "0"), steps=2, sampler="Euler"))


def test_flipped_bit_in_tensor_data_is_caught_by_sha256(ckpt):
    f = ckpt / "ema.safetensors"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0x01  # tensor data, far from the header: sizes and header stay valid
    f.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="sha256"):
        load_model(ckpt)


def test_format_1_manifest_is_refused_and_remanifest_upgrades_it(ckpt):
    manifest = json.loads((ckpt / "manifest.json").read_text())
    old = {"format": 1, "step": manifest["step"], "files": {n: e["size"] for n, e in manifest["files"].items()}}
    (ckpt / "manifest.json").write_text(json.dumps(old))
    before = {n: (ckpt / n).read_bytes() for n in old["files"]}
    with pytest.raises(UsageError, match="remanifest"):
        load_model(ckpt)
    remanifest(ckpt)
    assert {n: (ckpt / n).read_bytes() for n in old["files"]} == before  # weights bit-identical
    assert read_manifest(ckpt)["format"] == 2
    load_model(ckpt)


def test_shipped_model_has_a_sha256_manifest():
    from diffuscope.io.checkpoint import BUILTIN_MODELS_DIR

    m = read_manifest(BUILTIN_MODELS_DIR / "mnist")
    assert m["format"] == 2 and all(len(e["sha256"]) == 64 for e in m["files"].values())


def test_train_lr_inf_and_nan_are_refused(capsys, tmp_path):
    for value in ("inf", "nan", "0", "-1", "2"):
        one_line_error(capsys, ["train", "--data", "digits", "--lr", value, "--out", str(tmp_path / "r")],
                       pattern="--lr")
    assert not (tmp_path / "r").exists()


def test_saving_non_finite_weights_is_refused(tmp_path):
    from diffuscope.io.checkpoint import save_checkpoint
    from diffuscope.models.config import ModelConfig, build_denoiser, fit_to_data
    from helpers import TINY_UNET

    cfg = fit_to_data(ModelConfig(unet=TINY_UNET), image_size=8, channels=1, class_names=("0", "1"))
    net = build_denoiser(cfg).net
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(validate.NonFiniteError):
        save_checkpoint(tmp_path, 1, model=net, ema=net, model_config=cfg, run_config={}, state={})
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("toml, pattern", [
    ('[train]\nmax_steps = "ten"\n', "max_steps"),
    ("[train]\nmax_steps = 10.5\n", "max_steps"),
    ("data = 5\n", "[data]"),
    ("train = [1, 2]\n", "[train]"),
    ("[train]\np_std = 0\n", "p_std"),
    ("[train]\nlr = nan\n", "lr"),
    ("[train]\nlr = inf\n", "lr"),
    ('[train]\nadam_betas = ["a", "b"]\n', "adam_betas"),
    ("[train]\nadam_betas = [0.9, 1.5]\n", "adam_betas"),
    ("[train]\nadam_betas = [0.9]\n", "adam_betas"),
    ("[train]\nbatch_size = 1000000000\n", "batch_size"),
    ("[data]\nimage_size = 100000\n", "image_size"),
    ("[model.unet]\nbase_channels = 100000000\n", "base_channels"),
    ("[model.unet]\nnum_res_blocks = 100000\n", "num_res_blocks"),
    ("[model.schedule]\nnum_timesteps = 1000000000\n", "num_timesteps"),
    ("[data]\nname = \"\"\n", "empty"),
    ("[train]\nseed = true\n", "seed"),
])
def test_training_toml_types_and_ranges(capsys, tmp_path, toml, pattern):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    line = one_line_error(capsys, ["train", "--data", "digits", "--config", str(cfg), "--out", str(tmp_path / "r"),
                                   "--dry-run"], pattern=pattern)
    assert str(cfg) in line or "--config" in line


# --- 2. nothing already written is changed -------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["forward", "--data", "digits"],
    ["classifier", "--data", "digits", "--epochs", "1"],
    ["reverse", "--model", "mnist", "--prompt", "3", "--steps", "2", "--show", "2"],
    ["sweep", "--model", "mnist", "--prompt", "3", "--steps", "2", "--n", "2", "--samplers", "Euler"],
    ["sample", "--model", "mnist", "--prompt", "3", "--steps", "2", "--n", "1"],
])
def test_non_empty_out_is_refused_and_untouched(capsys, tmp_path, argv):
    out = tmp_path / "o"
    out.mkdir()
    (out / "forward.png").write_bytes(b"precious")
    (out / "classifier.json").write_text("{}")
    before = snapshot(out)
    one_line_error(capsys, [*argv, "--out", str(out)], pattern="not empty")
    assert snapshot(out) == before


def test_out_naming_a_file_is_one_line(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["forward", "--data", "digits"], ["sample", "--model", "mnist", "--prompt", "3", "--n", "1"]):
        one_line_error(capsys, [*argv, "--out", str(f)], pattern="file")
        one_line_error(capsys, [*argv, "--out", str(f / "sub")], pattern="file")
    assert f.read_text() == "x"


def test_sample_adds_to_its_own_earlier_output_only(capsys, tmp_path):
    out = tmp_path / "o"
    argv = ["sample", "--model", "mnist", "--prompt", "3", "--steps", "2", "--n", "1", "--out", str(out)]
    assert run_cli(capsys, *argv)[0] == 0
    first = snapshot(out)
    assert run_cli(capsys, *argv)[0] == 0
    second = snapshot(out)
    assert all(second[k] == v for k, v in first.items()) and len(second) > len(first)
    one_line_error(capsys, ["forward", "--data", "digits", "--out", str(out)], pattern="not empty")
    (out / "notes.txt").write_text("mine")  # no longer only sample's images
    one_line_error(capsys, argv, pattern="not empty")


def test_read_only_out_is_one_line(capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions (the read-only mount is re-checked in docs/training.md)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(capsys, ["forward", "--data", "digits", "--out", str(ro / "x")], pattern="cannot write")
    finally:
        ro.chmod(0o700)


def test_resume_latest_into_a_folder_that_is_not_a_run(capsys, tmp_path):
    out = tmp_path / "notarun"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(capsys, ["train", "--data", "digits", "--max-steps", "2", "--resume", "latest", "--out", str(out)],
                   pattern="not a run folder")
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_run_lock_is_exclusive(tmp_path):
    run = tmp_path / "run"
    with outputs.RunLock(run), pytest.raises(UsageError, match="in use"):
        outputs.RunLock(run)
    with outputs.RunLock(run):  # released: a later run may take it
        pass


def test_second_training_into_a_locked_run_is_refused(tmp_path):
    from diffuscope.training import train
    from helpers import tiny_config

    run = tmp_path / "run"
    with outputs.RunLock(run):  # another process training there right now
        with pytest.raises(UsageError, match="in use"):
            train(tiny_config(max_steps=2), run)
        with pytest.raises(UsageError, match="in use"):
            train(tiny_config(max_steps=2), run, resume="latest")
    assert not (run / "checkpoints").exists()


# --- 3. unbounded requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["sample", "--model", "mnist", "--prompt", "7", "--steps", "1000000000"],
    ["sample", "--model", "mnist", "--prompt", "7", "--n", "1000000000"],
    ["sample", "--model", "mnist", "--prompt", "7", "--batch-size", "1000000000"],
    ["sweep", "--model", "mnist", "--prompt", "7", "--n", "1000000000"],
    ["sweep", "--model", "mnist", "--prompt", "7", "--steps", "1000000000"],
    ["sweep", "--model", "mnist", "--prompt", "7", "--steps", "1-1000000000 (+1)"],
    ["sweep", "--model", "mnist", "--prompt", "7", "--steps", "1-100 [1000000000]"],
    ["sweep", "--model", "mnist", "--prompt", "7", "--reference-steps", "1000000000"],
    ["reverse", "--model", "mnist", "--prompt", "7", "--steps", "1000000000"],
    ["forward", "--data", "digits", "--timesteps", "1000000000"],
    ["phases", "--model", "mnist", "--n", "1000000000"],
    ["phases", "--model", "mnist", "--consistency-steps", "10,1000000000"],
    ["train", "--data", "digits", "--batch-size", "1e9"],
    ["train", "--data", "digits", "--batch-size", "1000000000"],
    ["train", "--data", "digits", "--image-size", "100000"],
    ["classifier", "--data", "digits", "--image-size", "1000"],
])
def test_huge_requests_are_refused_up_front(capsys, tmp_path, argv):
    one_line_error(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("field, value", [("base_channels", 10**6), ("num_res_blocks", 10**5),
                                          ("num_classes", 10**9), ("channel_mult", [1, 10**6])])
def test_huge_network_config_is_refused_before_allocating(ckpt, field, value):
    raw = json.loads((ckpt / "config.json").read_text())
    raw["model"]["unet"][field] = value
    (ckpt / "config.json").write_text(json.dumps(raw))
    rehash(ckpt, "config.json")
    with pytest.raises(UsageError, match=field):
        load_model(ckpt)


def test_huge_num_timesteps_is_refused(ckpt):
    raw = json.loads((ckpt / "config.json").read_text())
    raw["model"]["schedule"]["num_timesteps"] = 10**9
    (ckpt / "config.json").write_text(json.dumps(raw))
    rehash(ckpt, "config.json")
    with pytest.raises(UsageError, match="num_timesteps"):
        load_model(ckpt)


def test_parameter_count_is_bounded_without_allocating():
    from diffuscope.nets import UNetConfig

    n = count_unet_parameters(UNetConfig(base_channels=1024, channel_mult=(1, 16, 16), num_res_blocks=16))
    assert n > limits.MAX_PARAMETERS
    with pytest.raises(UsageError, match="parameters"):
        check_network(UNetConfig(base_channels=1024, channel_mult=(1, 16, 16), num_res_blocks=16))


def test_safetensors_header_claiming_more_than_the_file(tmp_path):
    f = tmp_path / "w.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1024, 1024, 768], "data_offsets": [0, 3 * 2**30]}}).encode()
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(UsageError, match="claims bytes"):
        limits.read_safetensors_header(f)


def test_sparse_3gib_tensor_is_refused_before_mapping(ckpt):
    f = ckpt / "ema.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1024, 1024, 768], "data_offsets": [0, 3 * 2**30]}}).encode()
    with f.open("wb") as h:
        h.write(struct.pack("<Q", len(header)) + header)
        h.truncate(8 + len(header) + 3 * 2**30)  # sparse: no disk used
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["ema.safetensors"]["size"] = f.stat().st_size  # sizes agree; the sha256 does not
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError):
        load_model(ckpt)
    from diffuscope.io.checkpoint import load_weights
    from diffuscope.models.config import build_denoiser
    from diffuscope.models.load import load_config

    with pytest.raises(UsageError, match="does not match the model config"):
        load_weights(build_denoiser(load_config(ckpt)[0]).net, f)


def _idx_header(dims) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_idx_header_claiming_huge_dimensions(tmp_path):
    from diffuscope.data.idx import read_idx

    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(_idx_header([2**31, 2**31, 28]) + b"\0" * 100)
    with pytest.raises(UsageError, match="limit"):
        read_idx(f)


def test_idx_gzip_bomb_reads_no_more_than_declared(tmp_path):
    from diffuscope.data.idx import read_idx

    f = tmp_path / "train-images-idx3-ubyte.gz"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with f.open("wb") as h:
        h.write(comp.compress(_idx_header([10, 28, 28])))
        zeros = b"\0" * 2**20
        for _ in range(256):  # 256 MiB of zeros after 7,840 declared bytes, ~256 KiB on disk
            h.write(comp.compress(zeros))
        h.write(comp.flush())
    with pytest.raises(UsageError, match="need 7840 bytes of data, found more"):
        read_idx(f)
    with gzip.open(f) as g:
        assert g.read(10)  # a real gzip file


def _png_with_size(path: Path, w: int, h: int) -> None:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))


def test_png_declaring_50000x50000_pixels(capsys, tmp_path):
    f = tmp_path / "huge.png"
    _png_with_size(f, 50000, 50000)
    one_line_error(capsys, ["info", str(f)], pattern="pixels")
    one_line_error(capsys, ["sample", "--from", str(f), "--out", str(tmp_path / "o")], pattern="pixels")
    one_line_error(capsys, ["forward", "--data", "digits", "--image", str(f), "--out", str(tmp_path / "p")],
                   pattern="pixels")


def test_png_with_a_huge_compressed_text_chunk(capsys, tmp_path):
    from PIL import Image, PngImagePlugin

    f = tmp_path / "bomb.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("diffuscope", "x" * (8 * 2**20), zip=True)  # 8 MiB compressed to a few KiB
    Image.new("L", (8, 8)).save(f, pnginfo=info)
    one_line_error(capsys, ["info", str(f)])


def test_png_with_an_8mb_plain_json_chunk_is_not_printed(capsys, tmp_path):
    from PIL import Image, PngImagePlugin

    f = tmp_path / "big.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("diffuscope", json.dumps({"schema": 1, "prompt": "7", "pad": "x" * (8 * 2**20)}))
    Image.new("L", (8, 8)).save(f, pnginfo=info)
    one_line_error(capsys, ["info", str(f)], pattern="limit")


