"""Plots of spike trains and hidden-state traces (optional: needs matplotlib, ``pip install tracetorch-core[plot]``).

Every function draws into ``ax`` (a new figure if ``None``) and returns the axes; nothing is shown or saved
unless you ask, so the functions work in scripts, notebooks and on headless machines alike.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["raster", "traces"]


def _plt() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("tracetorch.plot needs matplotlib: pip install 'tracetorch-core[plot]'") from exc
    return plt


def _as_2d(values: Tensor, what: str) -> Tensor:
    v = values.detach().cpu()
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"{what} expects [T, N] (time first); got shape {tuple(values.shape)}")
    return v.float()


def raster(spikes: Tensor, ax: Any = None, title: str | None = None, **kwargs: Any) -> Any:
    """Spike raster of ``spikes`` ``[T, N]`` (time first): a dot per nonzero entry, colored by sign."""
    plt = _plt()
    s = _as_2d(spikes, "raster")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    t_pos, n_pos = (s > 0).nonzero(as_tuple=True)
    t_neg, n_neg = (s < 0).nonzero(as_tuple=True)
    style = {"s": 4, "marker": "|"} | kwargs
    ax.scatter(t_pos.numpy(), n_pos.numpy(), color="black", label="+1", **style)
    if len(t_neg):
        ax.scatter(t_neg.numpy(), n_neg.numpy(), color="tab:red", label="-1", **style)
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    if title:
        ax.set_title(title)
    return ax


def traces(values: Tensor, ax: Any = None, title: str | None = None, threshold: float | None = None,
           max_traces: int = 8) -> Any:  # fmt: skip
    """Lines of ``values`` ``[T, N]`` (e.g. membrane potentials from ``layer.scan``), at most ``max_traces``
    neurons; an optional dashed ``threshold`` line."""
    plt = _plt()
    v = _as_2d(values, "traces")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    for i in range(min(v.shape[1], max_traces)):
        ax.plot(v[:, i].numpy(), linewidth=1, label=f"neuron {i}")
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("time step")
    if title:
        ax.set_title(title)
    if v.shape[1] <= max_traces:
        ax.legend(loc="upper right", fontsize="small")
    return ax
