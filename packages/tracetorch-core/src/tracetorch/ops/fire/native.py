"""Optional native CPU kernels, compiled on first use with the system C compiler and loaded with ``ctypes``.

The firing types (B, T and TS families, with or without D and R; the S stage runs before them) have C kernels for
their whole-sequence forward and backward (``native_fire.inc``, one build per variant and dtype, made the first
time a layer of that kind runs), and LIB/SLIB a streaming step (``native_lif.c``): one pass over memory per
direction, time innermost, the parameters read once per sequence. The kernels take their tensors as packs of
addresses by slot name (:data:`FWD_IO`, :data:`BWD_IO`, :data:`PARAM_SLOTS`, :data:`ACC_SLOTS`).

Nothing here is required: without a C compiler (or with ``TRACETORCH_BACKEND=torch``) the pure-torch kernels of
:mod:`.torch_kernel` run, and both give the same outputs bit for bit.

The libraries are built once per source, compiler, flags and CPU into ``$TRACETORCH_CACHE`` (default
``~/.cache/tracetorch``)``/native/`` with ``-O3 -march=native -ffp-contract=off`` (no fused multiply-adds but
the ones torch's addcmul makes, so the forward repeats torch's rounding) and reused afterwards.
:func:`native_status` says whether the base library loaded and, if not, why.

A cached library is code this process runs, so the cache is trusted only as far as it is private: the folder
must be a real directory owned by this user that no one else can write (it is created with mode 0700, and an
own folder that only its owner can write is tightened to 0700); anything else (another user's folder, one that
others can write, a symlink) is refused with one warning, and the libraries are then built into a fresh private
temporary folder for this process (removed at exit). Each build is written under a temporary name in the same
folder, flushed to disk and renamed into place, and recorded beside the library (``<name>.json``: the sha256 of
the build inputs and of the library file). A library is loaded only when its record names this build's inputs
and its bytes hash to the recorded value (checked on the file descriptor that is then loaded, so no other file
can take its place in between); a damaged or foreign one (a truncated file once killed every later run with
SIGBUS) is rebuilt, and if the rebuild fails the torch kernels run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from .. import backend

__all__ = [
    "empty_like_huge",
    "fire_backward",
    "fire_forward",
    "fire_step",
    "flat_param",
    "kernel_pair",
    "lif_step",
    "native_available",
    "native_status",
    "param_layout",
    "variant_flags",
    "variant_kernels",
]

_SOURCE = Path(__file__).with_name("native_lif.c")
# the kernels of the other ops built by the same machinery (ops/trace: the LI membranes and synaptic traces)
_TRACE_DIR = Path(__file__).parent.parent / "trace"
_INCLUDES = [Path(__file__).with_name("native_fire.inc"), _TRACE_DIR / "native_trace.inc"]
_ABI = 5
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]
# GCC gives up vectorising a loop that needs more than 10 run-time alias checks (the recurrent ternary kernels
# need more; without this they ran scalar, 2x slower than the torch kernels)
_GCC_FLAGS = ["--param", "vect-max-version-for-alias-checks=100"]
SURROGATE_KIND = {"sigmoid": 0, "atan": 1, "fast_sigmoid": 2, "triangle": 3}
# the firing variants with a kernel: b (LIB), br (RLIB), t (LIT), tr (RLIT), ts (LITS), tsr (RLITS), and each with a
# leading d for the D types (db: DLIB, ...); S runs before the kernel, so SLIB takes b, DSRLITS dtsr
VARIANTS = tuple(d + v for d in ("", "d") for v in ("b", "br", "t", "tr", "ts", "tsr"))
# the slots of the parameter and gradient-accumulator packs (native_fire.inc)
PARAM_SLOTS = ("beta", "thr_e", "neg_thr", "nthr", "nnthr_e", "kp", "kn", "gamma", "one_m_gamma", "w", "nbeta",
               "ngamma", "one_m_ngamma", "nw")  # fmt: skip
ACC_SLOTS = ("beta", "vp", "rp", "vn", "rn", "kp", "kn", "gamma", "w", "nbeta", "ngamma", "nw")
# the tensor slots of the forward's and the backward's pointer packs (native_fire.inc); n-prefixed: the negative
# branch of the D types (their membrane, and their second recurrent trace where the output can be negative)
FWD_IO = ("u", "mem0", "nmem0", "rec0", "nrec0", "Y", "M", "NM", "R", "NR", "memT", "nmemT", "recT", "nrecT")
BWD_IO = ("gY", "u", "M", "NM", "R", "NR", "mem0", "nmem0", "rec0", "nrec0", "gmemT", "gnmemT", "grecT", "gnrecT",
          "gU", "gmem0", "gnmem0", "grec0", "gnrec0")  # fmt: skip

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


def _cache_root() -> Path:
    root = os.environ.get("TRACETORCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tracetorch")
    return Path(root) / "native"


def _untrusted(folder: Path) -> str | None:
    """Why ``folder`` cannot hold libraries this process loads (``None`` if it can): it must be a real directory,
    owned by this user, that nobody else can write. Mode 0700 is the norm; an own folder that only its owner can
    write (0755, made by an older version) is tightened to it."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot be read ({exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"can be written by others (mode {mode:04o})"
    if mode != 0o700:
        try:
            os.chmod(folder, 0o700)
        except OSError as exc:
            return f"has mode {mode:04o} and cannot be made private ({exc})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable"
    return None


_cache: Path | None = None  # the folder in use, once chosen
_private_tmp: Path | None = None  # this process's own fallback folder, if the cache was refused


def _cache_dir() -> Path:
    """The folder the libraries are built into and loaded from: the user's cache if it is private (created so),
    else a fresh private temporary folder for this process, said once by a warning."""
    global _cache, _private_tmp
    root = _cache_root()
    if _cache is not None and _cache in (root, _private_tmp):
        return _cache
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=0o700)
        problem = _untrusted(root)
    except OSError as exc:
        problem = f"cannot be created ({exc})"
    if problem is None:
        _cache = root
        return root
    if _private_tmp is None:
        _private_tmp = Path(tempfile.mkdtemp(prefix="tracetorch-native-"))  # 0700, a name no one can predict
        atexit.register(shutil.rmtree, _private_tmp, ignore_errors=True)
        warnings.warn(
            f"tracetorch: the native-kernel cache {root} {problem}; building the kernels for this process in "
            f"{_private_tmp} instead (set TRACETORCH_CACHE to a folder of your own)",
            RuntimeWarning,
            stacklevel=2,
        )
    _cache = _private_tmp
    return _private_tmp


def _sha256_of(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open_verified(out: Path, inputs: str) -> int | None:
    """A read-only descriptor of ``out`` when its record (``<name>.json``) names these build inputs and its bytes
    hash to the recorded value; ``None`` when it is missing, damaged or not this build."""
    try:
        record = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("inputs") != inputs or record.get("abi") != _ABI:
        return None
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size == record.get("size") and _sha256_of(fd) == record.get("sha256"):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _build_into(out: Path, cc: str, flags: list[str], inputs: str) -> None:
    """Compile into a temporary name beside ``out``, flush it to disk, rename it into place, then record it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cc, *flags, f"-I{_TRACE_DIR}", "-o", tmp, str(_SOURCE), "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {res.stderr.strip()[-2000:]}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            record = {"inputs": inputs, "abi": _ABI, "size": os.fstat(fd).st_size, "sha256": _sha256_of(fd)}
        finally:
            os.close(fd)
        os.replace(tmp, out)  # concurrent processes never see a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _write_atomically(out.with_suffix(".json"), json.dumps(record, indent=1).encode())
    _fsync_dir(out.parent)  # the renames, on disk


_held_fds: list[int] = []  # descriptors of the loaded libraries, open for the process's life (see _dlopen)


def _dlopen(out: Path, fd: int) -> ctypes.CDLL:
    """Load the library behind ``fd``: the file that was verified, even if ``out`` was replaced since. The loader
    tells libraries apart by name first, so the descriptor stays open (its number is never reused for another)."""
    proc = f"/proc/self/fd/{fd}"
    if not os.path.exists(proc):  # no procfs: by name (the folder is private to this user)
        os.close(fd)
        return ctypes.CDLL(str(out))
    try:
        lib = ctypes.CDLL(proc)
    except BaseException:
        os.close(fd)
        raise
    _held_fds.append(fd)
    return lib


def _compile(defines: list[str]) -> ctypes.CDLL:
    """Build (once per source, compiler, flags, defines and CPU; cached), verify and load the library."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc/clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    src = b"".join(p.read_bytes() for p in [_SOURCE, *_INCLUDES])
    flags = [*_FLAGS, *(_GCC_FLAGS if "Free Software Foundation" in version else []), *defines]
    parts = [src, cc.encode(), version.encode(), " ".join(flags).encode(), _cpu_signature().encode(), b"%d" % _ABI]
    inputs = hashlib.sha256(b"\0".join(parts)).hexdigest()
    out = _cache_dir() / f"tt_native_{inputs[:16]}.so"
    fd = _open_verified(out, inputs)
    if fd is None:  # not built yet, or damaged, or not what these inputs build: (re)build, then verify again
        _build_into(out, cc, flags, inputs)
        fd = _open_verified(out, inputs)
        if fd is None:
            raise RuntimeError(f"{out} does not match its build record right after the build")
    lib = _dlopen(out, fd)
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


_variant_libs: dict[tuple[str, str, str], ctypes.CDLL | None] = {}
_ready: dict[tuple[str, torch.dtype], tuple] = {}  # variant_kernels' results once built


def variant_flags(variant: str) -> dict[str, bool]:
    """The compile-time switches of a variant (:data:`VARIANTS`): ``DUAL``, ``TERN``, ``TS``, ``REC``."""
    single = variant.removeprefix("d")
    return {"DUAL": variant.startswith("d"), "TERN": single.startswith("t"), "TS": single.startswith("ts"),
            "REC": single.endswith("r")}  # fmt: skip


def variant_kernels(variant: str, dtype: torch.dtype) -> tuple | None:
    """``(forward, backward)`` of a firing variant (:data:`VARIANTS`) for float32/float64, built on first use
    (a few seconds, once per machine); ``None`` when the native kernels are unavailable."""
    pair = _ready.get((variant, dtype))
    if pair is not None and backend.allows("native"):  # the common case: built before (asked a few times a scan)
        return pair
    defines = [f"-DTT_NAME={variant}"] + [f"-DTT_{k}={int(v)}" for k, v in variant_flags(variant).items()]
    bwd_args = [_CI64] * 6 + [_CPTR, _CF64, _CI32, _CI32, _CPTR, _CPTR]
    pair = kernel_pair("fire", variant, dtype, defines, [_CI64] * 6 + [_CPTR] * 2, bwd_args)
    if pair is not None:
        _ready[(variant, dtype)] = pair
    return pair


def kernel_pair(op: str, variant: str, dtype: torch.dtype, defines: list[str], fwd_args: list, bwd_args: list):
    """``(forward, backward)`` = ``tt_<op>_fwd_<f32|f64>_<variant>`` and ``tt_<op>_bwd_...`` of a library built
    from ``native_lif.c`` with ``defines`` (plus ``-DTT_F64`` for float64), built on first use and cached (per
    process here, per machine on disk); ``None`` when the native kernels are unavailable or the build fails."""
    sfx = "f32" if dtype == torch.float32 else "f64"
    key = (op, variant, sfx)
    if key not in _variant_libs:
        if _load() is None:
            return None
        with _lock:
            if key not in _variant_libs:
                try:
                    lib = _compile(defines + (["-DTT_F64"] if sfx == "f64" else []))
                    fwd = getattr(lib, f"tt_{op}_fwd_{sfx}_{variant}")
                    bwd = getattr(lib, f"tt_{op}_bwd_{sfx}_{variant}")
                    fwd.argtypes, fwd.restype = fwd_args, None
                    bwd.argtypes, bwd.restype = bwd_args, None
                    _variant_libs[key] = lib
                except Exception:  # any failure means: use the torch kernels
                    _variant_libs[key] = None
    lib = _variant_libs[key]
    if lib is None:
        return None
    return getattr(lib, f"tt_{op}_fwd_{sfx}_{variant}"), getattr(lib, f"tt_{op}_bwd_{sfx}_{variant}")


@torch.compiler.assume_constant_result  # compiled code asks while tracing: dynamo cannot trace the build's lock
def has_variant(variant: str, dtype: torch.dtype) -> bool:
    """Whether the kernels of ``variant`` for ``dtype`` are here (:func:`variant_kernels`, built on first use)."""
    return variant_kernels(variant, dtype) is not None


_HUGE_MIN = 8 << 20


def empty_like_huge(like: Tensor) -> Tensor:
    """``torch.empty_like(like)`` (contiguous), with transparent huge pages requested when it is large."""
    out = torch.empty(like.shape, dtype=like.dtype)
    if out.nbytes >= _HUGE_MIN and _lib is not None:
        _lib.tt_advise_huge(out.data_ptr(), out.nbytes)
    return out


def _load() -> ctypes.CDLL | None:
    """The base library, built on the first use that the backend allows (:mod:`tracetorch.ops.backend`)."""
    global _lib, _status
    if not backend.allows("native"):
        return None
    if _status is not None:
        return _lib
    with _lock:
        if _status is not None:
            return _lib
        if sys.platform == "win32":
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
    """``"loaded"``, or why the native kernels are not used (the backend forbids them, or they cannot be built)."""
    reason = backend.disabled_reason("native")
    if reason is not None:
        return f"disabled by {reason}"
    _load()
    return str(_status)


def _reset_for_tests(status: str | None = None) -> None:
    """Forget the loaded libraries and the chosen cache folder (``status=None``: try again on next use; else
    pretend they failed)."""
    global _lib, _status, _cache, _private_tmp
    backend._reset_for_tests()  # the environment may have changed too
    with _lock:
        _lib, _status, _cache, _private_tmp = None, status, None, None
        _variant_libs.clear()
        _ready.clear()


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


def _pack(ptrs: list[int | None]) -> ctypes.Array:
    """The addresses as a C ``int64`` array (a ctypes array costs a fraction of a tensor's construction; a kernel
    takes ``ctypes.addressof`` of it, valid while the array lives)."""
    return (ctypes.c_int64 * len(ptrs))(*(0 if p is None else p for p in ptrs))


def _pack_of(slots: tuple[str, ...], tensors: dict[str, Tensor | None]) -> ctypes.Array:
    """The addresses of ``tensors`` in the order of ``slots`` (0 where absent); unknown names are an error."""
    unknown = set(tensors) - set(slots)
    if unknown:
        raise KeyError(f"no slot for {sorted(unknown)} (slots: {slots})")
    return _pack([None if (t := tensors.get(k)) is None else t.data_ptr() for k in slots])


def fire_forward(variant: str, T: int, layout: tuple[int, int, int], params: dict[str, Tensor], io: dict) -> None:
    """Run a variant's forward kernel (loaded: :func:`native_available`) over T steps. ``io``: the tensors by
    :data:`FWD_IO` name (absent ones omitted or ``None``), contiguous CPU of one dtype (float32/float64), ``[T, ...]``
    sequences and step-shaped states; ``M``/``NM`` (pre-reset membranes) and ``R``/``NR`` (recurrent traces) absent:
    nothing saved. ``params``: flat P-long vectors by :data:`PARAM_SLOTS` name."""
    fn = variant_kernels(variant, io["u"].dtype)[0]
    _, P, J = layout
    n = io["mem0"].numel()
    pack, ptrs = _pack_of(PARAM_SLOTS, params), _pack_of(FWD_IO, io)
    args = (P, J, n, ctypes.addressof(pack), ctypes.addressof(ptrs))
    _run([lambda o0=o0, o1=o1: fn(T, o0, o1, *args) for o0, o1 in _ranges(T, layout)])


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


_F = {k: i for i, k in enumerate(FWD_IO)}


class FireStep:
    """One streaming step of a firing variant through its sequence kernel (T = 1, states updated in place), with
    the kernel, the parameter pack and a pointer pack looked up once per stream."""

    def __init__(self, variant: str, layout: tuple[int, int, int], params: dict[str, Tensor]) -> None:
        self.variant, self.layout, self.params = variant, layout, params
        dtype = next(iter(params.values())).dtype
        self.fn = variant_kernels(variant, dtype)[0]
        self.pack = _pack_of(PARAM_SLOTS, params)
        self.io = (ctypes.c_int64 * len(FWD_IO))()  # filled per step: the step's tensors move
        n = layout[0] * layout[1] * layout[2]
        self.args = (1, 0, layout[0], layout[1], layout[2], n, ctypes.addressof(self.pack), ctypes.addressof(self.io))

    def __reduce__(self):  # copies and pickles rebuild the packs for their own tensors
        return FireStep, (self.variant, self.layout, self.params)


def fire_step(
    step: FireStep, u: Tensor, mem: Tensor, y: Tensor, rec: Tensor | None = None, nmem: Tensor | None = None,
    nrec: Tensor | None = None,
) -> None:  # fmt: skip
    """The states (``mem``; ``rec`` for R types, ``nmem`` for D types, ``nrec`` for D types with two traces) updated
    in place, the outputs into ``y``; contiguous tensors of the plan's shape and dtype."""
    io = step.io
    io[_F["u"]], io[_F["Y"]] = u.data_ptr(), y.data_ptr()
    io[_F["mem0"]] = io[_F["memT"]] = mem.data_ptr()
    if rec is not None:
        io[_F["rec0"]] = io[_F["recT"]] = rec.data_ptr()
    if nmem is not None:
        io[_F["nmem0"]] = io[_F["nmemT"]] = nmem.data_ptr()
    if nrec is not None:
        io[_F["nrec0"]] = io[_F["nrecT"]] = nrec.data_ptr()
    step.fn(*step.args)


def lif_step(plan: StepPlan, u: Tensor, mem: Tensor, y: Tensor) -> None:
    """One streaming step: ``mem`` updated in place, spikes into ``y`` (contiguous tensors of the plan's dtype)."""
    plan.fn(plan.addr, u.data_ptr(), mem.data_ptr(), y.data_ptr())


def fire_backward(
    variant: str, layout: tuple[int, int, int], params: dict[str, Tensor], slope: float, surrogate: str,
    detach_reset: bool, io: dict, accs: dict[str, Tensor],
) -> None:  # fmt: skip
    """Run a variant's backward kernel. ``io``: the tensors by :data:`BWD_IO` name (``M``, the initial states and
    the gradients of the initial states always; ``u`` under D; the rest where the type has them and they are
    wanted). ``accs``: P-long accumulators by :data:`ACC_SLOTS` name (only the wanted ones), added to; threads other
    than the first accumulate into their own zeroed copies, added in at the end. The spikes are recomputed from
    ``M`` (and ``NM``)."""
    M = io["M"]
    fn = variant_kernels(variant, M.dtype)[1]
    T = M.shape[0]
    _, P, J = layout
    n = io["mem0"].numel()
    pack, ptrs = _pack_of(PARAM_SLOTS, params), _pack_of(BWD_IO, io)
    consts = (float(slope), SURROGATE_KIND[surrogate], int(bool(detach_reset)))
    ranges = _ranges(T, layout)
    own = [accs] + [{k: torch.zeros_like(a) for k, a in accs.items()} for _ in ranges[1:]]
    acc_packs = [_pack_of(ACC_SLOTS, a) for a in own]
    _run([
        lambda o0=o0, o1=o1, ap=ap: fn(T, o0, o1, P, J, n, ctypes.addressof(pack), *consts, ctypes.addressof(ptrs),
                                       ctypes.addressof(ap))
        for (o0, o1), ap in zip(ranges, acc_packs, strict=True)
    ])  # fmt: skip
    for extra in own[1:]:
        for k, a in extra.items():
            accs[k].add_(a)
