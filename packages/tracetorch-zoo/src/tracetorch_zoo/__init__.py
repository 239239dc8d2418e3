"""tracetorch-zoo: pretrained traceTorch models and hidden-state snapshots.

Register a model class, save it with named state snapshots, and load it back strictly::

    import tracetorch_zoo as zoo

    @zoo.register("tiny-snn")
    class Tiny(tt.Model): ...

    zoo.save_pretrained(model, "out/tiny", states={"primed": model.save_states()})
    model = zoo.load_pretrained("out/tiny", states="primed")
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# Names resolve on first use (PEP 562), so ``tracetorch-zoo --help``, ``list`` and anything else that needs no model
# runs without importing torch. The model modules register their architectures when imported; the architecture
# lookups import them first (architectures.load_builtin).
_SUBMODULES = ("architectures", "audio", "bytelm", "card", "catalog", "evaluation", "hub", "mixin", "pretrained",
               "publish", "registry", "vision")  # fmt: skip
_NAMES = {
    "architectures": ("architecture_names", "build", "get_architecture", "model_config", "register"),
    "errors": ("HubError", "IncompatibleFileError", "InvalidNameError", "UnknownArchitectureError", "ZooError"),
    "hub": ("download", "load", "parse_id", "push_to_hub", "resolve_folder", "verify_files"),
    "mixin": ("HubMixin",),
    "pretrained": (
        "check_snapshot_name", "file_hashes", "list_snapshots", "load_pretrained", "read_config", "save_pretrained",
        "snapshot_path", "verify_golden",
    ),
    "registry": ("Entry", "get_entry", "list_models", "make_entry", "register_entry"),
}  # fmt: skip
_HOME = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'tracetorch_zoo' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", "audio", "bytelm", "vision", *sorted(_HOME)]
