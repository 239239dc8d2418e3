"""Model cards: the ``README.md`` of a saved model, generated from its config (never written by hand).

Metrics given to :func:`save_pretrained` as ``metadata["metrics"]`` (a list of dicts with ``name``, ``value``,
``dataset``, optional ``split`` and ``type``) become the card's eval results, so the Hub shows the numbers that
the experiment produced, and ``metadata`` such as ``experiment``, ``version`` and ``license`` appear in it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_card"]


def render_card(config: dict[str, Any], snapshots: list[str]) -> str:
    """The model card text for a saved model's ``config`` (as written to ``config.json``)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    meta = dict(config.get("metadata", {}))
    name = meta.get("name", config["architecture"])
    results = [
        EvalResult(
            task_type=m.get("task", "text-generation"),
            dataset_type=m.get("dataset", "unknown"),
            dataset_name=m.get("dataset", "unknown"),
            dataset_split=m.get("split"),
            metric_type=m.get("type", m["name"]),
            metric_name=m["name"],
            metric_value=m["value"],
        )
        for m in meta.get("metrics", [])
    ]
    data = ModelCardData(
        library_name="tracetorch",
        license=meta.get("license"),
        tags=["tracetorch", config["architecture"]],
        model_name=name,
        eval_results=results or None,
    )
    lines = [
        f"# {name}",
        "",
        meta.get("description", f"A `{config['architecture']}` model saved with tracetorch-zoo."),
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{config['architecture']}` |",
        f"| parameters | {config['num_parameters']:,} |",
        f"| tracetorch-core | {config['tracetorch_core_version']} |",
    ]
    for key in ("experiment", "version", "git_sha", "dataset"):
        if key in meta:
            lines.append(f"| {key} | {meta[key]} |")
    if snapshots:
        lines.append(f"| state snapshots | {', '.join(f'`{s}`' for s in snapshots)} |")
    if results:
        lines += ["", "## Metrics", "", "| metric | value | dataset | split |", "|---|---|---|---|"]
        lines += [f"| {m['name']} | {m['value']} | {m.get('dataset', '')} | {m.get('split', '')} |"
                  for m in meta["metrics"]]  # fmt: skip
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import tracetorch_zoo as zoo",
        "",
        f'model = zoo.load("path/or/hf-hub:owner/name@revision"{_states_arg(snapshots)})',
        "```",
        "",
        "## Init arguments",
        "",
        "```json",
        json.dumps(config["init_args"], indent=2, sort_keys=True),
        "```",
        "",
    ]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines)).content


def _states_arg(snapshots: list[str]) -> str:
    return f", states={snapshots[0]!r}" if snapshots else ""
