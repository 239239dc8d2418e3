"""tracetorch-zoo: pretrained traceTorch models and hidden-state snapshots.

Register a model class, save it with named state snapshots, and load it back strictly::

    import tracetorch_zoo as zoo

    @zoo.register("tiny-snn")
    class Tiny(tt.Model): ...

    zoo.save_pretrained(model, "out/tiny", states={"primed": model.save_states()})
    model = zoo.load_pretrained("out/tiny", states="primed")
"""

from . import (
    audio,  # registers snn-keyword-spotter
    bytelm,  # registers the byte LM architectures (bytelm-mamba, bytelm-lstm)
    vision,  # registers snn-conv-classifier
)
from ._version import __version__
from .architectures import architecture_names, build, get_architecture, model_config, register
from .errors import HubError, IncompatibleFileError, InvalidNameError, UnknownArchitectureError, ZooError
from .hub import download, load, parse_id, push_to_hub, resolve_folder, verify_files
from .pretrained import (
    check_snapshot_name,
    file_hashes,
    list_snapshots,
    load_pretrained,
    read_config,
    save_pretrained,
    snapshot_path,
    verify_golden,
)
from .registry import Entry, get_entry, list_models, make_entry, register_entry

__all__ = [
    "Entry",
    "HubError",
    "IncompatibleFileError",
    "InvalidNameError",
    "UnknownArchitectureError",
    "ZooError",
    "__version__",
    "architecture_names",
    "audio",
    "build",
    "bytelm",
    "check_snapshot_name",
    "download",
    "file_hashes",
    "get_architecture",
    "get_entry",
    "list_models",
    "list_snapshots",
    "load",
    "load_pretrained",
    "make_entry",
    "model_config",
    "parse_id",
    "push_to_hub",
    "read_config",
    "register",
    "register_entry",
    "resolve_folder",
    "save_pretrained",
    "snapshot_path",
    "verify_files",
    "verify_golden",
    "vision",
]
