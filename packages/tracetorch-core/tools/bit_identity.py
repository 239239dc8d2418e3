"""Before/after bit-identity check of every number the core computes, on every CPU backend of this machine.

A refactoring of the fast paths must not change one bit. This script runs every layer kind (the 32 spiking types,
SimpleRNN/LSTM/GRU, S4D/S6/Mamba) in every ``dim=`` layout of the test suite (dense, conv ``dim=-3``, a positive
``dim``, unbatched), in float32 and float64, from non-zero initial states, through every way of running it:

* ``steps``, ``scan``, ``chunks`` (two scans, states carried) with autograd: outputs, final states and the
  gradients of the input, every parameter and every initial state (``conftest.run``'s loss);
* the same with every parameter frozen (cached derived parameters under autograd);
* under autocast (bfloat16, float32 layers): the autocast policy;
* ``no_grad`` steps and scans, ``inference_mode`` steps, steps then a scan, a TTcompiled layer: outputs and final
  states (the no-grad streaming engines);
* a no-grad stream whose parameters change in place, then get new storage, then restart from ``zero_states``
  (cache invalidation);

under each backend (``native``: the C kernels; ``torch``: ``TRACETORCH_BACKEND=torch``), each in its own process, with
fixed seeds, into one safetensors file. Layers and initial states come from the test suite's helpers
(``tests/conftest.py``: ``random_layer``, ``random_initial_states``, ``LAYOUTS``, ``run``).

It lives in ``tools/`` rather than ``tests/`` or ``benchmarks/``: it compares two commits (a reference file written
at one, checked at another), which a test run cannot do, and it measures no speed::

    python tools/bit_identity.py record /work/runs/bitid/before.safetensors    # at the old commit
    python tools/bit_identity.py record /work/runs/bitid/after.safetensors     # at the new one
    python tools/bit_identity.py compare /work/runs/bitid/before.safetensors /work/runs/bitid/after.safetensors

``compare`` lists every key present in only one file and every tensor whose dtype, shape or bytes differ (NaNs and
signed zeros compared as bits), and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
BACKENDS = {"native": {"TRACETORCH_BACKEND": "auto"}, "torch": {"TRACETORCH_BACKEND": "torch"}}
SEEDS = 2  # configurations per (kind, layout, dtype)


def _configs(kinds, layouts):
    """``(name, kind, layout, dtype, seed, steps)`` of every configuration, in a fixed order."""
    import torch

    out = []
    for kind in kinds:
        for layout in sorted(layouts):
            for dtype in (torch.float32, torch.float64):
                for seed in range(SEEDS):
                    out.append((f"{kind}.{layout}.{str(dtype)[6:]}.{seed}", kind, layout, dtype, seed, 7))
        for dtype in (torch.float32, torch.float64):  # long enough for Mamba's streaming buffer to wrap (32 steps)
            out.append((f"{kind}.dense.{str(dtype)[6:]}.long", kind, "dense", dtype, 99, 40))
    return out


def _nograd_run(layer, x, initial, how: str):
    """``(y, final states)`` of a no-grad run: ``steps``, ``scan``, ``inference`` (steps under inference mode),
    ``mixed`` (steps, then a scan of the rest), ``edit`` (steps while the parameters change)."""
    import torch

    import tracetorch as tt

    layer = copy.deepcopy(layer)
    tt.zero_states(layer)
    if initial is not None:
        tt.load_states(layer, initial)
    k = max(1, x.shape[0] // 3)
    ctx = torch.inference_mode() if how == "inference" else torch.no_grad()
    with ctx:
        if how == "scan":
            y = layer.scan(x)
        elif how == "mixed":
            y = torch.cat([torch.stack([layer(xt) for xt in x[:k].unbind(0)]), layer.scan(x[k:])])
        elif how == "edit":
            ys = [layer(xt) for xt in x[:k].unbind(0)]
            for p in layer.parameters():  # in place: a version counter bump
                p.mul_(0.9)
            ys += [layer(xt) for xt in x[k : 2 * k].unbind(0)]
            for p in layer.parameters():  # new storage behind the same Parameter
                p.data = p.data * 1.05
            ys += [layer(xt) for xt in x[2 * k :].unbind(0)]
            tt.zero_states(layer)  # a new stream from the same initial states
            if initial is not None:
                tt.load_states(layer, initial)
            ys += [layer(xt) for xt in x.unbind(0)]
            y = torch.stack(ys)
        else:
            y = torch.stack([layer(xt) for xt in x.unbind(0)])
    return y, {k: v for k, v in tt.get_states(layer).items()}


def _record_backend(path: str, kinds: list[str]) -> None:
    """Write every configuration's tensors under this process's backend to ``path``."""
    sys.path.insert(0, str(TESTS))
    import torch
    from conftest import LAYOUTS, random_initial_states, random_layer, run
    from safetensors.torch import save_file

    import tracetorch as tt
    from tracetorch.functional import make_spike_fn

    torch.set_num_threads(1)
    tensors, none, errors = {}, [], {}

    def put(prefix, fn, *args):
        """Record ``fn(*args)`` (``(y, finals[, grads])``) under ``prefix``, or the error it raises."""
        try:
            y, finals, *grads = fn(*args)
        except Exception as exc:  # an error is a result too: the same one must come before and after
            errors[prefix] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return
        grads = grads[0] if grads else None
        items = {"y": y, **{f"state:{k}": v for k, v in finals.items()}}
        items.update({f"grad:{k}": v for k, v in (grads or {}).items()})
        for k, v in items.items():
            if v is None:
                none.append(f"{prefix}/{k}")
            else:
                tensors[f"{prefix}/{k}"] = v.detach().clone().contiguous()

    for name, kind, layout, dtype, seed, steps in _configs(kinds, LAYOUTS):
        rng = random.Random(f"bitid:{name}")
        dim, shape = LAYOUTS[layout]
        n = 5
        torch.manual_seed(seed)
        layer = random_layer(kind, n, rng, dim=dim, dtype=dtype)
        if seed == 0 and kind in tt.functional.NAMES and layer.spec.fires:
            layer.spike_fn = make_spike_fn("sigmoid")  # Heaviside forward: the native kernels' case
        gen = torch.Generator().manual_seed(1000 + seed)
        x = (torch.randn(steps, *shape(n), generator=gen, dtype=torch.float64) * 1.5).to(dtype)
        initial = random_initial_states(layer, x[0], gen)
        split = [steps // 2, steps - steps // 2]
        for mode in ("steps", "scan", "chunks"):
            put(f"{name}/{mode}", run, layer, x, initial, mode, split)
            frozen = copy.deepcopy(layer).requires_grad_(False)
            put(f"{name}/frozen_{mode}", run, frozen, x, initial, mode, split)
        if dtype == torch.float32:
            for mode in ("steps", "scan"):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    put(f"{name}/autocast_{mode}", run, layer, x, initial, mode)
        for how in ("steps", "scan", "inference", "mixed", "edit"):
            put(f"{name}/nograd_{how}", _nograd_run, layer, x, initial, how)
        folded = copy.deepcopy(layer)
        folded.TTcompile()
        for how in ("steps", "scan"):
            put(f"{name}/ttcompiled_{how}", _nograd_run, folded, x, initial, how)

    from tracetorch.ops.fire import native

    meta = {
        "none": json.dumps(sorted(none)),
        "errors": json.dumps(errors, sort_keys=True),
        "native_status": native.native_status(),
        "torch": torch.__version__,
    }
    save_file(tensors, path, metadata=meta)


def record(out: Path, kinds: list[str] | None) -> None:
    """Record every backend (one subprocess each) into one file; keys ``<backend>/<config>/<mode>/<what>``."""
    sys.path.insert(0, str(TESTS))
    import torch  # noqa: F401 - imported before safetensors' torch helpers
    from conftest import LAYER_KINDS
    from safetensors import safe_open
    from safetensors.torch import save_file

    kinds = kinds or list(LAYER_KINDS)
    tensors, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, env in BACKENDS.items():
            part = os.path.join(tmp, f"{backend}.safetensors")
            cmd = [sys.executable, __file__, "_worker", part, *kinds]
            subprocess.run(cmd, check=True, env={**os.environ, **env, "OMP_NUM_THREADS": "1"})
            with safe_open(part, framework="pt") as f:
                info = f.metadata()
                for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensors[f"{backend}/{k}"] = f.get_tensor(k)
            meta[f"{backend}.none"] = json.dumps([f"{backend}/{k}" for k in json.loads(info["none"])])
            meta[f"{backend}.errors"] = json.dumps({f"{backend}/{k}": v for k, v in json.loads(info["errors"]).items()})
            meta[f"{backend}.native_status"] = info["native_status"]
            print(f"{backend}: native kernels {info['native_status']!r}", flush=True)
    if meta["native.native_status"] != "loaded":
        raise SystemExit("the native kernels did not load: the 'native' backend would repeat the torch one")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    print(f"{len(tensors)} tensors -> {out}")


def _bits(t):
    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def compare(a_path: Path, b_path: Path) -> int:
    """Report every difference between two recordings; returns the number of differences."""
    import torch
    from safetensors import safe_open

    def load(p):
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata()
            keys = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        nones, errors = set(), {}
        for k, v in meta.items():
            if k.endswith(".none"):
                nones.update(json.loads(v))
            elif k.endswith(".errors"):
                errors.update(json.loads(v))
        return keys, nones, errors

    a, a_none, a_err = load(a_path)
    b, b_none, b_err = load(b_path)
    problems = []
    for k in sorted(a_err.keys() | b_err.keys()):
        if a_err.get(k) != b_err.get(k):
            problems.append(f"{k}: raised {a_err.get(k)!r} vs {b_err.get(k)!r}")
    problems += [f"only in {a_path.name}: {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"only in {b_path.name}: {k}" for k in sorted(b.keys() - a.keys())]
    problems += [f"None only in {a_path.name}: {k}" for k in sorted(a_none - b_none)]
    problems += [f"None only in {b_path.name}: {k}" for k in sorted(b_none - a_none)]
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
        elif not torch.equal(_bits(x), _bits(y)):
            diff = (x.double() - y.double()).abs().nan_to_num(nan=float("inf")).max().item()
            problems.append(f"{k}: not bit-identical (max abs difference {diff:g})")
    for p in problems:
        print(p)
    backends = sorted({k.split("/", 1)[0] for k in a})
    print(
        f"compared {len(a.keys() & b.keys())} tensors ({', '.join(backends)} backends), "
        f"{len(a_none & b_none)} absent gradients, {len(a_err.keys() & b_err.keys())} errors raised by both: "
        f"{len(problems)} differences"
    )
    return len(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run every configuration on every backend into one file")
    rec.add_argument("out", type=Path)
    rec.add_argument("--kinds", nargs="*", help="only these layer kinds (default: all)")
    cmp_ = sub.add_parser("compare", help="list the tensors that differ between two recordings")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    worker = sub.add_parser("_worker")  # one backend, in its own process (the backend is chosen at import)
    worker.add_argument("out")
    worker.add_argument("kinds", nargs="+")
    args = parser.parse_args()
    if args.cmd == "record":
        record(args.out, args.kinds)
    elif args.cmd == "compare":
        raise SystemExit(1 if compare(args.a, args.b) else 0)
    else:
        with contextlib.suppress(BrokenPipeError):
            _record_backend(args.out, args.kinds)


if __name__ == "__main__":
    main()
