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

from .errors import HubError, IncompatibleFileError, ZooError
from .pretrained import check_snapshot_name, file_hashes, load_pretrained
from .registry import Entry, get_entry, list_models

__all__ = ["download", "load", "parse_id", "push_to_hub", "resolve_folder", "verify_files"]

PREFIX = "hf-hub:"


def parse_id(name_or_id: str | os.PathLike) -> tuple[str, str, str | None]:
    """``("local", path, None)``, ``("hub", repo_id, revision)`` or ``("registry", name, None)``.

    A registry name that is also the name of a folder here is ambiguous and an error (write ``./NAME`` for the
    folder); a path-like text (``/``, ``./``, ``~``, an ``os.PathLike``) that is no folder says so."""
    text = os.fspath(name_or_id)
    if text.startswith(PREFIX):
        repo, _, rev = text[len(PREFIX) :].partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ValueError(f"expected 'hf-hub:owner/name[@revision]', got {text!r}")
        return "hub", repo, rev or "main"
    path_like = not isinstance(name_or_id, str) or os.sep in text or text.startswith((".", "~"))
    if Path(text).expanduser().is_dir():
        if not path_like and text in list_models():
            raise ZooError(
                f"{text!r} is both a registry entry and a folder here: write ./{text} for the folder, "
                "or run from another directory for the entry"
            )
        return "local", str(Path(text).expanduser()), None
    if path_like:
        raise FileNotFoundError(f"{text} does not exist or is not a folder (a saved model is a folder)")
    return "registry", text, None


def _hub_error(exc: Exception, what: str) -> Exception:
    """The Hub client's exception as a :class:`HubError` saying what was asked and what to do."""
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(f"{what}: no such revision (a tag, branch or commit sha of the repository)")
    if isinstance(exc, hf.GatedRepoError):
        return HubError(f"{what}: the repository is gated; accept its terms on the Hub and pass a token")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return HubError(f"{what}: no such repository, or it is private and the token gives no access")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        return HubError(
            f"{what}: not in the download cache and the Hub cannot be reached (offline, HF_HUB_OFFLINE=1, or an "
            "unreachable endpoint): download it once with network access (tracetorch-zoo download NAME), or "
            "point --cache-dir / HF_HUB_CACHE at a cache that holds it"
        )
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return HubError(f"{what}: the Hub answered HTTP {status}: {str(exc).splitlines()[0]}")
    return HubError(
        f"{what}: cannot reach the Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        "check the endpoint (--endpoint / HF_ENDPOINT) and the network"
    )


_CLIENT_MODULES = {"huggingface_hub", "httpx", "httpx2", "requests", "urllib3"}


def _is_hub_failure(exc: BaseException) -> bool:
    """An exception of the Hub client or its HTTP stack (network down, refused, timed out, HTTP errors)."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.split(".")[0] in _CLIENT_MODULES


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

    try:
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
    except Exception as exc:
        if not _is_hub_failure(exc):
            raise
        raise _hub_error(exc, f"download of {repo_id}@{revision}") from exc
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
    """Upload a :func:`save_pretrained` directory to ``repo_id`` (created if needed) so that the commit holds
    exactly its files (files of an earlier push that the folder no longer has are deleted), optionally tag the
    commit; returns the commit sha to pin in a registry entry. Pushing the same folder again changes nothing and
    returns the same sha; pushing a changed folder under an existing ``tag`` moves the tag (registry entries pin
    commit shas, never tags, so nothing that was pinned changes)."""
    from huggingface_hub import HfApi

    from . import __version__

    if not (Path(directory) / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: save the model with save_pretrained first")
    api = HfApi(endpoint=endpoint, token=token, library_name="tracetorch-zoo", library_version=__version__)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=directory, commit_message=commit_message, delete_patterns="*"
        )
        sha = info.oid
        if tag:
            tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
            if tags.get(tag) != sha:
                if tag in tags:
                    api.delete_tag(repo_id, tag=tag)
                api.create_tag(repo_id, tag=tag, revision=sha)
    except Exception as exc:
        if not _is_hub_failure(exc):
            raise
        raise _hub_error(exc, f"push of {directory} to {repo_id}") from exc
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


def _pinned_snapshot(entry: Entry, states: str | None) -> None:
    """A registry entry loads only files it pins: a snapshot file that appeared in its folder is refused."""
    if states is None:
        return
    check_snapshot_name(states)
    if f"states/{states}.safetensors" not in entry.files:
        pinned = ", ".join(entry.snapshots) or "none"
        raise ZooError(f"registry entry {entry.name!r} pins no snapshot {states!r} (its snapshots: {pinned})")


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
    also the named hidden-state snapshot. Registry entries are checked file by file against their sha256, and
    only a snapshot the entry pins is loaded."""
    kind, key, _ = parse_id(name_or_id)
    if kind == "registry":
        _pinned_snapshot(get_entry(key), states)
    folder = resolve_folder(
        name_or_id, cache_dir=cache_dir, endpoint=endpoint, token=token, local_files_only=local_files_only
    )
    return load_pretrained(folder, states=states)
