"""Property tests (hypothesis) for every parser of user input: whatever the input's type, range or size, the only
outcomes are a valid object or a one-line UsageError (exit 2 at the CLI)."""

from __future__ import annotations

import argparse
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import MAX_ERROR_CHARS, UsageError, one_line
from diffuscope.cli import args as types

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=12)
number_text = (st.integers(-(2**70), 2**70).map(str) | st.floats().map(repr) | st.text(max_size=20)
               | st.sampled_from(["inf", "-inf", "nan", "1e9", "1e300", " 5 ", "0x10", "1_000", "", " "]))


def _one_line(e: Exception) -> None:
    assert "\n" not in one_line(str(e))
    assert len(one_line(str(e))) <= MAX_ERROR_CHARS + 40


@pytest.mark.parametrize("parse, lo, hi", [
    (types.steps, 1, limits.MAX_STEPS), (types.count, 1, limits.MAX_N),
    (types.batch_size, 1, limits.MAX_BATCH_SIZE), (types.image_size, limits.MIN_IMAGE_SIZE, limits.MAX_IMAGE_SIZE),
    (types.guidance, 0, limits.MAX_GUIDANCE), (types.learning_rate, 0, 1), (types.non_negative_float, 0, 1e12),
    (types.timesteps, 1, limits.MAX_TIMESTEPS), (types.positive_int, 1, types.BIG),
])
@SETTINGS
@given(text=number_text)
def test_cli_numbers(parse, lo, hi, text):
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as e:
        _one_line(e)
        return
    assert math.isfinite(value) and lo <= value <= hi


@SETTINGS
@given(text=st.text(max_size=200) | st.sampled_from(["", " ", "\t\n", "x" * 5000]))
def test_cli_names(text):
    try:
        value = types.name(text)
    except argparse.ArgumentTypeError as e:
        _one_line(e)
        assert "x" * 100 not in str(e)
        return
    assert value and value == value.strip() and len(value) <= limits.MAX_PROMPT_CHARS


@SETTINGS
@given(value=st.text(max_size=40) | st.tuples(number_text, number_text).map(",".join) | json_values)
def test_intervals(value):
    try:
        lo, hi = validate.interval(value)
    except UsageError as e:
        _one_line(e)
        return
    assert math.isfinite(lo) and 0 <= lo < hi


@SETTINGS
@given(text=st.text(max_size=40) | st.sampled_from(["1-1000000000 (+1)", "5-100 [8]", "1-99999999 [3]", "10,25"]))
def test_sweep_step_lists(text):
    from diffuscope.sweep import parse_steps

    try:
        steps = parse_steps(text)
    except UsageError as e:
        _one_line(e)
        return
    assert steps == tuple(sorted(set(steps))) and steps[0] >= 1 and steps[-1] <= limits.MAX_STEPS


train_tables = st.fixed_dictionaries({}, optional={
    "max_steps": json_scalars, "batch_size": json_scalars, "lr": json_scalars, "adam_betas": json_values,
    "p_std": json_scalars, "ema_decay": json_scalars, "seed": json_scalars, "warmup_steps": json_scalars})
unet_tables = st.fixed_dictionaries({}, optional={
    "base_channels": json_scalars, "num_res_blocks": json_scalars, "channel_mult": json_values,
    "num_classes": json_scalars, "dropout": json_scalars})


@SETTINGS
@given(doc=st.fixed_dictionaries({}, optional={"train": train_tables | json_values, "data": json_values,
                                               "model": st.fixed_dictionaries({}, optional={"unet": unet_tables})
                                               | json_values}) | json_values)
def test_run_configs(doc):
    from diffuscope.io import config as config_io
    from diffuscope.training.config import RunConfig, check_run_config

    try:
        config = config_io.from_dict(RunConfig, doc)
        check_run_config(config)
    except UsageError as e:
        _one_line(e)
        return
    t = config.train
    assert 1 <= t.batch_size <= limits.MAX_BATCH_SIZE and 0 < t.lr <= 1 and math.isfinite(t.p_std) and t.p_std > 0


entry = st.fixed_dictionaries({}, optional={"size": json_scalars, "sha256": st.text(max_size=70) | json_scalars})
manifests = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from([1, 2, "2", 3, None, True]), "step": json_scalars,
    "files": st.dictionaries(st.text(max_size=20) | st.sampled_from(["../x", "ema.safetensors", ".hidden"]),
                             entry | json_scalars, max_size=3) | json_values}) | json_values


@SETTINGS
@given(doc=manifests)
def test_manifests(doc):
    try:
        m = validate.parse_manifest(doc, "manifest.json")
    except UsageError as e:
        _one_line(e)
        return
    assert m.format in (1, 2) and m.step >= 0
    for name, e in m.files.items():
        assert "/" not in name and not name.startswith(".") and e.size >= 0
        assert m.format == 1 or len(e.sha256) == 64


png_docs = st.fixed_dictionaries({}, optional={
    "schema": json_scalars, "guidance": json_scalars, "guidance_interval": json_values, "steps": json_scalars,
    "sampler": json_scalars, "seed": json_scalars, "prompt": json_scalars}) | json_values


@SETTINGS
@given(doc=png_docs)
def test_png_chunks(doc):
    try:
        p = validate.parse_png_params(doc, "x.png", 1)
    except UsageError as e:
        _one_line(e)
        return
    if "guidance" in p:
        assert 0 <= p["guidance"] <= limits.MAX_GUIDANCE
    if "steps" in p:
        assert isinstance(p["steps"], int) and 1 <= p["steps"] <= limits.MAX_STEPS
    if p.get("guidance_interval") is not None:
        lo, hi = p["guidance_interval"]
        assert 0 <= lo < hi


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=300) | json_values.map(json.dumps))
def test_png_files(tmp_path_factory, text):
    from PIL import Image, PngImagePlugin

    from diffuscope.io.pngmeta import read_png_params

    f = tmp_path_factory.mktemp("png") / "x.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("diffuscope", text)
    Image.new("L", (8, 8)).save(f, pnginfo=info)
    try:
        read_png_params(f)
    except UsageError as e:
        _one_line(e)


@SETTINGS
@given(header=json_values | st.fixed_dictionaries({"w": st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "X", 5]), "shape": json_values,
    "data_offsets": st.lists(st.integers(-5, 2**40), max_size=3)})}), tail=st.binary(max_size=64),
    length_delta=st.integers(-10, 10))
def test_safetensors_headers(tmp_path_factory, header, tail, length_delta):
    raw = json.dumps(header).encode()
    f = tmp_path_factory.mktemp("st") / "w.safetensors"
    f.write_bytes(struct.pack("<Q", max(0, len(raw) + length_delta)) + raw + tail)
    try:
        out = limits.read_safetensors_header(f)
    except UsageError as e:
        _one_line(e)
        return
    size = f.stat().st_size
    for dtype, shape in out.values():
        n = 1
        for d in shape:
            n *= d
        assert n * limits._DTYPE_BYTES[dtype] <= size


@SETTINGS
@given(data=st.binary(max_size=64) | st.tuples(st.sampled_from([1, 2, 3]), st.lists(st.integers(0, 2**32 - 1),
                                                                                     min_size=3, max_size=3))
       .map(lambda t: bytes([0, 0, 8, t[0]]) + struct.pack(f">{t[0]}I", *t[1][:t[0]]) + b"\0" * 16))
def test_idx_files(tmp_path_factory, data):
    from diffuscope.data.idx import read_idx

    f = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte"
    f.write_bytes(data)
    try:
        arr = read_idx(f)
    except UsageError as e:
        _one_line(e)
        return
    assert arr.nbytes <= len(data)
