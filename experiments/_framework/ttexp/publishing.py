"""What every experiment's ``publish`` shares: the finished run's results, and the call to ``tracetorch_zoo.publish``
with the run's folders, config and provenance filled in. An experiment supplies only its model, snapshot, golden
inputs and card metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .results import read_results

__all__ = ["finished_results", "publish_entry", "trained_weights"]


def finished_results(ctx) -> dict[str, Any]:
    """``results.json`` of this version's finished run; an error if it was made with another config."""
    results = read_results(ctx.results_dir / "results.json")
    if results["provenance"]["config_hash"] != ctx.config.hash:
        raise SystemExit(f"{ctx.name} publish: results.json was made with another config; re-run the experiment")
    return results


def trained_weights(ctx, part_dir: str | Path, model_results: dict[str, Any]) -> Path:
    """The weights file of a finished part (``part_dir/model.safetensors``), after checking that they are the weights
    whose results are published: the part's own ``result.json`` beside them must equal ``model_results`` (the entry
    of ``results.json``). A run folder from another run of the same config (retrained, say, after its scratch was
    lost) would otherwise pair its weights with the first run's metrics."""
    import json

    part_dir = Path(part_dir)
    weights, own = part_dir / "model.safetensors", part_dir / "result.json"
    if not weights.is_file() or not own.is_file():
        raise SystemExit(f"{ctx.name} publish: {part_dir} holds no finished run (model.safetensors and result.json)")
    if json.loads(own.read_text()) != model_results:
        raise SystemExit(
            f"{ctx.name} publish: the weights in {part_dir} come from another run than results.json reports (their "
            f"result.json differs). Collect that run's results into results.json first (python -m ttexp run "
            f"{ctx.name} {ctx.version} --only <part> --run-dir <that run>), or publish the run the results came from."
        )
    return weights


def publish_entry(
    ctx,
    model: nn.Module,
    results: dict[str, Any],
    model_results: dict[str, Any],
    *,
    pc: dict[str, Any],
    snapshot: tuple[str, dict[str, Tensor | None], dict[str, str]],
    golden_inputs: Tensor,
    metadata: dict[str, Any],
    license: str,
    tag: str | None = None,
    endpoint: str | None = None,
    local_hub: str | os.PathLike | None = None,
    repo_id: str | None = None,
    registry_dir: str | os.PathLike | None = None,
) -> Path:
    """Publish ``model`` as the entry ``pc["name"]`` (``pc``: the resolved ``[publish]`` table) with one named
    snapshot ``(name, states, info)``; ``results.json`` in the entry is the run's results with ``models`` replaced
    by ``model`` = ``model_results``. Returns the entry's JSON path."""
    from tracetorch_zoo.publish import publish

    name, states, info = snapshot
    return publish(
        model,
        name=pc["name"],
        repo_id=repo_id or pc["repo_id"],
        work_dir=ctx.run_dir / "publish",
        tag=tag or f"{ctx.name}-{ctx.version}",
        states={name: states},
        state_info={name: info},
        metadata=metadata,
        results={k: v for k, v in results.items() if k != "models"} | {"model": model_results},
        experiment_config=ctx.config.path,
        golden_inputs=golden_inputs,
        license=license,
        endpoint=endpoint,
        local_hub=local_hub,
        registry_dir=registry_dir,
        embed=pc.get("embed", False),
    )
