"""Interleaved A/B timing of the core's hot paths between two source trees (say, before and after a refactoring).

Each run starts a fresh process per tree (``PYTHONPATH`` pointing at that tree's ``src``), alternating A and B, and
times the best of 5 loops of: a LIB no-grad streaming step, a DSLIT scan with its backward, an LSTM and a Mamba
no-grad step (one thread). Reported: the median over runs of the new/old ratio and its range, the spread of this
noisy machine included::

    python tools/ab_timing.py OLD_SRC NEW_SRC [RUNS]     # e.g. /tmp/old/packages/tracetorch-core/src src 9

It measures no peer library (``nox -s bench`` does); it answers "did this change slow a hot path down".
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CODE = r"""
import json, time, torch, tracetorch as tt
torch.set_num_threads(1)
out = {}
def best(fn, n, reps=5):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(n); ts.append((time.perf_counter() - t0) / n)
    return min(ts)
def no_grad_steps(layer, x, n):
    def run(k):
        with torch.no_grad():
            for _ in range(k):
                layer(x)
    with torch.no_grad():
        layer(x)
    return best(run, n) * 1e6
out["LIB no-grad step us"] = no_grad_steps(tt.snn.LIB(256), torch.randn(32, 256), 2000)
d = tt.snn.DSLIT(256)
xs = torch.randn(64, 32, 256, requires_grad=True)
def scans(k):
    for _ in range(k):
        tt.zero_states(d); d.scan(xs).sum().backward()
out["DSLIT scan+backward ms"] = best(scans, 10) * 1e3
out["LSTM no-grad step us"] = no_grad_steps(tt.rnn.LSTM(64, 128), torch.randn(32, 64), 2000)
out["Mamba no-grad step us"] = no_grad_steps(tt.ssm.Mamba(64, 8), torch.randn(4, 64), 1000)
print(json.dumps(out))
"""


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    trees = {"old": sys.argv[1], "new": sys.argv[2]}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    results: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for _ in range(runs):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout))
    for key in results["old"][0]:
        old = [r[key] for r in results["old"]]
        new = [r[key] for r in results["new"]]
        ratios = [b / a for a, b in zip(old, new, strict=True)]
        print(
            f"{key:24s} old {statistics.median(old):8.2f} new {statistics.median(new):8.2f}  new/old median "
            f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, {runs} runs)"
        )


if __name__ == "__main__":
    main()
