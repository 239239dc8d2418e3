"""Architectures: model classes the zoo can rebuild from a config.

``@register("bytelm-mamba")`` on a ``tt.Model`` subclass records the arguments of every instance's
``__init__`` (bound to the signature, defaults applied), so that ``save_pretrained`` can write them to
``config.json`` and ``load_pretrained`` can rebuild the same model with ``cls(**init_args)``. Weights
published without the config that built them get misused; here the two always travel together.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
from typing import Any

from torch import nn

from .errors import UnknownArchitectureError

__all__ = [
    "FAMILIES",
    "architecture_names",
    "build",
    "family_of",
    "get_architecture",
    "load_builtin",
    "model_config",
    "register",
]

_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ARCHITECTURES: dict[str, type[nn.Module]] = {}


FAMILIES = ("snn", "rnn", "ssm", "other")


def register(name: str, *, family: str = "other"):
    """Register a model class under ``name`` (lowercase words joined by ``-``) and record init arguments.

    ``family`` (``"snn"``, ``"rnn"``, ``"ssm"`` or ``"other"``) says what kind of stateful network it is; the
    registry's listings group by it."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if not _NAME.match(name):
        raise ValueError(f"architecture names are lowercase words joined by '-', got {name!r}")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"@register({name!r}) takes an nn.Module subclass, got {cls!r}")
        if name in _ARCHITECTURES and _ARCHITECTURES[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"architecture {name!r} is already registered to {_ARCHITECTURES[name].__qualname__}")
        init = cls.__init__
        sig = inspect.signature(init)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
            raise TypeError(f"{cls.__qualname__}.__init__ takes *args/**kwargs; the zoo needs named arguments")

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            init(self, *args, **kwargs)
            if type(self) is cls:  # a subclass registers (and records) for itself
                bound = sig.bind(self, *args, **kwargs)
                bound.apply_defaults()
                init_args = dict(bound.arguments)
                init_args.pop(next(iter(sig.parameters)))  # self
                self.__dict__["_zoo_config"] = {"architecture": name, "init_args": init_args}

        cls.__init__ = __init__
        cls.zoo_architecture = name
        cls.zoo_family = family
        _ARCHITECTURES[name] = cls
        return cls

    return decorate


def load_builtin() -> None:
    """Import the zoo's own model modules, which register its architectures (``bytelm-*``, ``snn-*``)."""
    from . import audio, bytelm, vision  # noqa: F401


def architecture_names() -> list[str]:
    """All registered architecture names, sorted."""
    load_builtin()
    return sorted(_ARCHITECTURES)


def get_architecture(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ``UnknownArchitectureError`` (with close names) otherwise."""
    if name not in _ARCHITECTURES:
        load_builtin()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ARCHITECTURES), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        known = ", ".join(architecture_names()) or "none"
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}{hint} (registered: {known}). Import the module that registers it."
        ) from None


def family_of(name: str) -> str:
    """The family (``snn``, ``rnn``, ``ssm``, ``other``) of registered architecture ``name``."""
    return getattr(get_architecture(name), "zoo_family", "other")


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"architecture", "init_args"}`` of a model built from a registered class (JSON-checked)."""
    cfg = model.__dict__.get("_zoo_config")
    if cfg is None:
        raise TypeError(
            f"{type(model).__qualname__} is not a registered architecture: decorate its class with "
            "@tracetorch_zoo.register('name') so the zoo can rebuild it from its init arguments"
        )
    try:
        json.dumps(cfg["init_args"])
    except TypeError as exc:
        raise TypeError(f"init arguments of {cfg['architecture']!r} must be JSON values: {exc}") from None
    return {"architecture": cfg["architecture"], "init_args": dict(cfg["init_args"])}


def build(config: dict[str, Any]) -> nn.Module:
    """A fresh model from ``{"architecture", "init_args"}`` (weights initialised, not loaded)."""
    cls = get_architecture(config["architecture"])
    try:
        return cls(**config["init_args"])
    except TypeError as exc:
        raise TypeError(f"cannot build {config['architecture']!r} from {config['init_args']}: {exc}") from None
