"""The training loop's bookkeeping: resume, progress bar, periodic checkpoints, history, wall-clock budget.

::

    trainer = Trainer(ctx, "mamba", model, opt, total_steps=5000, checkpoint_every=200)
    trainer.resume()                      # from the newest checkpoint, if any (bit-identical continuation)
    for step in trainer.steps():          # tqdm on rank 0; a checkpoint after every `checkpoint_every` steps
        loss = ...
        trainer.log(step, loss=loss.item())

Everything a resumed run needs (weights, optimizer, hidden states, RNG, history, ``trainer.extra``) is in the
checkpoint; the data position must be a function of ``step`` (it is, in every experiment here). A damaged newest
checkpoint (its files are checked against their sha256) is reported by name and the one before it is used; when
none is usable the run stops with an error naming them, never silently starting from zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpointer, CheckpointError
from .context import Context

__all__ = ["Trainer"]


class Trainer:
    """Bookkeeping of one model's training run (see the module docstring).

    Args:
        ctx: the run context (config hash, rank, folders).
        name: the part being trained (checkpoints go to ``ctx.run_dir / name``).
        model, optimizer: what a checkpoint saves and restores.
        total_steps: the run's length. checkpoint_every: steps between checkpoints (and one at the end).
    """

    def __init__(
        self,
        ctx: Context,
        name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        checkpoint_every: int,
        keep: int = 2,
    ) -> None:
        if total_steps < 1 or checkpoint_every < 1:
            raise ValueError(f"total_steps and checkpoint_every must be >= 1, got {total_steps}, {checkpoint_every}")
        self.ctx = ctx
        self.name = name
        self.model = model
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.checkpoint_every = checkpoint_every
        self.ckpt = Checkpointer(
            Path(ctx.run_dir) / name / "checkpoints", keep=keep, rank=ctx.rank, world_size=ctx.world_size
        )
        self.start = 0
        self.history: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {"wall_seconds": 0.0}
        self.postfix: dict[str, Any] = {}
        self._t0 = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.start >= self.total_steps

    def resume(self) -> int:
        """Load the newest valid checkpoint if there is one; returns the step to continue from (0 when fresh).

        A damaged checkpoint (:class:`~ttexp.checkpoint.CheckpointError`) is reported with the damaged file and the
        previous one is tried; if checkpoints exist but none is valid, ``RuntimeError`` names them all. A
        checkpoint written under another config (different hash) is an error, never silently mixed in.
        """
        steps = self.ckpt.steps()
        if not steps:
            return 0
        damaged: list[str] = []
        for step in reversed(steps):
            try:
                meta = self.ckpt.load(step, self.model, self.optimizer)
                break
            except CheckpointError as exc:
                damaged.append(str(exc))
                if self.ctx.is_main:
                    older = [s for s in steps if s < step]
                    then = f"trying step {older[-1]}" if older else "no older checkpoint"
                    print(f"[{self.name}] checkpoint damaged, not used: {exc}; {then}", flush=True)
        else:
            raise RuntimeError(
                f"[{self.name}] no usable checkpoint in {self.ckpt.root} (refusing to start over from step 0):\n  "
                + "\n  ".join(damaged)
                + f"\nRestore the files, or delete {self.ckpt.root} to start over."
            )
        if meta.get("config_hash") != self.ctx.config.hash:
            raise RuntimeError(
                f"{self.ckpt.path(step)} was written with config {meta.get('config_hash')}, this run is "
                f"{self.ctx.config.hash}: delete {self.ckpt.root} to start over, or restore the old config"
            )
        self.start = int(meta["step"])
        self.history = list(meta.get("history", []))
        self.extra = dict(meta.get("extra", self.extra))
        if self.ctx.is_main:
            print(f"[{self.name}] resumed from step {self.start} ({self.ckpt.path(step)})", flush=True)
        return self.start

    def log(self, step: int, **values: Any) -> None:
        """Record a history row (``step`` counts completed steps, so the first row has step 1)."""
        row = {"step": step + 1, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}}
        self.history.append(row)
        self.postfix.update({k: v for k, v in row.items() if k != "step" and isinstance(v, float)})

    def save(self, step: int) -> None:
        self._account_time()
        meta = {"config_hash": self.ctx.config.hash, "history": self.history, "extra": self.extra}
        self.ckpt.save(step, self.model, self.optimizer, meta)

    def _account_time(self) -> None:
        now = time.perf_counter()
        self.extra["wall_seconds"] = float(self.extra.get("wall_seconds", 0.0)) + (now - self._t0)
        self._t0 = now

    def steps(self) -> Iterator[int]:
        """Yield the remaining step indices; checkpoints after every ``checkpoint_every`` steps and at the end.

        With ``--max-steps N`` (``ctx.options["max_steps"]``, a timing probe) it stops after ``N`` steps from where
        it started, with the run unfinished (``done`` stays false). With a deadline (``--time-limit``,
        ``ctx.options["deadline"]``: a ``time.time()``) it stops at the first step boundary past it, after a
        checkpoint of that step, so a later run resumes there."""
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.start,
            desc=self.name,
            disable=not self.ctx.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self._t0 = time.perf_counter()
        try:
            options = getattr(self.ctx, "options", {})
            max_steps, deadline = options.get("max_steps"), options.get("deadline")
            end = self.total_steps if max_steps is None else min(self.total_steps, self.start + max_steps)
            for step in range(self.start, end):
                if deadline is not None and time.time() >= deadline:
                    break
                yield step
                done = step + 1
                bar.update(1)
                if self.postfix:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in self.postfix.items()}, refresh=False)
                past = deadline is not None and time.time() >= deadline
                if done % self.checkpoint_every == 0 or done == self.total_steps or past:
                    self.save(done)
                self.start = done
        finally:
            bar.close()
