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


def _fresh_python(code: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_help_version_and_list_do_not_import_torch():
    """The help, the version and the listing need no model: they must not pay torch's import (seconds)."""
    code = (
        "import sys, contextlib, io\n"
        "from tracetorch_zoo.cli import main\n"
        "for argv in (['--help'], ['generate', '--help'], ['--version'], ['list']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'tracetorch', 'huggingface_hub') if m in sys.modules))\n"
    )
    assert _fresh_python(code).strip() == "[]"


def test_lazy_package_still_loads_and_builds():
    """``import tracetorch_zoo`` is lazy; its names, submodules and the built-in architectures resolve on use."""
    code = (
        "import sys\nimport tracetorch_zoo as zoo\n"
        "print('torch' in sys.modules, 'bytelm-mamba' in zoo.architecture_names(), zoo.bytelm.MambaByteLM.__name__)\n"
    )
    assert _fresh_python(code).split() == ["False", "True", "MambaByteLM"]


def test_every_argument_has_help_and_hub_options_go_anywhere(monkeypatch):
    import argparse

    from tracetorch_zoo.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{name or 'tracetorch-zoo'} {action.dest} has no help text"
    before = parser.parse_args(["--endpoint", "http://a", "list"])
    after = parser.parse_args(["list", "--endpoint", "http://b", "--cache-dir", "c"])
    neither = parser.parse_args(["list"])
    assert (before.endpoint, after.endpoint, after.cache_dir, neither.endpoint) == ("http://a", "http://b", "c", None)


def test_interrupt_and_unexpected_errors_are_one_line(monkeypatch, capsys):
    import tracetorch_zoo.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    def buggy(args):
        raise RuntimeError("boom\nsecond line")

    def user_error(args):
        raise tt.StateError("the batch size changed mid-stream")

    for fn, status, expected in (
        (interrupted, 130, "tracetorch-zoo: interrupted"),
        (buggy, 1, "tracetorch-zoo: unexpected RuntimeError: boom second line (a bug in tracetorch-zoo?"),
        (user_error, 1, "tracetorch-zoo: the batch size changed mid-stream"),
    ):
        monkeypatch.setattr(cli, "_cmd_list", fn)
        assert cli.main(["list"]) == status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(expected), err
