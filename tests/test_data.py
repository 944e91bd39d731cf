"""diffuscope.data: built-in data sets, image folders, IDX files, prompts, batch order."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from diffuscope.checks.errors import UsageError
from diffuscope.data import (
    BUILTIN_DATASETS,
    ImageDataset,
    batch_indices,
    class_aliases,
    class_index,
    iterate_batches,
    load_dataset,
    read_idx,
    write_idx,
)
from diffuscope.data.builtin import MNIST_TEST_PER_CLASS, _raw
from diffuscope.data.split import held_out_mask, tenth

DIGITS = tuple(str(d) for d in range(10))


def _rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.flatten(1)}


def _check_basics(ds: ImageDataset, n: int, channels: int, size: int) -> None:
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (n, channels, size, size) and len(ds) == n
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.channels == channels and ds.image_size == size
    assert float(ds.images.min()) >= -1.0 and float(ds.images.max()) <= 1.0
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.num_classes


# ---------------------------------------------------------------- built-ins


def test_builtin_names():
    assert BUILTIN_DATASETS == ("digits", "mnist", "emoji", "scenes")


def test_digits_shapes_splits_and_values():
    full = load_dataset("digits", split="all")
    _check_basics(full, 1797, 1, 8)
    assert full.class_names == DIGITS and full.num_classes == 10 and full.name == "digits"
    assert float(full.images.min()) == -1.0 and float(full.images.max()) == 1.0
    # values 0..16 map linearly: every pixel is -1 + k/8 for an integer k
    k = (full.images + 1) * 8
    assert torch.equal(k, k.round())
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(train) == 1618 and len(test) == 179
    counts_all = torch.bincount(full.labels, minlength=10)
    counts_test = torch.bincount(test.labels, minlength=10)
    assert counts_test.tolist() == [tenth(int(c)) for c in counts_all]
    mask = torch.from_numpy(held_out_mask(full.labels.numpy(), tenth))
    assert torch.equal(train.images, full.images[~mask]) and torch.equal(test.images, full.images[mask])
    assert torch.equal(train.labels, full.labels[~mask]) and torch.equal(test.labels, full.labels[mask])


def test_mnist_shapes_splits_and_disjoint():
    train = load_dataset("mnist")
    test = load_dataset("mnist", split="test")
    full = load_dataset("mnist", split="all")
    _check_basics(train, 4000, 1, 28)
    _check_basics(test, 1000, 1, 28)
    _check_basics(full, 5000, 1, 28)
    assert train.class_names == test.class_names == DIGITS and train.name == "mnist"
    assert torch.bincount(full.labels).tolist() == [500] * 10
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [MNIST_TEST_PER_CLASS] * 10
    assert float(full.images.min()) == -1.0 and float(full.images.max()) == 1.0
    # no test image appears in train, and together they are the whole set
    assert not _rows(train.images) & _rows(test.images)
    assert _rows(train.images) | _rows(test.images) == _rows(full.images)
    # the split is fixed: loading again gives the same test set
    assert torch.equal(load_dataset("mnist", split="test").images, test.images)


def test_mnist_returns_fresh_tensors():
    a = load_dataset("mnist", split="test")
    a.images.zero_()
    assert float(load_dataset("mnist", split="test").images.min()) == -1.0
    assert not _raw("mnist")[0].flags.writeable


def test_mnist_padded_to_32_keeps_content_exactly():
    native = load_dataset("mnist", split="test")
    padded = load_dataset("mnist", split="test", image_size=32)
    _check_basics(padded, 1000, 1, 32)
    assert torch.equal(padded.images[:, :, 2:30, 2:30], native.images)
    border = padded.images.clone()
    border[:, :, 2:30, 2:30] = 0.0
    assert torch.equal(border[:, :, :2], torch.full_like(border[:, :, :2], -1.0))
    assert torch.equal(border[:, :, :, 30:], torch.full_like(border[:, :, :, 30:], -1.0))
    assert torch.equal(padded.labels, native.labels)


def test_builtin_resample_and_channels():
    small = load_dataset("digits", split="test", image_size=16, channels=3)
    _check_basics(small, 179, 3, 16)
    assert torch.equal(small.images[:, 0], small.images[:, 2])
    shrunk = load_dataset("mnist", split="test", image_size=14)
    _check_basics(shrunk, 1000, 1, 14)
    # a bilinear 2x shrink keeps the mean brightness closely
    native = load_dataset("mnist", split="test")
    assert abs(float(shrunk.images.mean() - native.images.mean())) < 0.02


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"split": "valid"}, "train, test, all"), ({"channels": 2}, "1, 3"), ({"image_size": 0}, "image_size")],
)
def test_bad_options(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        load_dataset("digits", **kwargs)


# ---------------------------------------------------------------- image folders


def _save(path, mode, size, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_classes_mixed_sizes_and_rgb(tmp_path):
    root = tmp_path / "pets"
    for i in range(6):
        _save(root / "dog" / f"d{i}.png", "L", (40 + i, 30), 255)
    for i in range(5):
        _save(root / "cat" / f"c{i}.jpg", "L", (20, 20 + 3 * i), 0)
    _save(root / "cat" / "red.png", "RGB", (50, 50), (255, 0, 0))
    (root / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(root), split="all", image_size=16)
    _check_basics(ds, 12, 3, 16)  # one RGB image makes the whole set RGB
    assert ds.class_names == ("cat", "dog") and ds.name == str(root)
    assert torch.bincount(ds.labels).tolist() == [6, 6]
    dogs = ds.images[ds.labels == 1]
    assert torch.equal(dogs, torch.ones_like(dogs))  # white grayscale -> 1 in every channel
    red = ds.images[5]  # cat files sorted: c0..c4.jpg, red.png
    assert torch.equal(red[0], torch.ones(16, 16)) and torch.equal(red[1:], -torch.ones(2, 16, 16))
    train, test = load_dataset(str(root)), load_dataset(str(root), split="test")
    assert len(train) == 10 and len(test) == 2 and torch.bincount(test.labels).tolist() == [1, 1]
    assert train.image_size == 32  # the folder default


def test_grayscale_folder_defaults_to_one_channel_and_alpha_to_white(tmp_path):
    root = tmp_path / "gray"
    for i in range(3):
        _save(root / f"g{i}.png", "L", (10, 12), 0)
    _save(root / "clear.png", "LA", (10, 10), (0, 0))  # fully transparent
    ds = load_dataset(str(root), split="all", image_size=8)
    _check_basics(ds, 4, 1, 8)
    assert ds.class_names == ("gray",)  # a flat folder is one class named after it
    assert torch.equal(ds.images[0], torch.ones(1, 8, 8))  # clear.png sorts first: composited onto white
    assert torch.equal(ds.images[1:], -torch.ones(3, 1, 8, 8))
    assert load_dataset(str(root), split="all", channels=3).images.shape == (4, 3, 32, 32)


def test_train_test_subfolders_are_the_split(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _save(tmp_path / split / cls / f"{i}.png", "L", (8, 8), 255 if split == "test" else 0)
    train = load_dataset(str(tmp_path), image_size=8)
    test = load_dataset(str(tmp_path), split="test", image_size=8)
    assert (len(train), len(test)) == (6, 4) and train.class_names == test.class_names == ("a", "b")
    assert float(train.images.max()) == -1.0 and float(test.images.min()) == 1.0


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"no images \(accepted: \.png, \.jpg, \.jpeg"):
        load_dataset(str(empty))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("hello")
    with pytest.raises(UsageError, match=r"\.png"):
        load_dataset(str(texts))
    bad = tmp_path / "bad"
    _save(bad / "good.png", "L", (8, 8), 0)
    (bad / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(UsageError, match=r"broken\.png"):
        load_dataset(str(bad))
    cut = tmp_path / "cut"
    _save(cut / "whole.png", "L", (8, 8), 0)
    Image.effect_noise((64, 64), 50).save(cut / "cut.png")
    data = (cut / "cut.png").read_bytes()
    (cut / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"cut\.png"):
        load_dataset(str(cut), split="all")
    tiny = tmp_path / "tiny"
    _save(tiny / "one.png", "L", (8, 8), 0)
    with pytest.raises(UsageError, match="no held-out test images"):
        load_dataset(str(tiny), split="test")


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "unknown dataset 'cifar10'" in message and "digits, mnist, emoji, scenes" in message and "IDX" in message
    assert "\n" not in message


# ---------------------------------------------------------------- IDX files


def _unit(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).double().div(255).mul(2).sub(1).float()


def test_idx_bytes_follow_the_format(tmp_path):
    arr = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    write_idx(tmp_path / "x-idx2-ubyte", arr)
    assert (tmp_path / "x-idx2-ubyte").read_bytes() == b"\0\0\x08\x02" + struct.pack(">II", 2, 3) + bytes(range(1, 7))
    ints = np.array([-5, 70000], dtype=np.int32)
    write_idx(tmp_path / "i.gz", ints)
    raw = gzip.decompress((tmp_path / "i.gz").read_bytes())
    assert raw == b"\0\0\x0c\x01" + struct.pack(">Iii", 2, -5, 70000)
    assert np.array_equal(read_idx(tmp_path / "i.gz"), ints)
    floats = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 2, 3)
    write_idx(tmp_path / "f", floats)
    assert np.array_equal(read_idx(tmp_path / "f"), floats)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_folder_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    train_y = rng.integers(0, 10, 12).astype(np.uint8)
    test_x = rng.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    test_y = np.array([1, 2, 3, 9], dtype=np.uint8)
    for name, arr in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        write_idx(tmp_path / (name + suffix), arr)
    train = load_dataset(str(tmp_path))
    _check_basics(train, 12, 1, 6)
    assert train.class_names == DIGITS
    torch.testing.assert_close(train.images[:, 0], _unit(train_x), atol=1e-6, rtol=0)
    assert train.labels.tolist() == train_y.tolist()
    test = load_dataset(str(tmp_path), split="test", image_size=7)
    _check_basics(test, 4, 1, 7)
    assert test.labels.tolist() == [1, 2, 3, 9]
    assert len(load_dataset(str(tmp_path), split="all")) == 16
    direct = load_dataset(str(tmp_path / ("t10k-images-idx3-ubyte" + suffix)))
    torch.testing.assert_close(direct.images[:, 0], _unit(test_x), atol=1e-6, rtol=0)


def test_idx_non_digit_labels_and_missing_test(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 4), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([100, 3, 20], dtype=np.int32))
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ("3", "20", "100") and ds.labels.tolist() == [2, 0, 1]
    with pytest.raises(UsageError, match="t10k-images-idx3-ubyte"):
        load_dataset(str(tmp_path), split="test")


def test_malformed_idx_raises_naming_the_file(tmp_path):
    labels = np.arange(3, dtype=np.uint8)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(b"\0\0\x08\x03" + struct.pack(">III", 3, 4, 4) + bytes(40))  # 48 bytes needed
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte.*48 bytes"):
        load_dataset(str(tmp_path))
    images.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte is not an IDX file"):
        load_dataset(str(tmp_path))
    write_idx(images, np.zeros((2, 4, 4), dtype=np.uint8))  # 2 images but 3 labels
    with pytest.raises(UsageError, match="train-labels-idx1-ubyte"):
        load_dataset(str(tmp_path))
    lonely = tmp_path / "solo" / "my-images-idx3-ubyte"
    lonely.parent.mkdir()
    write_idx(lonely, np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(UsageError, match="no labels file beside"):
        load_dataset(str(lonely))


# ---------------------------------------------------------------- prompts


def test_prompts_map_to_classes():
    assert class_index("7", DIGITS) == 7
    assert class_index("seven", DIGITS) == 7
    assert class_index(" Seven ", DIGITS) == 7
    assert class_index("ZERO", DIGITS) == 0
    aliases = class_aliases(DIGITS)
    assert len(aliases) == 20 and aliases["nine"] == 9 and aliases["3"] == 3
    assert class_index("  Golden   Retriever ", ("cat", "golden retriever")) == 1
    with pytest.raises(UsageError) as info:
        class_index("eleven", DIGITS)
    message = str(info.value)
    assert "unknown prompt 'eleven'" in message and "0, 1, 2" in message and "seven" in message
    with pytest.raises(UsageError, match="cat, dog"):
        class_index("seven", ("cat", "dog"))  # no digit words without digit classes
    with pytest.raises(UsageError, match="same prompt"):
        class_aliases(("Cat", "cat"))


# ---------------------------------------------------------------- batch order


def test_batch_indices_pure_and_each_epoch_a_permutation():
    n, b = 10, 4
    first = batch_indices(n, b, seed=3, step=5)
    assert first.dtype == torch.int64 and first.shape == (b,)
    assert torch.equal(first, batch_indices(n, b, seed=3, step=5))
    stream = torch.cat([batch_indices(n, b, seed=3, step=s) for s in range(15)])  # 60 items = 6 epochs
    epochs = stream.view(6, n)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])  # each epoch reshuffles
    # step 2 covers items 8..11 of the stream: the end of epoch 0 and the start of epoch 1
    assert batch_indices(n, b, seed=3, step=2).tolist() == stream[8:12].tolist()
    other = torch.cat([batch_indices(n, b, seed=4, step=s) for s in range(15)])
    assert not torch.equal(stream, other)
    big = batch_indices(3, 8, seed=0, step=1)  # batch larger than the data: spans several epochs
    assert big.shape == (8,) and big.tolist() == torch.cat([batch_indices(3, 1, 0, s) for s in range(8, 16)]).tolist()
    with pytest.raises(UsageError):
        batch_indices(10, 0, seed=0, step=0)


def test_iterate_batches_resumes_exactly():
    ds = load_dataset("digits", split="test")
    run = list(iterate_batches(ds, 16, seed=7, num_steps=30))
    resumed = list(iterate_batches(ds, 16, seed=7, start_step=20, num_steps=10))
    assert [s for s, _, _ in resumed] == list(range(20, 30))
    for (s1, x1, y1), (s2, x2, y2) in zip(run[20:], resumed):
        assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    _, x, y = run[3]
    idx = batch_indices(len(ds), 16, 7, 3)
    assert torch.equal(x, ds.images[idx]) and torch.equal(y, ds.labels[idx])
