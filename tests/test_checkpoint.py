import json
import shutil

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.io.checkpoint import (
    clean_stale_temp,
    file_entries,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from diffuscope.models.config import ModelConfig, build_denoiser, fit_to_data
from diffuscope.models.load import export_model, load_model
from helpers import TINY_UNET


def _model_config(**unet):
    cfg = ModelConfig(unet=TINY_UNET)
    cfg = fit_to_data(cfg, image_size=8, channels=1, class_names=tuple("0123456789"))
    if unet:
        from dataclasses import replace

        cfg = replace(cfg, unet=replace(cfg.unet, **unet))
    return cfg


def _save(tmp_path, step=5, config=None):
    config = config or _model_config()
    d = build_denoiser(config)
    with torch.no_grad():  # perturb the zero-initialised output layers so outputs depend on every weight
        for p in d.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ema = build_denoiser(config).net
    ema.load_state_dict(d.net.state_dict())
    path = save_checkpoint(tmp_path / "checkpoints", step, model=d.net, ema=ema, model_config=config,
                           run_config={"note": "test"}, state={"step": step})
    return d, path


def test_save_load_gives_identical_outputs(tmp_path):
    d, path = _save(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "ema.safetensors", "manifest.json", "model.safetensors", "state.pt"]
    loaded = load_model(path)
    x = torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 5.0, 50.0])
    cond = torch.tensor([0, 3, 7, 10])
    d.eval()
    with torch.no_grad():
        assert torch.equal(loaded.denoiser(x, sigma, cond), d(x, sigma, cond))
    assert loaded.class_names == tuple("0123456789")
    assert loaded.step == 5


def test_run_folder_resolves_to_newest_complete_checkpoint(tmp_path):
    _save(tmp_path, step=5)
    _, newest = _save(tmp_path, step=10)
    incomplete = tmp_path / "checkpoints" / "step-0000020"
    shutil.copytree(newest, incomplete)
    (incomplete / "manifest.json").unlink()
    assert resolve_checkpoint(tmp_path) == newest
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-0000005", "step-0000010"]
    with pytest.raises(UsageError, match="manifest"):
        resolve_checkpoint(incomplete)


def test_stale_temp_folders_are_cleaned(tmp_path):
    _save(tmp_path)
    stale = tmp_path / "checkpoints" / ".tmp-step-0000009-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert clean_stale_temp(tmp_path / "checkpoints") == [stale]
    assert not stale.exists()


def test_truncated_weights_are_refused(tmp_path):
    _, path = _save(tmp_path)
    data = (path / "ema.safetensors").read_bytes()
    (path / "ema.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated"):
        load_model(path)


def test_corrupt_weights_are_refused_even_with_a_matching_size(tmp_path):
    _, path = _save(tmp_path)
    f = path / "ema.safetensors"
    f.write_bytes(b"\x00" * f.stat().st_size)
    with pytest.raises(UsageError, match="sha256"):  # caught by the manifest's hash before any parsing
        load_model(path)


def test_pickle_file_is_never_unpickled(tmp_path):
    _, path = _save(tmp_path)
    f = path / "ema.safetensors"
    torch.save({"w": torch.zeros(3)}, f)
    _replace_file(path, "ema.safetensors", f.read_bytes())
    with pytest.raises(UsageError, match="pickle"):
        load_model(path)


def _replace_file(ckpt, name, data: bytes):
    """Replace a file AND re-hash it in the manifest, so the checks behind the hash are what is tested."""
    (ckpt / name).write_bytes(data)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = file_entries(ckpt, [name])[name]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def test_config_weights_mismatch_is_refused(tmp_path):
    _, path = _save(tmp_path / "a")
    _, other = _save(tmp_path / "b", config=_model_config(base_channels=24))
    _replace_file(path, "ema.safetensors", (other / "ema.safetensors").read_bytes())
    with pytest.raises(UsageError, match="does not match the model config"):
        load_model(path)


def test_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a model"):
        load_model(tmp_path / "empty")
    with pytest.raises(UsageError, match="not found"):
        load_model(tmp_path / "missing")


def test_export_model_round_trip(tmp_path):
    """The exported copy (EMA weights + config + a fresh manifest) loads as a model with the same outputs, at the
    source's step; a classifier travels beside it; a non-empty destination is refused and left as it was."""
    d, path = _save(tmp_path / "run", step=7)
    classifier = tmp_path / "clf"
    classifier.mkdir()
    (classifier / "classifier.safetensors").write_bytes(b"weights")
    (classifier / "classifier.json").write_text("{}")
    dest = export_model(tmp_path / "run", tmp_path / "export", classifier=classifier)
    assert sorted(p.name for p in dest.iterdir()) == [
        "classifier.json", "classifier.safetensors", "config.json", "ema.safetensors", "manifest.json"]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["step"] == 7 and manifest["source"] == str(path)
    assert {n: e["size"] for n, e in manifest["files"].items()} == {
        p.name: p.stat().st_size for p in dest.iterdir() if p.name != "manifest.json"}
    exported, original = load_model(dest), load_model(path)
    assert exported.step == 7 and exported.config == original.config
    x = torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 5.0, 50.0])
    cond = torch.tensor([0, 3, 7, 10])
    with torch.no_grad():
        assert torch.equal(exported.denoiser(x, sigma, cond), original.denoiser(x, sigma, cond))
        d.eval()
        assert torch.equal(exported.denoiser(x, sigma, cond), d(x, sigma, cond))  # _save's EMA = the model
    # tuned grids installed in the checkpoint (listed in its manifest) travel with the export, verified
    from diffuscope.grids import store as tuned_grids
    from diffuscope.io.checkpoint import read_manifest, record_in_manifest

    assert tuned_grids.TUNED_FILE == "tuned_grids.json"
    (path / "tuned_grids.json").write_text(json.dumps({"format": "diffuscope-tuned-grids", "version": 1,
                                                       "grids": {}, "tuning": {}}))
    record_in_manifest(path, "tuned_grids.json")
    again = export_model(tmp_path / "run", tmp_path / "export2")
    assert "tuned_grids.json" in read_manifest(again)["files"]
    assert (again / "tuned_grids.json").read_bytes() == (path / "tuned_grids.json").read_bytes()

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        export_model(path, occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"] and (occupied / "keep.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="not empty"):
        export_model(path, dest)  # a second export onto the first one
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_model(export_model(path, empty)).step == 7  # an existing empty folder is fine
