"""The scenes data set (data/scenes.py) and its evaluator (metrics/scenes.py), issue 31."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from diffuscope.data import load_dataset
from diffuscope.data import scenes as S
from diffuscope.metrics import scenes as M

pytestmark = pytest.mark.filterwarnings("ignore")

STREAM = [S.scene(i) for i in range(400)]
HELD = [S.scene(i, S.TEST_SEED, held_out=True) for i in range(100)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matcher's FFTs: one thread is faster on a shared machine
    yield
    torch.set_num_threads(threads)


def test_an_item_is_a_pure_function_of_seed_and_index():
    for i in (0, 7, 399):
        again = S.scene(i)
        assert again == STREAM[i]
        assert np.array_equal(S.draw(again), S.draw(STREAM[i]))
    assert S.scene(5, seed=1) != S.scene(5)
    assert len({sc.caption for sc in STREAM}) > 250  # the stream varies
    a = S.dataset_of(STREAM[:20])
    b = S.dataset_of([S.scene(i) for i in range(20)])
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.class_names == b.class_names
    assert [a.class_names[k] for k in a.labels] == [sc.caption for sc in STREAM[:20]]
    assert a.images.shape == (20, 3, 64, 64) and a.images.min() >= -1 and a.images.max() <= 1


def test_captions_name_the_drawn_objects_and_a_relation_that_holds():
    relations = counts = 0
    for sc in STREAM:
        names = [o.name for o in sc.objects]
        text = sc.caption
        if sc.background_named:
            text = text.removesuffix(f" on {sc.background}")
        parts = text.split(f" {sc.relation[1]} ") if sc.relation else re.split(r", | and ", text)
        assert parts == [S.article(n) for n in names], sc.caption  # each object, in drawing order
        assert len(names) == len(set(names)) and 1 <= len(names) <= 3
        for o in sc.objects:  # inside the border, boxes apart
            assert o.x >= S.BORDER and o.x + o.size <= S.CANVAS - S.BORDER
            assert o.y >= S.BORDER and o.y + o.size <= S.CANVAS - S.BORDER
        for a in sc.objects:
            for b in sc.objects:
                if a is not b:
                    assert a.x + a.size <= b.x or b.x + b.size <= a.x or a.y + a.size <= b.y or b.y + b.size <= a.y
        stated = [r for r in S.RELATIONS if f" {r} " in text]
        if sc.relation is None:
            assert not stated, text
        else:
            relations += 1
            i, rel, j = sc.relation
            assert stated == [rel] and len(names) == 2
            (ax, ay), (bx, by) = sc.objects[i].centre, sc.objects[j].centre  # y grows downwards
            gap = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[rel]
            assert gap >= 8, (sc.caption, sc.objects)  # the documented margin
        counts += len(names) == 3
    assert relations > 30 and counts > 30  # both kinds occur
    # the pixels: each object's sprite is drawn where its caption object is
    sc = next(s for s in STREAM if s.relation is not None)
    img = S.draw(sc).astype(np.float32)
    for o in sc.objects:
        rgb, alpha = S.sprites()[o.name, o.size]
        bg = np.asarray(S.BACKGROUNDS[sc.background], dtype=np.float32)
        expected = rgb * alpha[..., None] + bg * (1 - alpha[..., None])
        assert np.abs(img[o.y:o.y + o.size, o.x:o.x + o.size] - expected).max() <= 1.0


def test_held_out_names_never_appear_in_training():
    for sc in STREAM:
        assert not {o.name for o in sc.objects} & set(S.HELD_OUT)
        assert not any(h in sc.caption for h in S.HELD_OUT), sc.caption
    assert set(S.HELD_OUT) == set(S.HELD_OUT_PROMPTS) and not set(S.HELD_OUT) & set(S.VOCABULARY)
    for sc in HELD:  # the test split: one held-out name in every scene
        assert sc.objects[0].name in S.HELD_OUT
    assert {sc.objects[0].name for sc in HELD} == set(S.HELD_OUT)


def test_background_is_as_captioned():
    named = 0
    for sc in STREAM[:200]:
        img = S.draw(sc)
        ring = np.concatenate([img[:S.BORDER].reshape(-1, 3), img[-S.BORDER:].reshape(-1, 3),
                               img[:, :S.BORDER].reshape(-1, 3), img[:, -S.BORDER:].reshape(-1, 3)])
        assert (ring == np.asarray(S.BACKGROUNDS[sc.background])).all()
        assert S.background_name(tuple(ring[0].astype(float))) == sc.background
        assert sc.background in S.backgrounds_for(tuple(o.name for o in sc.objects))
        if sc.background_named:
            named += 1
            assert sc.caption.endswith(f" on {sc.background}")
        else:
            assert not any(sc.caption.endswith(f" on {c}") for c in S.BACKGROUNDS)
    assert 60 < named < 140


def test_load_dataset_scenes_and_its_refusals(monkeypatch):
    monkeypatch.setattr(S, "TRAIN_ITEMS", 12)
    monkeypatch.setattr(S, "TEST_ITEMS", 5)
    train = load_dataset("scenes", split="train")
    assert len(train) == 12 and train.channels == 3 and train.image_size == 64
    assert train.class_names[int(train.labels[3])] == S.scene(3).caption
    assert len(load_dataset("scenes", split="all")) == 17
    assert load_dataset("scenes", split="test", image_size=32).image_size == 32
    with pytest.raises(S.UsageError, match="channels must be 3"):
        load_dataset("scenes", channels=1)


SMALL = {g: specs[:5] for g, specs in M.evaluation_set().items()}


@pytest.fixture(scope="module")
def real_images():
    return M.real_scene_images(M.flat_specs(SMALL), seeds=(0, 1))


def test_the_evaluator_scores_data_set_scenes_near_100_percent(real_images):
    with torch.inference_mode():
        report = M.evaluate_scenes(M.SceneJudge(), SMALL, real_images)
    rates = {k: v for k, v in report.rows.items() if isinstance(v, M.Rate)}
    assert len(rates) == 8 and all(r.n > 0 for r in rates.values())
    for label, r in rates.items():
        assert r.estimate >= 0.95, (label, r)
    spread = report.rows["spread (no relation)"]
    assert 0.2 < spread.mean < 0.5 and spread.low <= spread.mean <= spread.high  # the data's layouts vary
    # the centres it reports are the drawn ones
    for s, row in enumerate(report.judgements):
        for p, j in enumerate(row):
            truth = S.draw_spec(np.random.default_rng([M.EVAL_SEED, p, s]), j.spec)
            for d, o in zip(j.detections, truth.objects):
                assert d.size == o.size and d.centre == o.centre


def test_the_evaluator_finds_nothing_in_noise_or_under_wrong_names(real_images):
    judge = M.SceneJudge()
    noise = torch.rand(real_images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = M.evaluate_scenes(judge, SMALL, noise)
    for label in ("single found", "two-object both found", "relation right", "held-out single found",
                  "held-out relation right"):
        assert report.rows[label].hits == 0, label
    # the right images under other emoji's names: not found (a different, but similar, emoji loses to the drawn one)
    shift = {n: S.VOCABULARY[(k + 7) % len(S.VOCABULARY)] for k, n in enumerate(S.VOCABULARY)}
    shift.update({h: S.HELD_OUT[(k + 1) % len(S.HELD_OUT)] for k, h in enumerate(S.HELD_OUT)})
    wrong = {g: tuple(M.SceneSpec((shift[sp.names[0]],), None, sp.background) for sp in specs)
             for g, specs in SMALL.items()}
    found = [j.all_found for row in M.evaluate_scenes(judge, wrong, real_images).judgements for j in row
             if j.spec.names[0] not in {o for sp in M.flat_specs(SMALL) for o in sp.names if o != sp.names[0]}]
    assert sum(found) <= 0.05 * len(found)


def test_evaluator_relations_and_background_are_checked(real_images):
    judge = M.SceneJudge()
    specs = M.flat_specs(SMALL)
    p = next(i for i, sp in enumerate(specs) if sp.relation == "left of")
    sp = specs[p]
    right = judge.judge(real_images[0, p], sp)
    assert right.relation_right is True
    flipped = judge.judge(real_images[0, p], M.SceneSpec(sp.names, "right of", "blue" if sp.background != "blue"
                                                          else "red"))
    assert flipped.relation_right is False and flipped.background_right is False
    assert judge.judge(real_images[0, p], M.SceneSpec(sp.names)).relation_right is None
    truth = S.draw_spec(np.random.default_rng([M.EVAL_SEED, p, 0]), sp).background
    assert judge.judge(real_images[0, p], M.SceneSpec(sp.names, None, truth)).background_right is True
    assert M.wilson(0, 10).low == 0 and 0 < M.wilson(0, 10).high < 0.35 and M.wilson(10, 10).low > 0.65
    with pytest.raises(S.UsageError, match="RGB 64x64"):
        M.evaluate_scenes(judge, SMALL, real_images[:, :, :, :32, :32])


def test_a_short_training_on_scenes_runs_end_to_end(tmp_path, monkeypatch):
    from diffuscope.cli import main
    from diffuscope.models.load import load_model

    monkeypatch.setattr(S, "TRAIN_ITEMS", 24)
    monkeypatch.setattr(S, "TEST_ITEMS", 4)
    toml = tmp_path / "tiny.toml"
    toml.write_text("[model.unet]\nbase_channels = 8\nchannel_mult = [1, 2]\nnum_res_blocks = 1\n"
                    "attention_resolutions = [8]\nnum_heads = 1\ntext_dim = 384\n"
                    "[train]\nbatch_size = 4\nsample_every = 0\ncheckpoint_every = 3\nsample_steps = 2\n")
    assert main(["autoencoder", "--data", "scenes", "--out", str(tmp_path / "ae"), "--max-steps", "2",
                 "--batch-size", "4", "--base-channels", "8", "--downsample", "4", "--eval-every", "0",
                 "--checkpoint-every", "2", "--quiet"]) == 0
    assert main(["train", "--data", "scenes", "--config", str(toml), "--autoencoder", str(tmp_path / "ae"),
                 "--out", str(tmp_path / "run"), "--max-steps", "3", "--quiet"]) == 0
    model = load_model(tmp_path / "run")
    assert model.step == 3 and model.is_latent and model.sample_shape == (4, 16, 16)
    assert model.image_shape == (3, 64, 64) and model.conditioner.takes_prompts
    assert S.scene(0).caption in model.trained_prompts()
