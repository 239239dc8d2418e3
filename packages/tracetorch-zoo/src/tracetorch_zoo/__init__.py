"""tracetorch-zoo: pretrained traceTorch models and hidden-state snapshots.

Register a model class, save it with named state snapshots, and load it back strictly::

    import tracetorch_zoo as zoo

    @zoo.register("tiny-snn")
    class Tiny(tt.Model): ...

    zoo.save_pretrained(model, "out/tiny", states={"primed": model.save_states()})
    model = zoo.load_pretrained("out/tiny", states="primed")
"""

from ._version import __version__
from .architectures import architecture_names, build, get_architecture, model_config, register
from .errors import IncompatibleFileError, UnknownArchitectureError, ZooError
from .pretrained import file_hashes, list_snapshots, load_pretrained, read_config, save_pretrained

__all__ = [
    "IncompatibleFileError",
    "UnknownArchitectureError",
    "ZooError",
    "__version__",
    "architecture_names",
    "build",
    "file_hashes",
    "get_architecture",
    "list_snapshots",
    "load_pretrained",
    "model_config",
    "read_config",
    "register",
    "save_pretrained",
]
