"""Optional native CPU kernels, compiled on first use with the system C compiler and loaded with ``ctypes``.

The single-branch firing types (B, T and TS families, with or without R; the S stage runs before them) have C
kernels for their whole-sequence forward and backward (``_native_fire.inc``, one build per variant and dtype,
made the first time a layer of that kind runs), and LIB/SLIB a streaming step (``_native_lif.c``): one pass over
memory per direction, time innermost, the parameters read once per sequence. Nothing here is required: without
a C compiler (or with ``TRACETORCH_NATIVE=0``) the pure-torch kernels of :mod:`tracetorch.snn.fused` run, and
both give the same outputs bit for bit.

The libraries are built once per source, compiler, flags and CPU into ``$TRACETORCH_CACHE`` (default
``~/.cache/tracetorch``)``/native/`` with ``-O3 -march=native -ffp-contract=off`` (no fused multiply-adds but
the ones torch's addcmul makes, so the forward repeats torch's rounding) and reused afterwards.
:func:`native_status` says whether the base library loaded and, if not, why.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import math
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
    "fire_backward",
    "fire_forward",
    "fire_step",
    "flat_param",
    "lif_step",
    "native_available",
    "native_status",
    "param_layout",
    "variant_kernels",
]

_SOURCE = Path(__file__).with_name("_native_lif.c")
_INCLUDES = [Path(__file__).with_name("_native_fire.inc")]
_ABI = 4
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]
# GCC gives up vectorising a loop that needs more than 10 run-time alias checks (the recurrent ternary kernels
# need more; without this they ran scalar, 2x slower than the torch kernels)
_GCC_FLAGS = ["--param", "vect-max-version-for-alias-checks=100"]
SURROGATE_KIND = {"sigmoid": 0, "atan": 1, "fast_sigmoid": 2, "triangle": 3}
# the single-branch firing variants with a kernel: b (LIB), br (RLIB), t (LIT), tr (RLIT), ts (LITS), tsr (RLITS)
VARIANTS = ("b", "br", "t", "tr", "ts", "tsr")
# the slots of the parameter and gradient-accumulator packs (_native_fire.inc)
PARAM_SLOTS = ("beta", "thr_e", "neg_thr", "nthr", "nnthr_e", "kp", "kn", "gamma", "one_m_gamma", "w")
ACC_SLOTS = ("beta", "vp", "rp", "vn", "rn", "kp", "kn", "gamma", "w")

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


def _compile(defines: list[str]) -> ctypes.CDLL:
    """Build (once per source, compiler, flags, defines and CPU; cached) and load the library."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc/clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    src = b"".join(p.read_bytes() for p in [_SOURCE, *_INCLUDES])
    flags = [*_FLAGS, *(_GCC_FLAGS if "Free Software Foundation" in version else []), *defines]
    key = hashlib.sha256(b"\0".join([src, version.encode(), " ".join(flags).encode(), _cpu_signature().encode()]))
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
            cmd = [cc, *flags, "-o", tmp, str(_SOURCE), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                raise RuntimeError(f"{cc} failed: {res.stderr.strip()[-2000:]}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    if lib.tt_native_abi() != _ABI:
        raise RuntimeError(f"{out} has ABI {lib.tt_native_abi()}, expected {_ABI}")
    return lib


_CI64, _CPTR, _CI32, _CF64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double


def _build() -> ctypes.CDLL:
    """The base library: the streaming step and the helpers (the sequence kernels come per variant)."""
    lib = _compile([])
    for sfx in ("f32", "f64"):
        step = getattr(lib, f"tt_lif_step_{sfx}")
        step.argtypes = [_CPTR] * 4
        step.restype = None
    lib.tt_advise_huge.argtypes = [_CPTR, _CI64]
    lib.tt_advise_huge.restype = None
    return lib


_variant_libs: dict[tuple[str, str], ctypes.CDLL | None] = {}


def variant_kernels(variant: str, dtype: torch.dtype) -> tuple | None:
    """``(forward, backward)`` of a firing variant (:data:`VARIANTS`) for float32/float64, built on first use
    (a few seconds, once per machine); ``None`` when the native kernels are unavailable."""
    sfx = "f32" if dtype == torch.float32 else "f64"
    key = (variant, sfx)
    if key not in _variant_libs:
        if _load() is None:
            return None
        with _lock:
            if key not in _variant_libs:
                tern, ts, rec = int(variant.startswith("t")), int(variant.startswith("ts")), int(variant.endswith("r"))
                defines = [f"-DTT_NAME={variant}", f"-DTT_TERN={tern}", f"-DTT_TS={ts}", f"-DTT_REC={rec}"]
                try:
                    lib = _compile(defines + (["-DTT_F64"] if sfx == "f64" else []))
                    fwd = getattr(lib, f"tt_fire_fwd_{sfx}_{variant}")
                    bwd = getattr(lib, f"tt_fire_bwd_{sfx}_{variant}")
                    fwd.argtypes, fwd.restype = [_CI64] * 5 + [_CPTR] * 9, None
                    bwd.argtypes, bwd.restype = [_CI64] * 5 + [_CPTR, _CF64, _CI32, _CI32] + [_CPTR] * 11, None
                    _variant_libs[key] = lib
                except Exception:  # any failure means: use the torch kernels
                    _variant_libs[key] = None
    lib = _variant_libs[key]
    if lib is None:
        return None
    return getattr(lib, f"tt_fire_fwd_{sfx}_{variant}"), getattr(lib, f"tt_fire_bwd_{sfx}_{variant}")


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
    """Forget the loaded libraries (``status=None``: try again on next use; else pretend they failed)."""
    global _lib, _status
    with _lock:
        _lib, _status = None, status
        _variant_libs.clear()


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
    index = tuple(slice(None) if a <= d < b else slice(0, 1) for d in range(nd))
    return math.prod(step_shape[:a]), math.prod(step_shape[a:b]), math.prod(step_shape[b:]), index


def flat_param(p: Tensor, step_shape: tuple[int, ...], index: tuple[slice, ...]) -> Tensor:
    """The parameter as the contiguous P-long vector of :func:`param_layout`."""
    return p.detach().expand(step_shape)[index].contiguous().reshape(-1)


# Whole-sequence kernels split the outer axis O (batch-like) over torch.get_num_threads() threads when the work is
# large enough; ctypes releases the GIL during the call, so plain Python threads run the C code in parallel.
_PAR_MIN = 1 << 20  # element-steps (T * numel of a step) below which one thread does it all
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child (a DataLoader worker, say) inherits the pool object but none of its threads: work handed to
    it would never run. The child starts its own pool when it needs one."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


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


def _pack(ptrs: list[int | None]) -> Tensor:
    return torch.tensor([0 if p is None else p for p in ptrs], dtype=torch.int64)


def fire_forward(
    variant: str, T: int, layout: tuple[int, int, int], params: dict[str, Tensor], u: Tensor, mem0: Tensor,
    rec0: Tensor | None, Y: Tensor, M: Tensor | None, R: Tensor | None, memT: Tensor, recT: Tensor | None,
) -> None:  # fmt: skip
    """Run a variant's forward kernel (loaded: :func:`native_available`) over T steps. Tensors: contiguous CPU
    of one dtype (float32/float64); ``params``: flat P-long vectors by :data:`PARAM_SLOTS` name (absent ones
    omitted). ``M`` (pre-reset membranes) and ``R`` (recurrent traces) may be ``None``: nothing saved."""
    fn = variant_kernels(variant, u.dtype)[0]
    _, P, J = layout
    n, es = mem0.numel(), u.element_size()
    pack = _pack([params[k].data_ptr() if k in params else None for k in PARAM_SLOTS])

    def part(o0: int, o1: int):
        off = o0 * P * J * es

        def at(t: Tensor | None) -> int | None:
            return None if t is None else t.data_ptr() + off

        args = (T, o1 - o0, P, J, n, pack.data_ptr(), at(u), at(mem0), at(rec0), at(Y), at(M), at(R), at(memT),
                at(recT))  # fmt: skip
        return lambda: fn(*args)

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


class FireStep:
    """One streaming step of a single-branch firing variant through its sequence kernel (T = 1, states updated
    in place), with the kernel and the parameter pack looked up once per stream."""

    def __init__(self, variant: str, layout: tuple[int, int, int], params: dict[str, Tensor]) -> None:
        self.variant, self.layout, self.params = variant, layout, params
        dtype = next(iter(params.values())).dtype
        self.fn = variant_kernels(variant, dtype)[0]
        self.pack = _pack([params[k].data_ptr() if k in params else None for k in PARAM_SLOTS])
        self.args = (1, *layout, layout[0] * layout[1] * layout[2], self.pack.data_ptr())

    def __reduce__(self):  # copies and pickles rebuild the pack for their own tensors
        return FireStep, (self.variant, self.layout, self.params)


def fire_step(step: FireStep, u: Tensor, mem: Tensor, rec: Tensor | None, y: Tensor) -> None:
    """``mem`` (and ``rec``) updated in place, the outputs into ``y``; contiguous tensors of the plan's shape."""
    r = None if rec is None else rec.data_ptr()
    m = mem.data_ptr()
    step.fn(*step.args, u.data_ptr(), m, r, y.data_ptr(), None, None, m, r)


def lif_step(plan: StepPlan, u: Tensor, mem: Tensor, y: Tensor) -> None:
    """One streaming step: ``mem`` updated in place, spikes into ``y`` (contiguous tensors of the plan's dtype)."""
    plan.fn(plan.addr, u.data_ptr(), mem.data_ptr(), y.data_ptr())


def fire_backward(
    variant: str, layout: tuple[int, int, int], params: dict[str, Tensor], slope: float, surrogate: str,
    detach_reset: bool, gY: Tensor, M: Tensor, R: Tensor | None, mem0: Tensor, rec0: Tensor | None,
    gmemT: Tensor | None, grecT: Tensor | None, gU: Tensor | None, gmem0: Tensor, grec0: Tensor | None,
    accs: dict[str, Tensor],
) -> None:  # fmt: skip
    """Run a variant's backward kernel. ``accs``: P-long accumulators by :data:`ACC_SLOTS` name (only the wanted
    ones), added to; threads other than the first accumulate into their own zeroed copies, added in at the
    end. The spikes are recomputed from ``M``."""
    fn = variant_kernels(variant, M.dtype)[1]
    T = M.shape[0]
    _, P, J = layout
    n, es = mem0.numel(), M.element_size()
    pack = _pack([params[k].data_ptr() if k in params else None for k in PARAM_SLOTS])
    consts = (float(slope), SURROGATE_KIND[surrogate], int(bool(detach_reset)))
    ranges = _ranges(T, layout)
    own = [accs] + [{k: torch.zeros_like(a) for k, a in accs.items()} for _ in ranges[1:]]
    packs = [_pack([a[k].data_ptr() if k in a else None for k in ACC_SLOTS]) for a in own]

    def part(o0: int, o1: int, acc_pack: Tensor):
        off = o0 * P * J * es

        def at(t: Tensor | None) -> int | None:
            return None if t is None else t.data_ptr() + off

        args = (T, o1 - o0, P, J, n, pack.data_ptr(), *consts, at(gY), at(M), at(R), at(mem0), at(rec0),
                at(gmemT), at(grecT), at(gU), at(gmem0), at(grec0), acc_pack.data_ptr())  # fmt: skip
        return lambda: fn(*args)

    _run([part(o0, o1, ap) for (o0, o1), ap in zip(ranges, packs, strict=True)])
    for extra in own[1:]:
        for k, a in extra.items():
            accs[k].add_(a)
