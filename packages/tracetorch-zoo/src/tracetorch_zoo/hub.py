"""Hub I/O through the real ``huggingface_hub`` client: publish a saved model directory, download one at a
pinned revision (with the client's cache and progress bars), and resolve ``name_or_id`` for :func:`load`.

Ids: a registry name (``bytelm-mamba.small``), ``hf-hub:owner/name@revision`` (revision: a tag, branch or
commit sha; ``main`` if omitted), or a local directory. ``endpoint`` defaults to the client's (``HF_ENDPOINT``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .errors import IncompatibleFileError
from .pretrained import file_hashes, load_pretrained
from .registry import Entry, get_entry

__all__ = ["download", "load", "parse_id", "push_to_hub", "resolve_folder", "verify_files"]

PREFIX = "hf-hub:"


def parse_id(name_or_id: str | os.PathLike) -> tuple[str, str, str | None]:
    """``("local", path, None)``, ``("hub", repo_id, revision)`` or ``("registry", name, None)``."""
    text = os.fspath(name_or_id)
    if text.startswith(PREFIX):
        repo, _, rev = text[len(PREFIX) :].partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ValueError(f"expected 'hf-hub:owner/name[@revision]', got {text!r}")
        return "hub", repo, rev or "main"
    if Path(text).is_dir():
        return "local", text, None
    return "registry", text, None


def download(
    repo_id: str,
    revision: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download (or find in the client's cache) a model repository at ``revision``; returns its folder."""
    from huggingface_hub import snapshot_download

    from . import __version__

    path = snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        endpoint=endpoint,
        token=token,
        local_files_only=local_files_only,
        library_name="tracetorch-zoo",
        library_version=__version__,
    )
    return Path(path)


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    tag: str | None = None,
    commit_message: str = "Upload traceTorch model",
    endpoint: str | None = None,
    token: str | bool | None = None,
    private: bool = False,
) -> str:
    """Upload a :func:`save_pretrained` directory to ``repo_id`` (created if needed), optionally tag the
    commit; returns the commit sha to pin in a registry entry."""
    from huggingface_hub import HfApi

    if not (Path(directory) / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: save the model with save_pretrained first")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(repo_id=repo_id, folder_path=directory, commit_message=commit_message)
    sha = info.oid
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha)
    return sha


def verify_files(directory: str | os.PathLike, expected: dict[str, str], what: str) -> None:
    """Check that every file an entry pins exists with its sha256; ``IncompatibleFileError`` otherwise."""
    actual = file_hashes(directory)
    for path, digest in expected.items():
        if path not in actual:
            raise IncompatibleFileError(f"{what}: {path} is missing from {directory}")
        if actual[path] != digest:
            raise IncompatibleFileError(
                f"{what}: sha256 of {path} is {actual[path][:16]}..., the registry pins {digest[:16]}... "
                "(a corrupted or truncated download, or files that are not the pinned revision)"
            )


def _entry_folder(entry: Entry, **hub: Any) -> Path:
    if entry.embedded:
        from importlib import resources

        folder = Path(str(resources.files(__package__) / entry.embedded))
        if folder.is_dir():
            return folder
    return download(entry.repo_id, entry.revision, **hub)


def resolve_folder(
    name_or_id: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder holding ``name_or_id``'s files: the directory itself, a download at the revision, or
    a registry entry's embedded or downloaded files, checked file by file against their sha256."""
    kind, key, revision = parse_id(name_or_id)
    hub = {"cache_dir": cache_dir, "endpoint": endpoint, "token": token, "local_files_only": local_files_only}
    if kind == "local":
        return Path(key)
    if kind == "hub":
        return download(key, revision, **hub)
    entry = get_entry(key)
    folder = _entry_folder(entry, **hub)
    verify_files(folder, entry.files, f"registry entry {entry.name!r}")
    return folder


def load(
    name_or_id: str | os.PathLike,
    states: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> nn.Module:
    """Load a model by registry name, ``hf-hub:owner/name@revision`` or local directory; with ``states``,
    also the named hidden-state snapshot. Registry entries are checked file by file against their sha256."""
    folder = resolve_folder(
        name_or_id, cache_dir=cache_dir, endpoint=endpoint, token=token, local_files_only=local_files_only
    )
    return load_pretrained(folder, states=states)
