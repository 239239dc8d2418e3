"""Save and load pretrained models as a directory of safetensors and JSON; nothing is ever unpickled.

Layout (the same on disk and in a Hub repository)::

    config.json                   format, architecture, init arguments, parameter count, versions, metadata
    README.md                     the model card, generated from config.json (metrics as eval results)
    model.safetensors             the state_dict
    states/<name>.safetensors     named hidden-state snapshots (tt state files: architecture, batch size, ...)
    results.json                  the producing experiment's metrics and provenance (optional)
    experiment/<config>           a copy of that experiment's config (optional)
    test/golden.safetensors       inputs, outputs and final states, checked by verify_golden (optional)

Writes go to a temporary sibling directory that replaces the target only when complete. Loads are strict:
every weight and state key must match, and each file is checked against what wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import tracetorch as tt

from .architectures import build, model_config
from .errors import IncompatibleFileError, InvalidNameError, UnknownArchitectureError

__all__ = [
    "CONFIG_FORMAT",
    "check_snapshot_name",
    "file_hashes",
    "list_snapshots",
    "load_pretrained",
    "read_config",
    "save_pretrained",
    "snapshot_path",
    "verify_golden",
]

CONFIG_FORMAT = "tracetorch-zoo.model"
FORMAT_VERSION = 1


_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_snapshot_name(name: object) -> str:
    """``name`` if it is a snapshot name (letters, digits, ``_``, ``.``, ``-``; not starting with ``.``; at most
    128 characters), else :class:`InvalidNameError`. A name is never a path: it cannot leave ``states/``."""
    if not isinstance(name, str) or not _SNAPSHOT_NAME.match(name):
        raise InvalidNameError(
            f"snapshot names are letters, digits, '_', '.' and '-' (not starting with '.'), got {name!r}; "
            "a snapshot is named, never given as a path"
        )
    return name


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    states: Mapping[str, Mapping[str, Tensor | None]] | None = None,
    state_info: Mapping[str, Mapping[str, str]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    experiment_config: str | os.PathLike | None = None,
    golden_inputs: Tensor | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a registered architecture) to ``directory``; returns the directory.

    Args:
        states: named hidden-state snapshots, each a dict from ``model.save_states()``; saved under
            ``states/<name>.safetensors`` with the snapshot's batch size in its metadata.
        state_info: per snapshot, more metadata (str -> str), e.g. ``steps_consumed``, ``primed_on``.
        metadata: JSON values stored in ``config.json`` (e.g. the experiment, version and metrics).
        results: the experiment's results (metrics + provenance), written as ``results.json``.
        experiment_config: a file copied in as ``experiment/<its name>`` (the config that trained the model).
        golden_inputs: a sequence ``[T, ...]``; the model's outputs and final states from zero states
            are written with it to ``test/golden.safetensors`` (see :func:`verify_golden`).
        overwrite: replace an existing directory (otherwise an existing one is an error).
    """
    from . import __version__ as zoo_version

    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    cfg = model_config(model)
    config = {
        "format": CONFIG_FORMAT,
        "format_version": FORMAT_VERSION,
        **cfg,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tracetorch_core_version": tt.__version__,
        "tracetorch_zoo_version": zoo_version,
        "metadata": dict(metadata or {}),
    }
    json.dumps([config, results])  # fail before writing anything if metadata or results are not JSON
    for name in states or {}:
        check_snapshot_name(name)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
        from .card import render_card

        (tmp / "README.md").write_text(render_card(config, sorted(states or {}), state_info))
        for name, snapshot in (states or {}).items():
            info = {"architecture": cfg["architecture"], "snapshot": name, "batch_size": _batch_size(snapshot)}
            info.update((state_info or {}).get(name, {}))
            tt.write_states(tmp / "states" / f"{name}.safetensors", snapshot, metadata=info)
        if results is not None:
            (tmp / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        if experiment_config is not None:
            (tmp / "experiment").mkdir()
            shutil.copyfile(experiment_config, tmp / "experiment" / Path(experiment_config).name)
        if golden_inputs is not None:
            _write_golden(model, golden_inputs, tmp / "test" / "golden.safetensors")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a saved model, validated (format, version, writer's core version)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {Path(directory)}: not a saved traceTorch model")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IncompatibleFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise IncompatibleFileError(f"{path} is not a traceTorch zoo config (format {CONFIG_FORMAT!r})")
    for key, kind in (("architecture", str), ("init_args", dict)):
        if not isinstance(config.get(key), kind):
            raise IncompatibleFileError(f"{path} has no {key!r} ({kind.__name__}): it cannot say what to build")
    if not isinstance(config.get("format_version", 0), int) or config.get("format_version", 0) > FORMAT_VERSION:
        raise IncompatibleFileError(
            f"{path} has format version {config['format_version']}; this tracetorch-zoo reads up to {FORMAT_VERSION}"
        )
    written = config.get("tracetorch_core_version", "0")
    if _version_tuple(written) > _version_tuple(tt.__version__):
        raise IncompatibleFileError(
            f"{path} was written with tracetorch-core {written}, newer than the installed {tt.__version__}: "
            "upgrade tracetorch-core"
        )
    return config


def list_snapshots(directory: str | os.PathLike) -> list[str]:
    """Names of the hidden-state snapshots saved with a model (files whose name is not a snapshot name are
    not snapshots)."""
    folder = Path(directory) / "states"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors") if _SNAPSHOT_NAME.match(p.stem))


def snapshot_path(directory: str | os.PathLike, name: str) -> Path:
    """``directory/states/<name>.safetensors`` for a snapshot name, refused unless the file is really inside
    the model folder: a symbolic link may only lead to the Hub client's own blob store of the same repository
    (a downloaded folder is a tree of links into ``models--owner--name/blobs``)."""
    directory = Path(directory)
    path = directory / "states" / f"{check_snapshot_name(name)}.safetensors"
    if not path.is_file():
        available = ", ".join(list_snapshots(directory)) or "none"
        raise FileNotFoundError(f"no snapshot {name!r} in {directory} (available: {available})")
    real, root = path.resolve(), directory.resolve()
    allowed = [root]
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith(("models--", "datasets--")):
        allowed.append(root.parent.parent / "blobs")
    if not any(real.is_relative_to(a) for a in allowed):
        raise IncompatibleFileError(f"snapshot {name!r} in {directory} is a link to {real}, outside the model folder")
    return path


def _weights_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # truncated or corrupted file
        raise IncompatibleFileError(f"could not read {path}: {exc}") from None


def _build_checked(config: dict[str, Any], weights_path: Path) -> nn.Module:
    """Build ``config``'s model after checking, on the meta device (no memory), that it can be built and that
    its tensors have the names and shapes of the weights file: a config asking for gigabytes beside a small
    weights file, a negative width or a missing argument is an error before anything is allocated."""
    where = weights_path.parent / "config.json"
    arch = config["architecture"]
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    except UnknownArchitectureError:
        raise
    except Exception as exc:
        raise IncompatibleFileError(f"{where}: cannot build {arch!r} from {config['init_args']}: {exc}") from None
    header = _weights_header(weights_path)
    missing, unexpected = sorted(set(shapes) - set(header)), sorted(set(header) - set(shapes))
    common = sorted(set(shapes) & set(header))
    misshapen = [f"{k} {header[k]} (config: {shapes[k]})" for k in common if header[k] != shapes[k]]
    if missing or unexpected or misshapen:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else ""]
        parts.append(f"shapes differ: {', '.join(misshapen[:5])}" if misshapen else "")
        raise IncompatibleFileError(
            f"{weights_path} does not fit the {arch!r} that {where} describes: {'; '.join(p for p in parts if p)}"
        )
    return build(config)


def load_pretrained(directory: str | os.PathLike, *, states: str | None = None) -> nn.Module:
    """Rebuild a saved model from ``directory``, load its weights strictly, and, if ``states`` names a
    snapshot (a name, never a path: see :func:`snapshot_path`), its hidden states. Returns the model in eval
    mode. The config is checked against the weights file's header before the model is built."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist or is not a folder")
    config = read_config(directory)
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"no model.safetensors in {directory}")
    snapshot_file = snapshot_path(directory, states) if states is not None else None
    model = _build_checked(config, weights_path)
    try:
        from safetensors.torch import load_file

        weights = load_file(weights_path)
    except Exception as exc:  # truncated or corrupted file
        raise IncompatibleFileError(f"could not read {weights_path}: {exc}") from exc
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise IncompatibleFileError(f"{weights_path} does not fit {config['architecture']!r}: {exc}") from None
    if snapshot_file is not None:
        path = snapshot_file
        snapshot, meta = tt.read_states(path)
        if meta.get("architecture") != config["architecture"]:
            raise IncompatibleFileError(
                f"snapshot {path.name} belongs to architecture {meta.get('architecture')!r}, "
                f"not {config['architecture']!r}"
            )
        model.load_states(snapshot, strict=True)
    return model.eval()


def file_hashes(directory: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under ``directory`` by relative POSIX path (what a registry entry pins)."""
    root = Path(directory)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[path.relative_to(root).as_posix()] = h.hexdigest()
    return out


def _batch_size(snapshot: Mapping[str, Tensor | None]) -> str:
    sizes = {t.shape[0] for t in snapshot.values() if t is not None and t.ndim > 1}
    return str(sizes.pop()) if len(sizes) == 1 else "unknown"


def _write_golden(model: nn.Module, inputs: Tensor, path: Path) -> None:
    """Outputs and final states of ``model`` on ``inputs`` from zero states; the model's states are kept."""
    from safetensors.torch import save_file

    saved = tt.save_states(model)
    was_training = model.training
    model.eval()
    try:
        tt.zero_states(model)
        with torch.no_grad():
            outputs = tt.scan(model, inputs)
        finals = {f"state.{k}": v for k, v in tt.save_states(model).items() if v is not None}
    finally:
        tt.load_states(model, saved)
        model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"inputs": inputs.detach().cpu().contiguous(), "outputs": outputs.cpu().contiguous(), **finals}
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def verify_golden(directory: str | os.PathLike, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Rebuild the saved model, run the golden inputs from zero states, with ``scan`` and step by step, and
    compare outputs and final states with ``test/golden.safetensors``; ``IncompatibleFileError`` otherwise.

    Tolerance per element: ``atol + rtol * (|want| + max |want|)``, since rounding differences between the two
    orders of evaluation grow with the size of the numbers in the tensor."""
    from safetensors.torch import load_file

    path = Path(directory) / "test" / "golden.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no golden file at {path}")
    golden = load_file(path)
    model = load_pretrained(directory)
    for mode in ("scan", "step by step"):
        tt.zero_states(model)
        with torch.no_grad():
            if mode == "scan":
                outputs = tt.scan(model, golden["inputs"])
            else:
                outputs = torch.stack([model(x) for x in golden["inputs"].unbind(0)])
        finals = {k: v for k, v in tt.save_states(model).items() if v is not None}
        checks = [("outputs", outputs, golden["outputs"])]
        checks += [(f"state {k}", v, golden.get(f"state.{k}")) for k, v in finals.items()]
        for what, got, want in checks:
            if want is None or got.shape != want.shape:
                raise IncompatibleFileError(f"{directory}: {what} ({mode}) missing or misshapen in the golden file")
            # float32 rounding between scan and step scales with the tensor's magnitude, not each element's
            scale = float(want.abs().max()) if want.numel() else 0.0
            if not torch.allclose(got, want, rtol=rtol, atol=atol + rtol * scale):
                raise IncompatibleFileError(f"{directory}: {what} ({mode}) differ from test/golden.safetensors")
