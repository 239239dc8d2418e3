"""Optional native CPU kernels, compiled on first use with the system C compiler and loaded with ``ctypes``.

The binary firing core (``LIB``, and ``SLIB`` after its synaptic stage) has a C kernel for its whole-sequence
forward and backward and its streaming step (``_native_lif.c``): one pass over memory per direction, time
innermost, the parameters read once per sequence. Nothing here is required: without a C compiler (or with
``TRACETORCH_NATIVE=0``) the pure-torch kernels of :mod:`tracetorch.snn.fused` run, and both give the same
outputs bit for bit.

The library is built once per source, compiler and CPU into ``$TRACETORCH_CACHE`` (default
``~/.cache/tracetorch``)``/native/`` with ``-O3 -march=native -ffp-contract=off`` (no fused multiply-adds, so
the forward repeats torch's rounding) and reused afterwards. :func:`native_status` says whether it loaded
and, if not, why.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "empty_like_huge",
    "flat_param",
    "lif_backward",
    "lif_forward",
    "lif_step",
    "native_available",
    "native_status",
    "param_layout",
]

_SOURCE = Path(__file__).with_name("_native_lif.c")
_ABI = 3
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]
SURROGATE_KIND = {"sigmoid": 0, "atan": 1, "fast_sigmoid": 2, "triangle": 3}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status: str | None = None  # None: not tried yet


def _cpu_signature() -> str:
    """What -march=native depends on: a library built for one CPU must not load on another."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("TRACETORCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tracetorch")
    return Path(root) / "native"


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc/clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, version.encode(), " ".join(_FLAGS).encode(), _cpu_signature().encode()]))
    name = f"tt_native_{key.hexdigest()[:16]}.so"
    out = _cache_dir() / name
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(out.parent, os.W_OK):
                raise PermissionError(out.parent)
        except OSError:  # a read-only home: build per user under the temporary directory
            out = Path(tempfile.gettempdir()) / f"tracetorch-native-{os.getuid()}" / name
            out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        # build into a temporary name, then rename: concurrent processes never load a half-written file
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            res = subprocess.run(
                [cc, *_FLAGS, "-o", tmp, str(_SOURCE), "-lm"], capture_output=True, text=True, timeout=300
            )
            if res.returncode != 0:
                raise RuntimeError(f"{cc} failed: {res.stderr.strip()[-2000:]}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    if lib.tt_native_abi() != _ABI:
        raise RuntimeError(f"{out} has ABI {lib.tt_native_abi()}, expected {_ABI}")
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    for sfx in ("f32", "f64"):
        fwd = getattr(lib, f"tt_lif_fwd_{sfx}")
        fwd.argtypes = [i64] * 5 + [ptr] * 8
        fwd.restype = None
        bwd = getattr(lib, f"tt_lif_bwd_{sfx}")
        bwd.argtypes = [i64] * 5 + [ptr] * 6 + [f64, i32, i32] + [ptr] * 6
        bwd.restype = None
    for sfx in ("f32", "f64"):
        step = getattr(lib, f"tt_lif_step_{sfx}")
        step.argtypes = [ptr] * 4
        step.restype = None
    lib.tt_advise_huge.argtypes = [ptr, i64]
    lib.tt_advise_huge.restype = None
    return lib


_HUGE_MIN = 8 << 20


def empty_like_huge(like: Tensor) -> Tensor:
    """``torch.empty_like(like)`` (contiguous), with transparent huge pages requested when it is large."""
    out = torch.empty(like.shape, dtype=like.dtype)
    if out.nbytes >= _HUGE_MIN and _lib is not None:
        _lib.tt_advise_huge(out.data_ptr(), out.nbytes)
    return out


def _load() -> ctypes.CDLL | None:
    global _lib, _status
    if _status is not None:
        return _lib
    with _lock:
        if _status is not None:
            return _lib
        if os.environ.get("TRACETORCH_NATIVE", "1") == "0":
            _status = "disabled by TRACETORCH_NATIVE=0"
        elif sys.platform == "win32":
            _status = "not built on Windows"
        else:
            try:
                _lib = _build()
                _status = "loaded"
            except Exception as exc:  # any failure means: use the torch kernels
                _status = f"unavailable: {exc}"
    return _lib


def native_available() -> bool:
    """Whether the native kernels are loaded (building them on the first call)."""
    return _load() is not None


def native_status() -> str:
    """``"loaded"``, or why the native kernels are not used."""
    _load()
    return str(_status)


def _reset_for_tests(status: str | None = None) -> None:
    """Forget the loaded library (``status=None``: try again on next use; else pretend it failed)."""
    global _lib, _status
    with _lock:
        _lib, _status = None, status


def param_layout(step_shape: tuple[int, ...], params: list[Tensor]) -> tuple[int, int, int, tuple[slice, ...]]:
    """``(O, P, J, index)``: the step's elements seen as ``[O, P, J]`` with every parameter constant over O and
    J, and the index that cuts the P-long block out of a parameter expanded to the step shape.

    P spans the smallest run of dimensions that holds every dimension some parameter varies along (per-neuron
    ``[N]`` on ``[B, N]``: O=B, P=N, J=1; per-channel ``[C, 1, 1]`` on ``[B, C, H, W]``: O=B, P=C, J=H*W)."""
    nd = len(step_shape)
    varying = set()
    for p in params:
        shape = (1,) * (nd - p.ndim) + tuple(p.shape)
        varying.update(d for d in range(nd) if shape[d] != 1)
    if not varying:  # scalars: one run of J = n elements
        a = b = 0
    else:
        a, b = min(varying), max(varying) + 1
    prod = _prod
    index = tuple(slice(None) if a <= d < b else slice(0, 1) for d in range(nd))
    return prod(step_shape[:a]), prod(step_shape[a:b]), prod(step_shape[b:]), index


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def flat_param(p: Tensor, step_shape: tuple[int, ...], index: tuple[slice, ...]) -> Tensor:
    """The parameter as the contiguous P-long vector of :func:`param_layout`."""
    return p.detach().expand(step_shape)[index].contiguous().reshape(-1)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# Whole-sequence kernels split the outer axis O (batch-like) over torch.get_num_threads() threads when the work is
# large enough; ctypes releases the GIL during the call, so plain Python threads run the C code in parallel.
_PAR_MIN = 1 << 20  # element-steps (T * numel of a step) below which one thread does it all
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _ranges(T: int, layout: tuple[int, int, int]) -> list[tuple[int, int]]:
    """``[o0, o1)`` ranges of the outer axis, one per thread."""
    outer, inner = layout[0], layout[1] * layout[2]
    threads = torch.get_num_threads()
    if threads <= 1 or outer < 2 or T * outer * inner < _PAR_MIN:
        return [(0, outer)]
    k = min(threads, outer)
    return list(itertools.pairwise(outer * i // k for i in range(k + 1)))


def _run(calls: list) -> None:
    """Run ``calls`` (no-argument callables), all but the first on the pool, the first here; re-raise errors."""
    global _pool
    if len(calls) == 1:
        calls[0]()
        return
    with _pool_lock:
        if _pool is None or _pool._max_workers < len(calls) - 1:
            _pool = ThreadPoolExecutor(max_workers=max(len(calls) - 1, 1), thread_name_prefix="tracetorch-native")
        pool = _pool
    futures = [pool.submit(c) for c in calls[1:]]
    calls[0]()
    for f in futures:
        f.result()


def lif_forward(
    T: int, layout: tuple[int, int, int], u: Tensor, mem0: Tensor, beta: Tensor, thr_e: Tensor,
    neg_thr: Tensor, Y: Tensor, M: Tensor | None, memT: Tensor,
) -> None:  # fmt: skip
    """Run the forward kernel (loaded: :func:`native_available`) over T steps; all tensors contiguous CPU of
    one dtype (float32/float64), the parameters flat (:func:`flat_param`). ``M`` may be ``None``; ``memT`` may
    be ``mem0`` (updated in place)."""
    fn = _lib.tt_lif_fwd_f32 if u.dtype == torch.float32 else _lib.tt_lif_fwd_f64
    _, P, J = layout
    n, es = mem0.numel(), u.element_size()
    pb, pt, pn = beta.data_ptr(), thr_e.data_ptr(), neg_thr.data_ptr()

    def part(o0: int, o1: int):
        off = o0 * P * J * es
        m_ptr = None if M is None else M.data_ptr() + off
        return lambda: fn(T, o1 - o0, P, J, n, u.data_ptr() + off, mem0.data_ptr() + off, pb, pt, pn,
                          Y.data_ptr() + off, m_ptr, memT.data_ptr() + off)  # fmt: skip

    _run([part(o0, o1) for o0, o1 in _ranges(T, layout)])


class StepPlan:
    """What :func:`lif_step` needs besides the tensors of the step: the layout and the flat parameters (kept
    alive here), packed for the C side once per stream."""

    def __init__(self, layout: tuple[int, int, int], beta: Tensor, thr_e: Tensor, neg_thr: Tensor) -> None:
        self.layout, self.params = layout, (beta, thr_e, neg_thr)
        addrs = [t.data_ptr() for t in self.params]
        self.packed = torch.tensor([*layout, *addrs], dtype=torch.int64)
        self.addr = self.packed.data_ptr()
        f32 = beta.dtype == torch.float32
        self.fn = None if _lib is None else (_lib.tt_lif_step_f32 if f32 else _lib.tt_lif_step_f64)

    def __reduce__(self):  # copies and pickles rebuild the packed addresses for their own tensors
        return StepPlan, (self.layout, *self.params)


def lif_step(plan: StepPlan, u: Tensor, mem: Tensor, y: Tensor) -> None:
    """One streaming step: ``mem`` updated in place, spikes into ``y`` (contiguous tensors of the plan's dtype)."""
    plan.fn(plan.addr, u.data_ptr(), mem.data_ptr(), y.data_ptr())


def lif_backward(
    layout: tuple[int, int, int], gY: Tensor, M: Tensor, mem0: Tensor, beta: Tensor,
    thr_e: Tensor, neg_thr: Tensor, slope: float, surrogate: str, detach_reset: bool, gmemT: Tensor | None,
    gU: Tensor | None, gmem0: Tensor, acc_beta: Tensor | None, acc_v: Tensor | None, acc_r: Tensor | None,
) -> None:  # fmt: skip
    """Run the backward kernel (accumulators of length P, added to). The spikes are recomputed from ``M``.
    Threads other than the first accumulate into their own zeroed copies, added in at the end."""
    fn = _lib.tt_lif_bwd_f32 if M.dtype == torch.float32 else _lib.tt_lif_bwd_f64
    T = M.shape[0]
    _, P, J = layout
    n, es = mem0.numel(), M.element_size()
    kind, dr = SURROGATE_KIND[surrogate], int(bool(detach_reset))
    ranges = _ranges(T, layout)
    accs = [(acc_beta, acc_v, acc_r)] + [
        tuple(None if a is None else torch.zeros_like(a) for a in (acc_beta, acc_v, acc_r)) for _ in ranges[1:]
    ]

    def part(o0: int, o1: int, acc: tuple):
        off = o0 * P * J * es

        def at(t: Tensor | None) -> int | None:
            return None if t is None else t.data_ptr() + off

        params = (beta.data_ptr(), thr_e.data_ptr(), neg_thr.data_ptr(), float(slope), kind, dr)
        return lambda: fn(T, o1 - o0, P, J, n, at(gY), at(M), at(mem0), *params, at(gmemT), at(gU), at(gmem0),
                          *map(_ptr, acc))  # fmt: skip

    _run([part(o0, o1, acc) for (o0, o1), acc in zip(ranges, accs, strict=True)])
    for acc in accs[1:]:
        for total, a in zip((acc_beta, acc_v, acc_r), acc, strict=True):
            if total is not None:
                total.add_(a)
