"""ttexp: the one shared runner of traceTorch's experiments.

An experiment is a folder ``experiments/<name>/`` with its code (``experiment.py``) and one folder per version
``v<N>/`` holding ``config.toml`` (frozen; its header gives the exact command), ``expected.json`` (expected results
with their source and tolerance), ``CHANGELOG.md`` and ``results/`` (``results.json`` with provenance, a markdown
table generated from it, PNG plots). ``python -m ttexp run byte_lm v1`` runs one; see :mod:`ttexp.cli`.
"""

from .checkpoint import Checkpointer
from .config import Config, load_config
from .context import Context
from .provenance import provenance
from .train import Trainer

__all__ = ["Checkpointer", "Config", "Context", "Trainer", "load_config", "provenance"]
