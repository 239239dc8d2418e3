"""What an experiment's ``run`` receives: its config, folders, seed, device and place in a distributed run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config
from .provenance import provenance

__all__ = ["Context"]


@dataclass
class Context:
    """Run context.

    Attributes:
        name, version: the experiment (``byte_lm``, ``v1``).
        config: the resolved :class:`~ttexp.config.Config`.
        root: the repository root. exp_dir: ``experiments/<name>``. version_dir: ``.../v<N>``.
        results_dir: where results go (``v<N>/results`` for full runs, ``v<N>/results/<variant>`` otherwise).
        run_dir: scratch (checkpoints, data caches), outside version control.
        device: ``"cpu"`` or ``"cuda:<i>"``. rank, world_size: from ``torchrun``.
        only: restrict a multi-model experiment to these parts (``--only``), or ``None`` for all.
    """

    name: str
    version: str
    config: Config
    root: Path
    exp_dir: Path
    version_dir: Path
    results_dir: Path
    run_dir: Path
    device: str = "cpu"
    rank: int = 0
    world_size: int = 1
    only: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def provenance(self) -> dict[str, Any]:
        return provenance(
            self.root,
            config_hash=self.config.hash,
            seed=self.seed,
            device=self.device,
            world_size=self.world_size,
            flush_denormal=bool(self.options.get("flush_denormal", False)),
        )

    def wants(self, part: str) -> bool:
        """Whether ``--only`` selects ``part`` (everything when not given)."""
        return self.only is None or part in self.only
