"""The tracetorch-zoo command line: list, info, download, generate (streaming), push; errors exit non-zero."""

from __future__ import annotations

import pytest
import torch
from test_pretrained import TinySNN
from torch import nn

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch import snn
from tracetorch_zoo.cli import main


@zoo.register("test-toy-bytes")
class ToyBytes(tt.Model):
    """A tiny byte model with hidden state: enough to exercise the streaming protocol of the CLI."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, hidden)
        self.mem = snn.LI(hidden, beta=0.8)
        self.head = nn.Linear(hidden, 256)

    def forward(self, byte: torch.Tensor) -> torch.Tensor:
        return self.head(self.mem(self.embed(byte)))

    def stream_bytes(self, prompt: bytes, *, max_bytes: int, temperature: float, top_k: int, generator):
        logits = None
        for b in prompt:
            logits = self(torch.tensor([b]))
        for _ in range(max_bytes):
            probs = torch.softmax(logits[0] / max(temperature, 1e-6), -1)
            if top_k:
                probs = torch.zeros_like(probs).scatter(0, probs.topk(top_k).indices, probs.topk(top_k).values)
            nxt = int(torch.multinomial(probs, 1, generator=generator))
            yield bytes([nxt])
            logits = self(torch.tensor([nxt]))


def test_generate_streams_reproducible_bytes(tmp_path, capsysbinary):
    torch.manual_seed(0)
    model = ToyBytes()
    folder = zoo.save_pretrained(model, tmp_path / "toy")
    runs = []
    for seed in (1, 1, 2):
        assert main(["generate", str(folder), "--prompt", "ab", "--max-bytes", "40", "--seed", str(seed)]) == 0
        runs.append(capsysbinary.readouterr().out)
    assert runs[0] == runs[1] != runs[2]
    assert runs[0].startswith(b"ab") and len(runs[0]) == 2 + 40 + 1
    assert main(["generate", str(folder), "--prompt", "a", "--max-bytes", "5", "--top-k", "1"]) == 0


def test_info_list_and_errors(tmp_path, capsys):
    folder = zoo.save_pretrained(TinySNN(), tmp_path / "tiny", metadata={"license": "mit"})
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "# test-tiny-snn" in out and "architecture: test-tiny-snn" in out
    assert main(["list", "no-such-*"]) == 0
    assert "no registered models" in capsys.readouterr().out
    assert main(["generate", str(folder), "--prompt", "x"]) == 1
    assert "not a byte language model" in capsys.readouterr().err
    assert main(["download", "test-tiny-snn.nope"]) == 1
    assert "no model called" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", str(folder)])  # --prompt is required


def test_push_and_download_through_a_local_hub(tmp_path, capsys, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from tracetorch_zoo.testing import LocalHub

    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))
    folder = zoo.save_pretrained(TinySNN(), tmp_path / "tiny")
    with LocalHub(tmp_path / "hub") as hub:
        common = ["--endpoint", hub.endpoint, "--token", "t", "--cache-dir", str(tmp_path / "cache")]
        assert main([*common, "push", str(folder), "tracetorch/cli", "--tag", "v1"]) == 0
        sha = capsys.readouterr().out.strip()
        assert len(sha) == 40 and hub.resolve("tracetorch/cli", "v1") == sha
        assert main([*common, "download", "hf-hub:tracetorch/cli@v1"]) == 0
        path = capsys.readouterr().out.strip()
    assert path.endswith(sha) and zoo.file_hashes(path) == zoo.file_hashes(folder)


def test_version_and_type_marker(capsys):
    """``tracetorch-zoo --version`` names the package and its version (one source: ``_version.py``), and the package
    ships ``py.typed`` so type checkers read its annotations."""
    from importlib import resources

    from tracetorch_zoo._version import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"tracetorch-zoo {__version__}"
    assert resources.files("tracetorch_zoo").joinpath("py.typed").is_file()
