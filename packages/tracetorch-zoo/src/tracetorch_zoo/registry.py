"""The registry: named entries ``arch.tag`` pinned to a Hub repository at a full commit sha.

An entry is data (``entries/*.json`` in this package, or :func:`register_entry` at run time): where the
files live, the exact revision, the sha256 of every file, how to rebuild the model, its snapshots, license
and metrics. :func:`tracetorch_zoo.load` resolves a name through it and refuses files whose hashes differ.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ZooError

__all__ = ["Entry", "get_entry", "list_models", "make_entry", "register_entry"]

_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Entry:
    """One published model. ``revision`` is a full commit sha (never a branch), ``files`` maps every file's
    repository path to its sha256, ``embedded`` names a folder inside this package holding the same files
    (so the entry works offline on a fresh machine)."""

    name: str
    repo_id: str
    revision: str
    architecture: str
    init_args: dict[str, Any]
    files: dict[str, str]
    snapshots: tuple[str, ...] = ()
    license: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    embedded: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"entry names are 'architecture.tag' (e.g. 'bytelm-mamba.small'), got {self.name!r}")
        if self.name.split(".")[0] != self.architecture:
            raise ValueError(f"entry {self.name!r} must start with its architecture {self.architecture!r}")
        if not _SHA.match(self.revision):
            raise ValueError(f"entry {self.name!r}: revision must be a full 40-hex commit sha, got {self.revision!r}")
        if "/" not in self.repo_id:
            raise ValueError(f"entry {self.name!r}: repo_id must be 'owner/name', got {self.repo_id!r}")
        for path, digest in self.files.items():
            if not re.match(r"^[0-9a-f]{64}$", digest):
                raise ValueError(f"entry {self.name!r}: {path} needs a sha256 hex digest, got {digest!r}")

    @property
    def hub_id(self) -> str:
        """``hf-hub:owner/name@sha``, the entry's full Hub address."""
        return f"hf-hub:{self.repo_id}@{self.revision}"

    def to_json(self) -> dict[str, Any]:
        """The entry as the JSON object ``entries/<name>.json`` holds (inverse of :meth:`from_json`)."""
        data = dataclasses.asdict(self)
        data["snapshots"] = list(self.snapshots)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        """An entry from its JSON form (a packaged ``entries/<name>.json``), validated like a new one."""
        data = dict(data)
        data["snapshots"] = tuple(data.get("snapshots", ()))
        return cls(**data)


_ENTRIES: dict[str, Entry] = {}


def make_entry(
    folder: str | os.PathLike,
    *,
    name: str,
    repo_id: str,
    revision: str,
    license: str = "",
    metadata: dict[str, Any] | None = None,
    embedded: str | None = None,
) -> Entry:
    """An entry for the published files in ``folder`` (a ``save_pretrained`` directory pushed at ``revision``):
    the rebuild config, snapshots and every file's sha256 are read from the folder itself; ``metadata`` adds to
    the parameter count and size recorded here."""
    from .pretrained import file_hashes, list_snapshots, read_config

    cfg = read_config(folder)
    files = file_hashes(folder)
    size = sum((Path(folder) / p).stat().st_size for p in files)
    meta = {"num_parameters": cfg["num_parameters"], "size_bytes": size, **dict(metadata or {})}
    return Entry(
        name=name,
        repo_id=repo_id,
        revision=revision,
        architecture=cfg["architecture"],
        init_args=cfg["init_args"],
        files=files,
        snapshots=tuple(list_snapshots(folder)),
        license=license,
        metadata=meta,
        embedded=embedded,
    )


def register_entry(entry: Entry, *, replace: bool = False) -> Entry:
    """Add ``entry`` to the registry (an existing name is an error unless ``replace``)."""
    if entry.name in _ENTRIES and not replace:
        raise ZooError(f"registry entry {entry.name!r} already exists")
    _ENTRIES[entry.name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered entry names matching a shell-style ``pattern`` (``"bytelm-*"``), sorted."""
    _load_packaged()
    return sorted(n for n in _ENTRIES if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> Entry:
    """The entry called ``name``; an error suggesting close names otherwise."""
    _load_packaged()
    try:
        return _ENTRIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ENTRIES), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ZooError(f"no model called {name!r} in the registry{hint} (list them with list_models())") from None


_loaded = False


def _load_packaged() -> None:
    """Read ``entries/*.json`` shipped with the package, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    folder = resources.files(__package__) / "entries"
    if not folder.is_dir():
        return
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            entry = Entry.from_json(json.loads(item.read_text()))
            _ENTRIES.setdefault(entry.name, entry)
