"""The native CPU kernels (``tracetorch.ops.fire.native``) against the torch kernels and the reference step loop.

Outputs and final states must be bit-identical (both round the membrane update as torch's addcmul does);
gradients agree to rounding. Every comparison first checks that the native kernel really ran.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import assert_same_run, run

import tracetorch as tt
import tracetorch.functional as F
from tracetorch.ops.fire import native


def _compiler_works() -> bool:
    """Whether this machine can build any shared library with the flags the loader uses (if it cannot, the
    native kernels are simply absent here; if it can, our source must build and load: the tests below check)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("int tt_probe(void) { return 0; }\n")
        try:
            res = subprocess.run([cc, *native._FLAGS, "-o", str(Path(tmp) / "probe.so"), str(src)], capture_output=True)
        except OSError:
            return False
        return res.returncode == 0


pytestmark = pytest.mark.skipif(not _compiler_works(), reason="no working C compiler on this machine")


@pytest.fixture
def calls(monkeypatch):
    """Counts native kernel calls (sequence forward and backward, streaming step)."""
    n = {"fwd": 0, "bwd": 0, "step": 0}

    def counted(name: str, counter: str) -> None:
        fn = getattr(native, name)

        def wrapper(*a, **k):
            n[counter] += 1
            return fn(*a, **k)

        monkeypatch.setattr(native, name, wrapper)

    counted("fire_forward", "fwd")
    counted("fire_backward", "bwd")
    counted("lif_step", "step")
    counted("fire_step", "step")
    return n


def without_native(fn, *args):
    """Run ``fn`` with the native kernels switched off (the torch kernels run instead)."""
    native._reset_for_tests("switched off by a test")
    try:
        return fn(*args)
    finally:
        native._reset_for_tests(None)


def test_native_kernels_load_here():
    assert native.native_status() == "loaded"
    assert native.native_available()


def make(name, n, dim, gen, dtype, rank, surrogate, detach_reset):
    """A layer of type ``name`` with random parameters (rank 0: scalars, 1: per neuron), all learnable."""
    kwargs = {}
    for p in F.NeuronSpec.from_name(name).params:
        if p.constraint == "sigmoid":
            v = torch.rand(n, generator=gen) * 0.8 + 0.1
        elif p.constraint == "softplus":
            v = torch.rand(n, generator=gen) + 0.5
        else:
            v = torch.randn(n, generator=gen) * 0.3 + (1.0 if "scale" in p.name else 0.0)
        kwargs[p.name] = v if rank == 1 else float(v[0])
        kwargs[f"{p.name}_rank"] = rank
        kwargs[f"learn_{p.name}"] = True
    if F.NeuronSpec.from_name(name).fires:
        kwargs |= {"spike_fn": surrogate, "detach_reset": detach_reset}
    layer = getattr(tt.snn, name)(n, dim=dim, **kwargs)
    return layer.to(dtype)


# the firing types, which the native kernels cover (single-branch and D)
NATIVE_TYPES = [d + a + b + c for c in ("LIB", "LIT", "LITS") for d in ("", "D") for a in ("", "S") for b in ("", "R")]


LAYOUTS = {"dense": (-1, (3, 7)), "conv": (-3, (2, 7, 3, 2)), "positive_dim": (1, (2, 7, 5)), "unbatched": (-1, (7,))}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_scan_equals_reference_and_torch_kernels(dtype, layout, calls):
    rng = random.Random(f"{dtype}{layout}")
    dim, step_shape = LAYOUTS[layout]
    for trial in range(8):
        gen = torch.Generator().manual_seed(rng.randrange(10**6))
        name = NATIVE_TYPES[(trial + len(layout)) % len(NATIVE_TYPES)] if trial < 6 else rng.choice(NATIVE_TYPES)
        surrogate = ["sigmoid", "atan", "fast_sigmoid", "triangle"][trial % 4]
        layer = make(name, 7, dim, gen, dtype, rng.choice([0, 1]), surrogate, rng.random() < 0.3)
        x = torch.randn(11, *step_shape, generator=gen, dtype=dtype) * 1.5
        initial = None
        if trial % 2:
            initial = {s: torch.randn(step_shape, generator=gen, dtype=dtype) * 0.5 for s in layer.state_names}
        before = dict(calls)
        a = run(layer, x, initial, "scan")
        assert calls["fwd"] == before["fwd"] + 1 and calls["bwd"] == before["bwd"] + 1
        b = without_native(run, layer, x, initial, "scan")  # the torch fused kernel
        c = run(layer, x, initial, "steps")  # the reference step loop
        tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
        assert_same_run(a, b, **tol)
        assert_same_run(a, c, **tol)
        assert (a[0] != 0).any() and (a[0] == 0).any()  # spikes happened, and not everywhere


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streaming_step_is_bit_identical(dtype, calls):
    gen = torch.Generator().manual_seed(3)
    for layout, (dim, step_shape) in LAYOUTS.items():
        layer = make("LIB", 7, dim, gen, dtype, 1, "atan", False)
        x = torch.randn(40, *step_shape, generator=gen, dtype=dtype) * 1.5
        ref = copy.deepcopy(layer)
        before = calls["step"]
        with torch.no_grad():
            ys = [layer(x[0])]  # the first step goes the general way and prepares the fast one
            assert calls["step"] == before + 1, layout
            plan = layer._stream_fast[0]
            n_fast = []
            plan.fn = lambda *a, kernel=plan.fn, n=n_fast: (n.append(1), kernel(*a))
            ys = torch.stack(ys + [layer(xt) for xt in x[1:]])
            assert len(n_fast) == 39, layout
            ys_ref = without_native(lambda m, xs: torch.stack([m(xt) for xt in xs]), ref, x)
        assert torch.equal(ys, ys_ref), layout
        assert torch.equal(layer.mem, ref.mem), layout
        assert (ys != 0).any()


def test_float32_large_run_matches_the_torch_kernel_bit_for_bit(calls):
    """Many elements and steps: the forward repeats torch's rounding exactly, so no spike flips anywhere."""
    gen = torch.Generator().manual_seed(5)
    layer = tt.snn.LIB(1024, beta=torch.rand(1024, generator=gen) * 0.5 + 0.45, threshold=1.0, learn_beta=True,
                       learn_threshold=True)  # fmt: skip
    x = torch.randn(60, 16, 1024, generator=gen) * 0.8
    a = run(layer, x, None, "scan")
    b = without_native(run, layer, x, None, "scan")
    assert calls["fwd"] == 1
    assert_same_run(a, b, rtol=1e-5, atol=1e-5)


def test_parameter_changes_reach_the_streaming_kernel():
    layer = tt.snn.LIB(4, beta=0.5, threshold=1.0, learn_beta=True)
    x = torch.full((2, 4), 0.6)
    with torch.no_grad():
        layer(x)
        layer.zero_states()
        layer.raw_beta.fill_(10.0) if hasattr(layer, "raw_beta") else next(layer.parameters()).fill_(10.0)
        layer(x)
        y = layer(x)  # beta ~ 1 now: 0.6 + 0.6 crosses the threshold
    assert torch.equal(y, torch.ones(2, 4))


def test_layout_of_parameters():
    assert native.param_layout((3, 7), [torch.ones(7), torch.ones(())])[:3] == (3, 7, 1)
    assert native.param_layout((2, 7, 3, 2), [torch.ones(7, 1, 1)])[:3] == (2, 7, 6)
    assert native.param_layout((2, 7, 5), [torch.ones(()), torch.ones(())])[:3] == (1, 1, 70)
    # parameters varying along different dimensions: P spans both
    assert native.param_layout((2, 3, 4, 5), [torch.ones(3, 1, 1), torch.ones(5)])[:3] == (2, 60, 1)


def test_fallback_when_the_library_cannot_be_built(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACETORCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    native._reset_for_tests(None)
    try:
        assert not native.native_available()
        assert "no-such-compiler" in native.native_status()
        layer = tt.snn.LIB(3)
        y = tt.scan(layer, torch.randn(5, 2, 3) * 2)  # the torch kernels still run
        assert y.shape == (5, 2, 3)
    finally:
        native._reset_for_tests(None)


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv("TRACETORCH_NATIVE", "0")
    native._reset_for_tests(None)
    try:
        with pytest.warns(DeprecationWarning, match="TRACETORCH_NATIVE=0 is deprecated"):
            assert native.native_status() == "disabled by TRACETORCH_NATIVE=0"
    finally:
        native._reset_for_tests(None)


def test_cached_library_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACETORCH_CACHE", str(tmp_path))
    native._reset_for_tests(None)
    try:
        assert native.native_available()
        built = list((tmp_path / "native").glob("*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        native._reset_for_tests(None)
        assert native.native_available()
        assert [p.stat().st_mtime_ns for p in (tmp_path / "native").glob("*.so")] == [stamp]
    finally:
        native._reset_for_tests(None)


def test_fast_streaming_path_follows_every_change_of_the_stream():
    """Parameter updates (in place, replaced, new dtype), state resets, batch-size changes, strided inputs and
    a new spike function: after each, the streamed outputs still equal the reference step's."""
    gen = torch.Generator().manual_seed(11)
    layer = tt.snn.LIB(6, beta=torch.rand(6, generator=gen) * 0.5 + 0.4, threshold=0.8, learn_beta=True)
    ref = copy.deepcopy(layer)

    def both(x):
        with torch.no_grad():
            y = layer(x)
        y_ref = ref(x)  # autograd on: the reference step
        ref.detach_states()
        assert torch.equal(y, y_ref.detach())
        assert torch.equal(layer.mem, ref.mem.detach())
        return y

    def stream(n, batch=3, dtype=torch.float32):
        for _ in range(n):
            both(torch.randn(batch, 6, generator=gen).to(dtype) * 1.2)

    stream(5)
    assert layer._stream_fast is not None
    with torch.no_grad():
        for m in (layer, ref):
            m.raw_beta.add_(0.3)  # an optimiser step
    stream(3)
    for m in (layer, ref):
        m.raw_beta = torch.nn.Parameter(torch.full((6,), 2.0))  # a new parameter object
    stream(3)
    layer.load_state_dict(ref.state_dict())
    stream(2)
    for m in (layer, ref):
        m.zero_states()
    stream(2)
    for m in (layer, ref):
        m.zero_states()
    stream(2, batch=5)  # a new stream with another batch size
    both(torch.randn(6, 5, generator=gen).t() * 1.2)  # a non-contiguous step
    for m in (layer, ref):  # another dtype mid-stream is refused on both paths, the stream kept as it was
        with torch.no_grad(), pytest.raises(tt.StateError, match="dtype changed mid-stream"):
            m(torch.randn(5, 6, dtype=torch.float64))
    both(torch.randn(5, 6, generator=gen) * 1.2)
    for m in (layer, ref):
        m.zero_states()
    stream(2, batch=5)
    assert layer._stream_fast is not None
    for m in (layer, ref):
        m.spike_fn = tt.functional.SpikeFunction("smooth")  # another forward: the native kernel must step aside
    stream(2, batch=5)
    layer.double()
    ref.double()
    stream(3, batch=5, dtype=torch.float64)
    for m in (layer, ref):
        m.spike_fn = tt.functional.SpikeFunction("heaviside")
    stream(2, batch=5, dtype=torch.float64)
    assert layer._stream_fast is not None
    for m in (layer, ref):
        m.raw_beta.data.sub_(1.0)  # invisible to version counters: zero_states() drops the cached parameters
        m.zero_states()
    stream(3, batch=5, dtype=torch.float64)
    assert layer._stream_fast is not None


def test_ties_at_the_threshold_fire_in_both_directions(calls):
    """A membrane exactly at the threshold fires (``>=``); the backward recomputes the spikes from the saved
    membrane and must agree at such ties too."""
    layer = tt.snn.LIB(5, beta=0.7, threshold=torch.linspace(0.5, 1.5, 5), learn_beta=True, learn_threshold=True)
    with torch.no_grad():
        p = dict(layer.params(2))
        thr_e = (p["threshold"] - p["bias"]).expand(3, 5)
    x = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(2)) * 0.1
    x[0] = thr_e  # from a zero membrane, the first step lands exactly on the threshold
    x[3] = thr_e
    a = run(layer, x, None, "scan")
    b = without_native(run, layer, x, None, "scan")
    assert calls["bwd"] == 1
    assert (a[0][0] == 1).all()
    assert_same_run(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["dense", "conv"])
def test_threaded_split_equals_one_thread(layout, monkeypatch):
    """Large sequences run the outer axis on torch.get_num_threads() threads, each with its own accumulators."""
    dim, step_shape = {"dense": (-1, (6, 7)), "conv": (-3, (5, 7, 3, 2))}[layout]
    gen = torch.Generator().manual_seed(8)
    layer = make("LIB", 7, dim, gen, torch.float64, 1, "sigmoid", False)
    x = torch.randn(13, *step_shape, generator=gen, dtype=torch.float64) * 1.5
    initial = {"mem": torch.randn(step_shape, generator=gen, dtype=torch.float64) * 0.5}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(layer, x, initial, "scan")
        torch.set_num_threads(3)
        monkeypatch.setattr(native, "_PAR_MIN", 0)
        per_neuron = torch.ones(7) if layout == "dense" else torch.ones(7, 1, 1)
        assert len(native._ranges(13, native.param_layout(step_shape, [per_neuron])[:3])) == 3
        split = run(layer, x, initial, "scan")
    finally:
        torch.set_num_threads(threads)
    assert_same_run(split, one, rtol=1e-12, atol=1e-14)
    assert_same_run(split, run(layer, x, initial, "steps"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streaming_every_native_type_is_bit_identical(dtype, calls):
    """The firing types other than LIB/SLIB (D types too) stream through the sequence kernel, one step at a time, with
    their states updated in place: outputs and states equal the reference step's bit for bit."""
    for i, name in enumerate(NATIVE_TYPES):
        gen = torch.Generator().manual_seed(100 + i)
        layer = make(name, 7, -1, gen, dtype, 1, "atan", False)
        ref = copy.deepcopy(layer)
        x = torch.randn(30, 4, 7, generator=gen, dtype=dtype) * 1.5
        before = calls["fwd"] + calls["step"]
        with torch.no_grad():
            ys = torch.stack([layer(xt) for xt in x])
        ys_ref = []
        for xt in x:  # autograd on: the reference step
            ys_ref.append(ref(xt).detach())
            ref.detach_states()
        assert calls["fwd"] + calls["step"] > before, name
        assert torch.equal(ys, torch.stack(ys_ref)), name
        for k, v in layer.get_states().items():
            assert torch.equal(v, ref.get_states()[k].detach()), (name, k)
        assert (ys != 0).any(), name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threaded_split_works_in_a_forked_child(monkeypatch):
    """A child forked after the thread pool started (as DataLoader workers are) gets a pool of its own."""
    monkeypatch.setattr(native, "_PAR_MIN", 0)
    layer = tt.snn.LIB(7)
    x = torch.randn(5, 4, 7)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            want = layer.scan(x)  # starts the pool here
            layer.zero_states()
        assert native._pool is not None
        pid = os.fork()
        if pid == 0:  # the child: run the threaded kernel, report by exit code
            code = 1
            try:
                signal.alarm(60)
                with torch.no_grad():
                    code = 0 if torch.equal(layer.scan(x), want) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        torch.set_num_threads(threads)


def test_scan_under_torch_compile_gives_the_same_numbers():
    """dynamo cannot trace the ctypes call: it breaks the graph there and the kernel runs eagerly."""
    layer = tt.snn.RLIT(8)

    def f(x):
        layer.zero_states()
        return layer.scan(x)

    x = torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(4)) * 2
    assert torch.equal(torch.compile(f, backend="aot_eager")(x), f(x))


# -- the cache: only a private folder, only libraries that are the ones built here -----------------------------

_PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *p = getenv("TT_PLANTED_MARKER");
    if (p) { FILE *f = fopen(p, "w"); if (f) { fputs("planted code ran", f); fclose(f); } }
}
int tt_native_abi(void) { return 4; }
"""


@pytest.fixture(scope="module")
def base_build(tmp_path_factory):
    """The base library's file name and build record, built once into a private folder of this user."""
    folder = tmp_path_factory.mktemp("trusted")
    old = os.environ.get("TRACETORCH_CACHE")
    os.environ["TRACETORCH_CACHE"] = str(folder)
    native._reset_for_tests(None)
    try:
        assert native.native_available()
    finally:
        os.environ.pop("TRACETORCH_CACHE") if old is None else os.environ.__setitem__("TRACETORCH_CACHE", old)
        native._reset_for_tests(None)
    (so,) = (folder / "native").glob("*.so")
    record = so.with_suffix(".json")
    return so.name, json.loads(record.read_text()) if record.is_file() else {}


def _plant(folder: Path, name: str, record: dict) -> None:
    """A library that announces itself when loaded, under the real library's name, with a record forged to
    match it (what someone who can write the folder could leave there)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "planted.c"
    src.write_text(_PLANTED)
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    subprocess.run([cc, *native._FLAGS, "-o", str(folder / name), str(src)], check=True)
    data = (folder / name).read_bytes()
    forged = {**record, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / name).with_suffix(".json").write_text(json.dumps(forged))
    src.unlink()


def _load_from(monkeypatch, tmp_path, cache: Path | str, *, refused: str | None):
    marker = tmp_path / "planted-marker"
    monkeypatch.setenv("TT_PLANTED_MARKER", str(marker))
    monkeypatch.setenv("TRACETORCH_CACHE", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a fallback folder goes
    (tmp_path / "tmp").mkdir(exist_ok=True)
    native._reset_for_tests(None)
    try:
        with pytest.warns(RuntimeWarning, match=refused) if refused else contextlib.nullcontext():
            status = native.native_status()
        assert not marker.exists(), "a library someone else could write was loaded"
        assert status == "loaded"  # built here (test_a_damaged_cached_library_is_rebuilt_not_loaded checks numbers)
        return native._cache_dir()
    finally:
        native._reset_for_tests(None)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to make a folder of another user"
)
def test_a_cache_folder_of_another_user_is_refused(monkeypatch, tmp_path, base_build):
    name, record = base_build
    foreign = tmp_path / "foreign"
    _plant(foreign / "native", name, record)
    for p in (foreign, foreign / "native", foreign / "native" / name, foreign / "native" / f"{name[:-3]}.json"):
        os.chown(p, 65534, 65534)
    os.chmod(foreign / "native", 0o700)
    used = _load_from(monkeypatch, tmp_path, foreign, refused="is owned by uid 65534")
    assert used.parent == tmp_path / "tmp" and stat.S_IMODE(used.stat().st_mode) == 0o700  # a fresh private folder


def test_a_cache_folder_others_can_write_is_refused(monkeypatch, tmp_path, base_build):
    name, record = base_build
    _plant(tmp_path / "open" / "native", name, record)
    os.chmod(tmp_path / "open" / "native", 0o777)
    _load_from(monkeypatch, tmp_path, tmp_path / "open", refused="can be written by others")


def test_an_unwritable_cache_never_falls_back_to_a_predictable_temporary_folder(monkeypatch, tmp_path, base_build):
    """The cache could not be created: the old fallback, <tmp>/tracetorch-native-<uid>, was a name anyone could
    create first, with their own library in it."""
    name, record = base_build
    _plant(tmp_path / "tmp" / f"tracetorch-native-{os.getuid()}", name, record)
    (tmp_path / "file").write_text("not a folder")
    _load_from(monkeypatch, tmp_path, tmp_path / "file" / "cache", refused="cannot be created")


def test_an_own_cache_folder_is_made_private(monkeypatch, tmp_path):
    (tmp_path / "c" / "native").mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / "c" / "native", 0o755)  # as an older tracetorch made it
    assert _load_from(monkeypatch, tmp_path, tmp_path / "c", refused=None) == tmp_path / "c" / "native"
    assert stat.S_IMODE((tmp_path / "c" / "native").stat().st_mode) == 0o700
    fresh = tmp_path / "fresh"
    _load_from(monkeypatch, tmp_path, fresh, refused=None)
    assert stat.S_IMODE((fresh / "native").stat().st_mode) == 0o700
    assert {p.suffix for p in (fresh / "native").iterdir()} == {".so", ".json"}  # each library with its record


_LIB_SCAN = """
import hashlib, torch, tracetorch as tt
from tracetorch.ops.fire import native
torch.manual_seed(0)
layer = tt.snn.LIB(16)
x = torch.randn(20, 4, 16) * 2
with torch.no_grad():
    y = layer.scan(x)
    layer.zero_states()
    ys = torch.stack([layer(xt) for xt in x])
used = native.variant_kernels("b", torch.float32) is not None
print(native.native_status(), used, hashlib.sha256(y.numpy().tobytes() + ys.numpy().tobytes()).hexdigest())
"""


def _lib_scan(env: dict) -> list[str]:
    res = subprocess.run([sys.executable, "-c", _LIB_SCAN], capture_output=True, text=True, env={**os.environ, **env})
    assert res.returncode == 0, f"exit {res.returncode} (SIGBUS is -7): {res.stderr[-2000:]}"
    return res.stdout.split()


def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path):
    """A truncated library in the cache (a full disk, a killed copy) once killed every later run with SIGBUS on
    the first spiking step; it is now found damaged (its hash) and rebuilt, or, if it cannot be rebuilt, the
    torch kernels run: the same numbers every time."""
    cache = {"TRACETORCH_CACHE": str(tmp_path)}
    torch_kernels = _lib_scan({"TRACETORCH_NATIVE": "0"})
    first = _lib_scan(cache)
    assert first[:2] == ["loaded", "True"] and first[2] == torch_kernels[-1]
    built = sorted((tmp_path / "native").glob("*.so"))
    assert len(built) == 2  # the base library and LIB's sequence kernels
    for so in built:
        so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])
    assert _lib_scan(cache) == first  # rebuilt
    assert all(so.stat().st_size > 1000 and so.with_suffix(".json").is_file() for so in built)
    for so in built:
        so.write_bytes(so.read_bytes()[:-100])
    no_compiler = _lib_scan({**cache, "CC": str(tmp_path / "no-such-compiler")})
    assert no_compiler[0] == "unavailable:" and no_compiler[-1] == first[2]  # the torch kernels, same numbers
