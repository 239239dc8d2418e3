"""A run's artefacts appear complete or not at all, and "done" is recorded last (``ttexp.files.atomic_write``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ttexp.files import atomic_write, write_text
from ttexp.results import write_json

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.md"
    write_text(path, "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """The parallel parts of one ``reproduce`` once dumped the same corpus through one fixed temporary name: the
    second rename found the file gone (FileNotFoundError) and killed its part."""
    path, errors = tmp_path / "corpus.txt", []

    def write(i: int) -> None:
        try:
            for _ in range(50):
                write_text(path, f"{i}\n" * 1000)
        except Exception as e:  # collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(path.read_text().splitlines())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]


# a writer that is not ttexp.files'; lines that write to a temporary path (inside atomic_write) are fine
DIRECT_WRITE = re.compile(r"\.(write_text|write_bytes|savefig)\(|\b(save_file|torch\.save|np\.savez\w*)\(")


@pytest.mark.parametrize(
    "source",
    sorted([*EXPERIMENTS.glob("*/experiment.py"), *(EXPERIMENTS / "_framework" / "ttexp").glob("*.py")]),
    ids=lambda p: str(p.relative_to(EXPERIMENTS)),
)
def test_experiments_write_artefacts_only_atomically(source):
    offending = [
        f"{source.name}:{n}: {line.strip()}"
        for n, line in enumerate(source.read_text().splitlines(), 1)
        if DIRECT_WRITE.search(line) and "tmp" not in line and not line.lstrip().startswith(("#", "def "))
    ]
    assert not offending, "write through ttexp.files.atomic_write / ttexp.results:\n" + "\n".join(offending)


KILL_DURING_FINAL_WEIGHTS = """
import os, sys
from pathlib import Path
import safetensors.torch as st

real = st.save_file

def save_file(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    if Path(filename).parent.name == "stream":  # the part's final weights (checkpoints go to their own folders)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        os._exit(137)  # killed half-way through the write: no cleanup runs

st.save_file = save_file
from ttexp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_while_the_final_weights_are_written_leaves_the_part_unfinished(tmp_path):
    """``online_bytelm`` once wrote ``result.json`` first and the weights after, not atomically: killed in between, a
    rerun reported the part done and kept a half-written ``model.safetensors``. Now a kill there leaves neither, and
    the rerun trains the part again and ends with readable weights."""
    run_dir = tmp_path / "run"
    args = ["run", "online_bytelm", "v1", "--variant", "smoke", "--only", "stream", "--threads", "1"]
    args += ["--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_FINAL_WEIGHTS, *args], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert killed.returncode == 137, killed.stderr[-3000:]
    part = run_dir / "stream"
    assert not (part / "result.json").exists(), "the part is recorded done though its weights are half-written"
    assert not (part / "model.safetensors").exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "ttexp", *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert load_file(str(part / "model.safetensors"))
    assert json.loads((part / "result.json").read_text())["steps"] == 8000


def test_results_pages_link_their_plots(tmp_path):
    """``results.md`` ends with a Plots section showing every plot the experiment wrote (none: no section)."""
    from ttexp.cli import plot_links

    assert plot_links(tmp_path) == ""
    for name in ("memory.png", "accuracy_vs_beta.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    assert plot_links(tmp_path) == "\n## Plots\n\n![accuracy vs beta](accuracy_vs_beta.png)\n![memory](memory.png)\n"
