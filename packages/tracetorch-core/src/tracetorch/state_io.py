"""Saving and loading hidden states: safetensors files (or ``.pt`` read with ``weights_only=True``).

A state file maps ``path.state_name`` keys (see :func:`tracetorch.get_states`) to tensors. States that were
never created are listed in the metadata (``none_states``), so that a snapshot taken before the first step
loads back strictly. Writes go to a temporary file that replaces the target only when complete (on disk
first), with the mode any new file of the user gets (``0o666`` less the umask); loads validate every key,
shape, dtype and metadata field before assigning anything.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .errors import StateLoadError, StateSaveError
from .state import Stateful, get_states, named_stateful

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LoadResult",
    "atomic_write",
    "load_states",
    "read_states",
    "save_states",
    "write_states",
]

FORMAT = "tracetorch.states"
FORMAT_VERSION = 1
_RESERVED = ("format", "format_version", "tracetorch_version", "none_states")


class LoadResult(NamedTuple):
    """What :func:`load_states` did: keys the model has but the source lacked, keys it ignored, file metadata."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    metadata: dict[str, str]


def save_states(module: nn.Module, path=None, metadata: Mapping[str, str] | None = None):
    """Snapshot all hidden states of ``module``'s tree as detached contiguous copies; write them if ``path``.

    Returns the snapshot, ``{key: tensor or None}``.
    """
    snapshot = {
        key: None if s is None else s.detach().clone(memory_format=torch.contiguous_format)
        for key, s in get_states(module).items()
    }
    if path is not None:
        write_states(path, snapshot, metadata)
    return snapshot


def write_states(path, states: Mapping[str, Tensor | None], metadata: Mapping[str, str] | None = None) -> None:
    """Write a state snapshot atomically to ``path`` (``.safetensors`` or ``.pt``)."""
    from . import __version__

    path = Path(path)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "tracetorch_version": __version__}
    for k, v in (metadata or {}).items():
        if k in _RESERVED:
            raise ValueError(f"metadata key {k!r} is reserved by tracetorch")
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        meta[k] = v
    none_keys = sorted(k for k, v in states.items() if v is None)
    meta["none_states"] = json.dumps(none_keys)
    problems = [f"  {k}: {p}" for k, v in states.items() if (p := _unwritable(v))]
    if problems:
        raise StateSaveError(f"cannot write states to {str(path)!r}:\n" + "\n".join(problems))
    tensors = {k: v.detach().cpu().contiguous() for k, v in states.items() if v is not None}

    if path.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"state files end in .safetensors or .pt, got {path.name!r}")
    with atomic_write(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=meta)
        else:
            torch.save({"format": FORMAT, "states": tensors, "metadata": meta}, tmp)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, suffix: str = ".tmp", mode: int | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write it inside the block, and on a normal exit it is synced to
    disk and renamed to ``path`` in one step, so the file appears complete or not at all. On any exception (Ctrl-C
    included) the temporary file is removed and ``path`` is left as it was.

    The temporary name is unique per call (two writers never share it) and ends in ``suffix`` (for writers that
    choose a format by extension). The file gets ``mode``, or by default the mode of any new file under the umask
    (``mkstemp`` would give 0600). Used for state files here, and by the zoo and the experiments for everything they
    write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        umask_mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, umask_mode if mode is None else mode)  # a writer may have replaced the file
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # complete on disk before the rename makes it the file
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unwritable(value) -> str | None:
    """Why a snapshot value cannot be written (``None`` if it can)."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        return f"expected a tensor or None, got {type(value).__name__}"
    if value.is_meta:
        return "a tensor on the meta device has no values to write"
    if value.layout != torch.strided:
        return f"a {value.layout} tensor; states are dense (strided) tensors"
    return None


def read_states(path) -> tuple[dict[str, Tensor | None], dict[str, str]]:
    """Read a state file into ``(states, metadata)`` without touching any model. Never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no state file at {str(path)!r}")
    try:
        if path.suffix == ".pt":
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("format") != FORMAT:
                raise StateLoadError(f"{path} is not a tracetorch state file (no {FORMAT!r} format tag)")
            tensors, meta = dict(blob["states"]), dict(blob["metadata"])
        else:
            from safetensors import safe_open

            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensors[key] = f.get_tensor(key)
    except StateLoadError:
        raise
    except Exception as exc:  # safetensors/torch raise assorted types for truncated or corrupted files
        raise StateLoadError(f"could not read state file {str(path)!r}: {exc}") from exc

    if meta.get("format", FORMAT) != FORMAT:
        raise StateLoadError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    version = _format_version(path, meta.get("format_version", str(FORMAT_VERSION)))
    if version > FORMAT_VERSION:
        raise StateLoadError(
            f"{path} uses state format version {version}, this tracetorch reads up to {FORMAT_VERSION}: "
            f"it was written by tracetorch {meta.get('tracetorch_version', '?')}; upgrade tracetorch-core"
        )
    states: dict[str, Tensor | None] = dict(tensors)
    for key in _none_states(path, meta.get("none_states", "[]"), tensors):
        states[key] = None
    return states, meta


def _format_version(path: Path, raw) -> int:
    """The file's ``format_version``: a positive integer (written as a string in safetensors metadata)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        version = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        version = int(raw)
    else:
        raise StateLoadError(f"{path}: metadata format_version {raw!r} is not a number (a damaged or foreign file)")
    if version < 1:
        raise StateLoadError(f"{path}: metadata format_version {raw!r} is not a valid version (>= 1)")
    return version


def _none_states(path: Path, raw, tensors: Mapping[str, Tensor]) -> list[str]:
    """The keys of states that were never created (metadata ``none_states``: a JSON list of names)."""
    try:
        names = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise StateLoadError(f"{path}: metadata none_states is not JSON: {str(raw)[:200]!r}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StateLoadError(f"{path}: metadata none_states must be a JSON list of state names, got {str(raw)[:200]!r}")
    both = sorted(set(names) & set(tensors))
    if both:
        raise StateLoadError(f"{path}: metadata none_states names states the file also holds: {', '.join(both)}")
    return names


def load_states(module: nn.Module, source, strict: bool = True) -> LoadResult:
    """Load hidden states into ``module``'s tree from a file path or a ``{key: tensor or None}`` dict.

    With ``strict=True`` (default) the keys must match exactly; missing and unexpected keys are both errors.
    Every tensor is validated (feature size along the layer's ``dim``, dtype) and moved to the device and
    floating dtype of its layer's parameters before any state is assigned: on error nothing changes.
    """
    if isinstance(source, (str, os.PathLike)):
        states, meta = read_states(source)
        where = f" from {str(source)!r}"
    elif isinstance(source, Mapping):
        states, meta, where = dict(source), {}, ""
    else:
        raise TypeError(f"load_states takes a path or a dict of tensors, got {type(source).__name__}")

    targets: dict[str, tuple[Stateful, str]] = {}
    for path, m in named_stateful(module):
        for name in m._states:
            targets[f"{path}.{name}" if path else name] = (m, name)
    missing = [k for k in targets if k not in states]
    unexpected = [k for k in states if k not in targets]
    if strict and (missing or unexpected):
        lines = [f"state keys do not match {type(module).__name__}{where}:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        for k in unexpected:
            close = difflib.get_close_matches(k, list(targets), n=1)
            lines.append(f"  unexpected: {k}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        lines.append("Pass strict=False to load the keys that match.")
        raise StateLoadError("\n".join(lines))

    plan: list[tuple[Stateful, str, Tensor | None]] = []
    errors: list[str] = []
    for key, value in states.items():
        if key not in targets:
            continue
        m, name = targets[key]
        if value is None:
            plan.append((m, name, None))
            continue
        if not isinstance(value, Tensor):
            errors.append(f"  {key}: expected a tensor or None, got {type(value).__name__}")
            continue
        problem = m.check_state_tensor(name, value)
        if not problem and value.is_complex():
            ref = m._states[name] if m._states[name] is not None else _reference(m)
            if ref is not None and not ref.is_complex():
                problem = f"a complex tensor ({value.dtype}) for a real state (the layer computes in {ref.dtype})"
        if problem:
            errors.append(f"  {key}: {problem}")
            continue
        plan.append((m, name, _place(m, value)))
    if errors:
        raise StateLoadError(f"cannot load states into {type(module).__name__}{where}:\n" + "\n".join(errors))
    for m, name, value in plan:
        m._states[name] = value
    return LoadResult(missing, unexpected, meta)


def _reference(module: nn.Module) -> Tensor | None:
    """The tensor whose device (and floating dtype) a loaded state takes: the module's own first parameter or
    buffer, else the first parameter of its tree."""
    ref = next(iter(module.parameters(recurse=False)), None)
    if ref is None:
        ref = next(iter(module.buffers(recurse=False)), None)
    if ref is None:
        ref = next(iter(module.parameters()), None)
    return ref


def _place(module: nn.Module, value: Tensor) -> Tensor:
    """Move a loaded state to the device (and floating dtype) of the module's own parameters or buffers."""
    ref = _reference(module)
    if ref is None:
        return value.clone()
    dtype = ref.dtype if value.is_floating_point() and ref.is_floating_point() else value.dtype
    return value.to(device=ref.device, dtype=dtype, copy=True)
