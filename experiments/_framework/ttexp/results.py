"""Results are data: ``results.json`` (metrics + provenance), a markdown table generated from it, PNG plots.

The markdown and plots are always regenerated from the JSON by the experiment's ``table`` and ``plots``
functions (``python -m ttexp table NAME VERSION``), never edited by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .files import atomic_write, write_text

__all__ = [
    "check_expected",
    "flatten",
    "provenance_line",
    "read_results",
    "save_figure",
    "seed_summary",
    "table_header",
    "write_json",
    "write_weights",
]


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (:func:`ttexp.files.atomic_write`)."""
    return write_text(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


def write_weights(model_or_tensors, path: str | Path) -> Path:
    """A model's ``state_dict`` (or a dict of tensors) as safetensors, atomically: a killed run never leaves a short
    weights file under the final name. Record "done" only after this returns."""
    from safetensors.torch import save_file

    tensors = model_or_tensors if isinstance(model_or_tensors, dict) else model_or_tensors.state_dict()
    with atomic_write(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    return Path(path)


def save_figure(fig, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically (a plot is an artefact like any other) and close it."""
    import matplotlib.pyplot as plt

    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


def provenance_line(prov: dict[str, Any]) -> str:
    """``Provenance: git <sha> [(dirty)], config <hash>, seed <s>, <device> x<world size>, <N> threads, torch
    <version>, <time>.``: the one sentence every results table ends with."""
    return (
        f"Provenance: git {prov['git']['sha']}{' (dirty)' if prov['git']['dirty'] else ''}, config "
        f"{prov['config_hash']}, seed {prov['seed']}, {prov['device']} x{prov['world_size']}, {prov['threads']} "
        f"threads, torch {prov['versions']['torch']}, {prov['time']}."
    )


def seed_summary(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``{"mean", "std", "seeds"}`` of ``run[key]`` over the runs of several seeds (sample sd; 0 for one run)."""
    vals = [r[key] for r in runs]
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1))
    return {"mean": mean, "std": sd, "seeds": vals}


def read_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_expected(results: dict[str, Any], expected: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare ``results`` with ``expected`` (``{"metrics": {dotted.path: rule}}``); one row per rule.

    A rule is ``{"value": v, "tolerance": t}`` (``|x - v| <= t``), ``{"max": m}`` (``x <= m``), ``{"min": m}``
    or both, each with a ``"source"`` saying where the expectation comes from. A missing metric fails.
    """
    flat = flatten(results)
    rows = []
    for path, rule in expected.get("metrics", {}).items():
        x = flat.get(path)
        ok = isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))
        want = []
        if ok and "value" in rule:
            ok = abs(x - rule["value"]) <= rule.get("tolerance", 0.0)
            want.append(f"{rule['value']} +- {rule.get('tolerance', 0.0)}")
        if ok and "max" in rule:
            ok = x <= rule["max"]
        if ok and "min" in rule:
            ok = x >= rule["min"]
        if "max" in rule:
            want.append(f"<= {rule['max']}")
        if "min" in rule:
            want.append(f">= {rule['min']}")
        rows.append({"metric": path, "got": x, "want": ", ".join(want), "ok": ok, "source": rule.get("source", "")})
    return rows


def table_header(results: dict[str, Any], name: str) -> list[str]:
    """The first lines of every generated ``results.md``: title (with the variant), where it comes from, the
    command that reproduces it."""
    variant = f" ({results['variant']})" if results.get("variant") else ""
    return [
        f"# {name} {results['version']}{variant}",
        "",
        f"Generated from `results.json` by `python -m ttexp table {name} {results['version']}`; do not edit. "
        f"Command: `{results['command']}`.",
        "",
    ]
