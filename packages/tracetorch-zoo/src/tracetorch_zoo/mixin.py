"""``HubMixin``: ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` as methods of a model class.

The interface of ``huggingface_hub.PyTorchModelHubMixin``, on the zoo's own format (``config.json`` with the
architecture and init arguments, ``model.safetensors``, named hidden-state snapshots, a model card): loading stays
strict and pickle-free, registry names keep their pinned revisions and file hashes. The zoo's built-in models have
it; give a model class of your own the same with::

    @zoo.register("tiny-snn", family="snn")
    class Tiny(zoo.HubMixin, tt.Model): ...

    model.save_pretrained("out/tiny", states={"primed": model.save_states()})
    model.push_to_hub("me/tiny", states={"primed": model.save_states()}, tag="v1")
    model = Tiny.from_pretrained("me/tiny", revision="v1", states="primed")

(``PyTorchModelHubMixin`` itself stores the bare init arguments and loads weights non-strictly, and has no notion of
hidden states, so the zoo does not build on it.)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import IncompatibleFileError, ZooError

__all__ = ["HubMixin"]

M = TypeVar("M", bound="HubMixin")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class HubMixin:
    """Hub methods for registered architectures (``@zoo.register``); mix in before ``tt.Model``/``nn.Module``."""

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        states: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        endpoint: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> M:
        """Load a model of this class: a registry name (its pinned revision), a Hub repository ``owner/name`` (at
        ``revision``: a tag, branch or commit sha; default ``main``), ``hf-hub:owner/name@revision``, or a local
        folder; with ``states``, also the named hidden-state snapshot. The model must be of this class (or a
        subclass): ``IncompatibleFileError`` otherwise."""
        from .hub import load, parse_id
        from .registry import get_entry

        text = os.fspath(name_or_path)
        if isinstance(name_or_path, str) and _REPO_ID.fullmatch(text) and not Path(text).is_dir():
            text = f"hf-hub:{text}@{revision or 'main'}"
        elif revision is not None:
            kind, key, pinned = parse_id(text)
            if kind == "local":
                raise ValueError(f"revision={revision!r} applies to Hub repositories, not to the folder {text}")
            if kind == "registry" and revision != get_entry(key).revision:
                raise ZooError(
                    f"{key} is pinned to revision {get_entry(key).revision}; for another revision load its "
                    f"repository: from_pretrained({get_entry(key).repo_id!r}, revision={revision!r})"
                )
            if kind == "hub" and revision != pinned:
                raise ValueError(f"{text} names revision {pinned!r}, but revision={revision!r} was given")
        model = load(
            text, states=states, cache_dir=cache_dir, endpoint=endpoint, token=token, local_files_only=local_files_only
        )
        if not isinstance(model, cls):
            raise IncompatibleFileError(
                f"{name_or_path} holds a {type(model).__name__} (architecture "
                f"{getattr(model, 'zoo_architecture', '?')!r}), not a {cls.__name__}: load it with "
                "tracetorch_zoo.load, or with that class's from_pretrained"
            )
        return model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        states: Mapping[str, Mapping[str, Any]] | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Write the model (config, weights, ``states`` snapshots by name, model card) to ``save_directory``;
        ``kwargs`` go to :func:`tracetorch_zoo.save_pretrained` (``metadata``, ``golden_inputs``, ...)."""
        from .pretrained import save_pretrained

        return save_pretrained(self, save_directory, states=states, overwrite=overwrite, **kwargs)  # type: ignore[arg-type]

    def push_to_hub(
        self,
        repo_id: str,
        *,
        states: Mapping[str, Mapping[str, Any]] | None = None,
        tag: str | None = None,
        commit_message: str = "Upload traceTorch model",
        private: bool = False,
        endpoint: str | None = None,
        token: str | bool | None = None,
        **save_kwargs: Any,
    ) -> str:
        """:meth:`save_pretrained` into a temporary folder, then upload it to ``repo_id`` (created if needed; files
        of an earlier push that this one lacks are deleted; ``tag`` moved to the new commit). Returns the commit sha
        (pin it: ``from_pretrained(repo_id, revision=sha)``)."""
        from .hub import push_to_hub

        with tempfile.TemporaryDirectory(prefix="tracetorch-zoo-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", states=states, **save_kwargs)
            return push_to_hub(
                folder, repo_id, tag=tag, commit_message=commit_message, endpoint=endpoint, token=token, private=private
            )
