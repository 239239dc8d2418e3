"""Publishing a trained model as a registry entry, the one way every experiment does it.

:func:`publish` = :func:`~tracetorch_zoo.save_pretrained` (weights, config, snapshots, results, the experiment's
config, golden tensors, model card) -> :func:`~tracetorch_zoo.verify_golden` -> :func:`~tracetorch_zoo.push_to_hub`
(a Hub endpoint, or a local test Hub served from a folder) -> the registry entry ``entries/<name>.json`` pinned to
the pushed commit, and with ``embed`` a copy of the files inside the package (so the entry loads offline).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tracetorch.state_io import atomic_write

from .hub import push_to_hub
from .pretrained import save_pretrained, verify_golden
from .registry import make_entry

__all__ = ["PACKAGE_DIR", "publish"]

PACKAGE_DIR = Path(__file__).resolve().parent  # where entries/ and embedded/ live


def publish(
    model: nn.Module,
    *,
    name: str,
    repo_id: str,
    work_dir: str | os.PathLike,
    tag: str | None = None,
    states: Mapping[str, Mapping[str, Tensor | None]] | None = None,
    state_info: Mapping[str, Mapping[str, str]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    experiment_config: str | os.PathLike | None = None,
    golden_inputs: Tensor | None = None,
    license: str = "",
    endpoint: str | None = None,
    local_hub: str | os.PathLike | None = None,
    registry_dir: str | os.PathLike | None = None,
    embed: bool = False,
) -> Path:
    """Save, check, push and register ``model`` as entry ``name``; returns the entry's JSON path.

    Args:
        work_dir: where the saved folder ``<work_dir>/<name>`` is written before it is pushed.
        tag: a tag for the pushed commit (e.g. ``"<experiment>-<version>"``).
        states, state_info, metadata, results, experiment_config, golden_inputs: as for ``save_pretrained``;
            ``metadata["metrics"]`` become the card's eval results, the first one the headline.
        license: the entry's license text (weights and data), recorded in the registry.
        endpoint: Hub endpoint (default: the client's ``HF_ENDPOINT``); ``local_hub``: serve a local test Hub
            from this folder instead and push there.
        registry_dir: the folder holding ``entries/`` and ``embedded/`` (default: this package).
        embed: copy the files into ``<registry_dir>/embedded/<name>`` and point the entry at them.
    """
    folder = Path(work_dir) / name
    save_pretrained(
        model,
        folder,
        states=states,
        state_info=state_info,
        metadata=metadata,
        results=results,
        experiment_config=experiment_config,
        golden_inputs=golden_inputs,
        overwrite=True,
    )
    if golden_inputs is not None:
        verify_golden(folder)
    server = None
    if local_hub is not None:
        from .testing.hub_server import LocalHub

        server = LocalHub(local_hub).start()
        endpoint = server.endpoint
    try:
        sha = push_to_hub(folder, repo_id, tag=tag, endpoint=endpoint)
    finally:
        if server is not None:
            server.close()
    target = Path(registry_dir) if registry_dir is not None else PACKAGE_DIR
    embedded = None
    if embed:
        embedded = f"embedded/{name}"
        _replace_tree(folder, target / embedded)
    meta = dict(metadata or {})
    entry = make_entry(
        folder,
        name=name,
        repo_id=repo_id,
        revision=sha,
        license=license,
        metadata={k: meta[k] for k in ("experiment", "version", "dataset", "metrics", "task") if k in meta},
        embedded=embedded,
    )
    path = target / "entries" / f"{name}.json"
    _write_atomic(path, json.dumps(entry.to_json(), indent=1) + "\n")
    where = "local test hub" if local_hub is not None else endpoint or "HF_ENDPOINT"
    print(f"published {name}: {repo_id}@{sha} ({where})\nregistry entry: {path}")
    return path


def _replace_tree(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` (replacing it), readable by everyone once installed (temp files are 0600)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        for p in tmp.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path``, complete or not at all, readable by everyone once installed."""
    with atomic_write(path, mode=0o644) as tmp:
        tmp.write_text(text)
