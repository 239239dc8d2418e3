"""Run inside a fresh venv holding only tracetorch-core (see ``nox -s isolation``).

Fails if any installed distribution is outside the dependency closure of tracetorch-core (plus the venv's
own pip/setuptools), or if ``import tracetorch`` fails.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys

BASELINE = {"pip", "setuptools", "wheel"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str) -> set[str]:
    """Names reachable from ``root`` through Requires-Dist, ignoring extras (markers other than extras may
    apply, so they are kept: the check errs on the side of allowing)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req.replace('"', "").replace("'", "") or "extra==" in req:
                continue
            todo.append(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))
    return seen


installed = {norm(d.metadata["Name"]) for d in md.distributions()}
allowed = closure("tracetorch-core") | BASELINE
extra = sorted(installed - allowed)
print("installed:", ", ".join(sorted(installed)))
print("allowed closure:", ", ".join(sorted(allowed)))
for needed in ("tracetorch-core", "torch", "safetensors", "numpy"):
    if needed not in installed:
        sys.exit(f"FAIL: {needed} is not installed")
if extra:
    sys.exit(f"FAIL: installed beyond tracetorch-core's dependency closure: {', '.join(extra)}")

import tracetorch as tt  # noqa: E402

x = tt.snn.LIB(4)(tt.snn.LI(4)(__import__("torch").ones(2, 4)))
print(f"import tracetorch {tt.__version__} works; LI -> LIB output shape {tuple(x.shape)}")
print("OK: nothing beyond torch, safetensors, numpy and their own requirements")
