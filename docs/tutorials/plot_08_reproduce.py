"""
Reproducing an experiment
=========================

Every experiment is a folder ``experiments/<name>/`` with one folder per version: a TOML config, the committed
results (``results.json`` with provenance, ``results.md``, plots) and ``expected.json``, the tolerances a
reproduction must meet. One nox command reproduces a version (resumable: rerun it after an interruption)::

    nox -s "reproduce(experiment='poisson_clicks', version='v1')"
    nox -s check          # every committed results.json against its expected.json, no training

Here the experiment's ``smoke`` variant (a tiny config that CI runs) goes through the same runner in seconds.
"""

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:  # the runner, installed from the repository: pip install -e experiments/_framework
    import ttexp
except ImportError:
    ttexp = None

if ttexp is None:
    print("ttexp is not installed here; in a checkout: pip install -e experiments/_framework")
else:
    run_dir = Path(tempfile.mkdtemp())
    cmd = [sys.executable, "-m", "ttexp", "run", "poisson_clicks", "v1", "--variant", "smoke", "--run-dir",
           str(run_dir), "--threads", "1"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    results = json.loads(next(run_dir.rglob("results.json")).read_text())
    print("provenance:", {k: results["provenance"][k] for k in ("config_hash", "seed", "threads", "python")})
    print(next(run_dir.rglob("results.md")).read_text())
