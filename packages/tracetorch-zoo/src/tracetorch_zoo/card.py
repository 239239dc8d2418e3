"""Model cards: the ``README.md`` of a saved model, generated from its config (never written by hand).

``save_pretrained``'s ``metadata`` drives the card:

* ``metrics``: the model's own results, a list of dicts with ``name``, ``value``, ``dataset`` (a dict with ``id``
  and ``name``, or one string for both), optional ``split``, ``type`` and ``task``; they become the card's eval
  results (the first is the headline), so the Hub shows the numbers the experiment produced;
* ``comparisons``: baselines and published figures (same keys, plus ``source``), shown in the body only;
* ``license``: the Hub license id of the weights (e.g. ``mit``); ``data_license`` the data's, in words;
* ``description``, ``intended_use``, ``limitations``, ``usage`` (a runnable Python snippet), ``experiment``,
  ``version``, ``git_sha``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dataset_of", "render_card"]


def dataset_of(metric: Mapping[str, Any]) -> tuple[str, str]:
    """``(id, name)`` of a metric's dataset (a dict with ``id``/``name`` or one string)."""
    ds = metric.get("dataset", "unknown")
    if isinstance(ds, Mapping):
        return str(ds.get("id", ds.get("name", "unknown"))), str(ds.get("name", ds.get("id", "unknown")))
    return str(ds), str(ds)


def _row(m: Mapping[str, Any]) -> str:
    _, ds = dataset_of(m)
    src = f" | {m['source']}" if "source" in m else ""
    return f"| {m['name']} | {m['value']} | {ds} | {m.get('split', '')}{src} |"


def render_card(
    config: dict[str, Any], snapshots: list[str], state_info: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """The model card text for a saved model's ``config`` (as written to ``config.json``)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    meta = dict(config.get("metadata", {}))
    name = meta.get("name", config["architecture"])
    metrics = list(meta.get("metrics", []))
    results = [
        EvalResult(
            task_type=m.get("task", meta.get("task", "text-generation")),
            dataset_type=dataset_of(m)[0],
            dataset_name=dataset_of(m)[1],
            dataset_split=m.get("split"),
            metric_type=m.get("type", m["name"]),
            metric_name=m["name"],
            metric_value=m["value"],
        )
        for m in metrics
    ]
    datasets = sorted({dataset_of(m)[0] for m in metrics if "/" in dataset_of(m)[0]})
    data = ModelCardData(
        library_name="tracetorch",
        license=meta.get("license"),
        tags=["tracetorch", config["architecture"], *meta.get("tags", [])],
        datasets=datasets or None,
        model_name=name,
        eval_results=results or None,
        pipeline_tag=meta.get("task"),
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
    for key in ("experiment", "version", "git_sha"):
        if key in meta:
            lines.append(f"| {key} | {meta[key]} |")
    if snapshots:
        lines.append(f"| state snapshots | {', '.join(f'`{s}`' for s in snapshots)} |")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value | dataset | split |", "|---|---|---|---|"]
        lines += [_row(m) for m in metrics]
    if meta.get("comparisons"):
        lines += ["", "## Compared with", "", "| model | value | dataset | split | where |", "|---|---|---|---|---|"]
        lines += [_row(m) for m in meta["comparisons"]]
    if snapshots:
        lines += ["", "## Hidden-state snapshots", ""]
        for s in snapshots:
            info = dict((state_info or {}).get(s, {}))
            what = info.pop("meaning", "") or ", ".join(f"{k}: {v}" for k, v in sorted(info.items()))
            lines.append(f"- `{s}`: {what}" if what else f"- `{s}`")
    usage = meta.get("usage") or "\n".join(
        [
            "import tracetorch_zoo as zoo",
            "",
            f'model = zoo.load("path/or/hf-hub:owner/name@revision"{_states_arg(snapshots)})',
        ]
    )
    lines += ["", "## Use", "", "```python", usage.rstrip(), "```"]
    for key, title in (("intended_use", "Intended use"), ("limitations", "Limitations")):
        if meta.get(key):
            lines += ["", f"## {title}", "", meta[key]]
    if meta.get("data_license") or meta.get("license"):
        lines += ["", "## License", ""]
        if meta.get("license"):
            lines.append(f"Weights: `{meta['license']}`.")
        if meta.get("data_license"):
            lines.append(f"Training data: {meta['data_license']}.")
    lines += [
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
