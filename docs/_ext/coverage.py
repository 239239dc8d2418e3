"""Docstring coverage of the public API: every name in ``__all__`` of the public modules, and the public methods and
properties those classes define themselves (inherited ones are counted where they are defined)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

PUBLIC_MODULES = (
    "tracetorch",
    "tracetorch.snn",
    "tracetorch.rnn",
    "tracetorch.ssm",
    "tracetorch.functional",
    "tracetorch.online",
    "tracetorch.encoders",
    "tracetorch.plot",
    "tracetorch.params",
    "tracetorch.export",
    "tracetorch.ops.backend",
    "tracetorch_zoo",
    "tracetorch_zoo.bytelm",
    "tracetorch_zoo.audio",
    "tracetorch_zoo.vision",
    "tracetorch_zoo.testing",
)


def _own_members(cls: type) -> Iterator[tuple[str, object]]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            yield name, value


def public_names() -> Iterator[tuple[str, object]]:
    """``(qualified name, object)`` for every public name, each object once."""
    seen: set[int] = set()
    for mod_name in PUBLIC_MODULES:
        mod = importlib.import_module(mod_name)
        if id(mod) not in seen:
            seen.add(id(mod))
            yield mod_name, mod
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
                continue
            seen.add(id(obj))
            home = getattr(obj, "__module__", mod_name) if not inspect.ismodule(obj) else obj.__name__
            if not str(home).startswith("tracetorch"):
                continue
            yield f"{mod_name}.{name}", obj
            if inspect.isclass(obj):
                for member, value in _own_members(obj):
                    if id(value) not in seen:
                        seen.add(id(value))
                        yield f"{mod_name}.{name}.{member}", value


def coverage() -> tuple[int, list[str]]:
    """``(number of public names, the names without a docstring)``."""
    names = list(public_names())
    missing = [q for q, obj in names if not (inspect.getdoc(obj) or "").strip()]
    return len(names), missing


if __name__ == "__main__":
    total, missing = coverage()
    print(f"{total - len(missing)}/{total} public names documented ({100 * (total - len(missing)) / total:.1f} %)")
    for q in missing:
        print("  missing:", q)
