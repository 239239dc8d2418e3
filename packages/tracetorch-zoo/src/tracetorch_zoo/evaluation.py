"""``tracetorch-zoo eval``: reproduce a model's headline metric where its test data is on this machine, otherwise
check its golden tensors, and say which of the two was done.

Headline evaluators, by architecture (each reads its test set without extra dependencies):

* ``snn-conv-classifier`` on Fashion-MNIST: test accuracy of ``classify`` on the 10,000 official test images,
  read from the idx files of Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or a
  folder given as ``data``.

Every other model (and these when their data is missing) gets the golden check: the saved inputs run from zero
states with ``scan`` and step by step must give the saved outputs and final states (:func:`verify_golden`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ZooError
from .pretrained import load_pretrained, read_config, verify_golden

__all__ = ["EvalReport", "evaluate", "headline"]

FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_ID = "zalando-datasets/fashion_mnist"


@dataclass(frozen=True)
class EvalReport:
    """What ``evaluate`` did: ``kind`` is ``"metric"`` (the headline recomputed) or ``"golden"``."""

    kind: str
    name: str
    value: float | None = None
    card_value: float | None = None
    tolerance: float = 0.0
    detail: str = ""

    @property
    def ok(self) -> bool:
        if self.kind == "golden":
            return True  # verify_golden raised otherwise
        return abs(self.value - self.card_value) <= self.tolerance

    def __str__(self) -> str:
        if self.kind == "golden":
            return f"golden tensors reproduced ({self.detail})"
        verdict = "reproduced" if self.ok else "NOT reproduced"
        return (
            f"{self.name}: {self.value:.4f} (card: {self.card_value:.4f}, tolerance {self.tolerance:g}) - "
            f"{verdict}; {self.detail}"
        )


def headline(config: dict[str, Any]) -> dict[str, Any] | None:
    """The first metric of a saved model's card metadata (its headline), if any."""
    metrics = config.get("metadata", {}).get("metrics") or []
    return metrics[0] if metrics else None


def _read_idx(path: Path, offset: int) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return np.frombuffer(raw, np.uint8, offset=offset)


def _fashion_test(data: str | os.PathLike | None) -> tuple[torch.Tensor, torch.Tensor, Path] | None:
    """The Fashion-MNIST test set ``(images [10000, 1, 28, 28] in [0, 1], labels, folder)`` or ``None``."""
    for folder in [Path(data)] if data is not None else FASHION_DIRS:
        for suffix in (".gz", ""):
            img = folder / f"t10k-images-idx3-ubyte{suffix}"
            lab = folder / f"t10k-labels-idx1-ubyte{suffix}"
            if img.is_file() and lab.is_file():
                x = _read_idx(img, 16).reshape(-1, 1, 28, 28)
                y = _read_idx(lab, 8)
                return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64)), folder
    if data is not None:
        raise ZooError(
            f"no Fashion-MNIST test files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) in {data}"
        )
    return None


@torch.no_grad()
def _classifier_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> float:
    hits = 0
    for i in range(0, len(y), chunk):
        hits += (model.classify(x[i : i + chunk]).argmax(-1) == y[i : i + chunk]).sum().item()
    model.zero_states()
    return hits / len(y)


def _eval_conv_classifier(folder: Path, metric: dict[str, Any], data) -> EvalReport | None:
    from .card import dataset_of

    if dataset_of(metric)[0] != FASHION_ID or metric.get("type") != "accuracy":
        return None  # a classifier of something else: nothing here knows its test set
    found = _fashion_test(data)
    if found is None:
        return None
    x, y, where = found
    model = load_pretrained(folder)
    value = _classifier_accuracy(model, x, y)
    # 1 image in 2,000: another CPU may round a borderline logit the other way
    detail = f"{len(y):,} test images from {where}"
    return EvalReport("metric", metric["name"], value, float(metric["value"]), 5e-4, detail)


_HEADLINE: dict[str, Callable[[Path, dict[str, Any], Any], EvalReport | None]] = {
    "snn-conv-classifier": _eval_conv_classifier,
}


def evaluate(folder: str | os.PathLike, *, data: str | os.PathLike | None = None) -> EvalReport:
    """Reproduce the headline metric of the saved model in ``folder`` if its test data is here (``data``: where
    it is, for evaluators that read files), else verify its golden tensors. ``ZooError`` if neither is possible.
    """
    folder = Path(folder)
    config = read_config(folder)
    metric = headline(config)
    evaluator = _HEADLINE.get(config["architecture"])
    if evaluator is not None and metric is not None:
        report = evaluator(folder, metric, data)
        if report is not None:
            return report
    if not (folder / "test" / "golden.safetensors").is_file():
        raise ZooError(f"{folder}: no test data for its headline metric on this machine and no golden tensors")
    verify_golden(folder)
    why = "no headline evaluator for this architecture" if evaluator is None else "its test data is not on this machine"
    return EvalReport("golden", "golden tensors", detail=f"scan and step by step; {why}")
