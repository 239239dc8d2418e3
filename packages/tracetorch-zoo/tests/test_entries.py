"""Every packaged registry entry is what it claims: pinned files, golden tensors (scan and step by step), snapshots,
a model card the Hub client parses whose usage snippet runs; the README's catalog and usage blocks are current."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import torch

import tracetorch_zoo as zoo
from tracetorch_zoo.catalog import END, START, markdown_table

EMBEDDED = [n for n in zoo.list_models() if zoo.get_entry(n).embedded]
README = Path(__file__).resolve().parents[3] / "README.md"  # the repository's README (tests run from a checkout)


def _folder(entry) -> Path:
    return Path(str(resources.files("tracetorch_zoo") / entry.embedded))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_zoo_covers_snn_rnn_and_ssm():
    families = [zoo.architectures.family_of(zoo.get_entry(n).architecture) for n in zoo.list_models()]
    assert len(families) >= 6 and {"snn", "rnn", "ssm"} <= set(families)
    assert families.count("snn") >= 3
    assert set(EMBEDDED) == set(zoo.list_models())  # all of them load offline on a fresh machine


@pytest.mark.parametrize("name", EMBEDDED)
def test_packaged_entry_is_what_it_claims(name):
    """Files match the pinned hashes, parameter count and size are right, the golden tensors reproduce (scan and
    step by step), every snapshot loads and continues the stream."""
    entry = zoo.get_entry(name)
    folder = _folder(entry)
    zoo.verify_files(folder, entry.files, "embedded entry")
    assert set(zoo.file_hashes(folder)) == set(entry.files)
    assert entry.metadata["size_bytes"] == sum((folder / p).stat().st_size for p in entry.files)
    zoo.verify_golden(folder)
    assert entry.snapshots and set(entry.snapshots) == set(zoo.list_snapshots(folder))
    for snap in entry.snapshots:
        model = zoo.load(name, states=snap)
        assert sum(p.numel() for p in model.parameters()) == entry.metadata["num_parameters"]
        assert all(v is not None for v in model.get_states().values()), snap


@pytest.mark.parametrize("name", EMBEDDED)
def test_model_card_parses_and_its_usage_runs(name):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    entry = zoo.get_entry(name)
    card_path = _folder(entry) / "README.md"
    card = ModelCard.load(card_path)
    meta = metadata_load(card_path)
    assert meta["library_name"] == "tracetorch" and re.fullmatch(r"[a-z0-9.-]+", card.data.license)
    results = card.data.eval_results
    headline = entry.metadata["metrics"][0]
    assert results and results[0].metric_name == headline["name"] and results[0].metric_value == headline["value"]
    for r in results:  # real dataset ids and names, never a local path
        assert not r.dataset_type.startswith(("/", ".", "experiments")) and ".data" not in r.dataset_name
    blocks = _python_blocks(card.text)
    assert blocks, "the card has a usage snippet"
    exec(compile(blocks[0], f"{name}/README.md", "exec"), {})


def test_readme_catalog_is_generated_from_the_entries():
    text = README.read_text()
    section = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert section == markdown_table(), "README catalog is stale: python -m tracetorch_zoo.catalog --update README.md"


def test_readme_usage_blocks_run():
    text = README.read_text().split("<!-- zoo-usage:start -->", 1)[1].split("<!-- zoo-usage:end -->", 1)[0]
    blocks = _python_blocks(text)
    assert len(blocks) >= 3
    torch.manual_seed(0)
    for i, block in enumerate(blocks):
        exec(compile(block, f"README zoo block {i}", "exec"), {})
