"""One measurement: one implementation of the LIF neuron, one workload, in the interpreter that runs this file.

The driver (``run.py``) starts this script once per (implementation, workload) in a fresh process, using the
venv that holds that implementation's library, and reads the JSON it writes to ``--out``. Needs only torch and
the library under test; nothing here imports the driver.

Workloads
    stream: inference, one step at a time under ``torch.no_grad()``, hidden state kept where the library keeps
        it; time per step.
    train: BPTT over ``T`` steps with learnable parameters: forward, then backward of the linear loss
        ``sum(g * spikes)`` for a fixed dense ``g`` (``spikes.backward(g)``, as if ``g`` came from a following
        layer); time per iteration. Every iteration starts from a zero state with all ``.grad`` unset.
        ``--neuron`` picks another of our types for our rows (``DLIB``: both membranes get the LIF's beta);
        ``tracetorch-kernels`` times only the native kernels one such iteration launches (replayed with the
        same arguments), ``tracetorch-torch-kernel`` our ``scan`` on the torch kernels (``TRACETORCH_BACKEND=torch``).

Peak memory (after timing, in the same process; see README.md):
    peak_alloc_bytes: the highest number of tensor bytes live at once during one iteration (or one block of
        stream steps) above what was live when it started, from the c10 CPU allocator's own alloc/free events
        (``torch.profiler`` with ``profile_memory=True``).
    peak_rss_bytes: the growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
        after ``malloc_trim``) over its resident set at the start of one training iteration.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata as md
import inspect
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch
from torch import Tensor, nn

SURROGATE_SLOPE = 4.0  # d spike / d v = k * s * (1 - s), s = sigmoid(k v): peak 1 at v = 0, for every library


# -- the shared problem ---------------------------------------------------------------------------------------


def make_problem(args) -> dict[str, Tensor]:
    """Per-neuron beta/threshold and the inputs; bitwise the same in every venv (same seed, same torch build)."""
    g = torch.Generator().manual_seed(args.seed)
    n = args.N
    beta = 0.80 + 0.15 * torch.rand(n, generator=g)  # 0.80 .. 0.95
    thr = 0.90 + 0.20 * torch.rand(n, generator=g)  # 0.90 .. 1.10
    prob = {"beta": beta, "thr": thr}
    if args.workload == "stream":
        prob["x_pool"] = args.x_mean + args.x_std * torch.randn(args.pool, args.B, n, generator=g)
    else:
        prob["x_seq"] = args.x_mean + args.x_std * torch.randn(args.T, args.B, n, generator=g)
        # upstream gradient of the spikes, dense, as a following layer would send: the loss is sum(g * spikes)
        prob["grad_out"] = torch.randn(args.T, args.B, n, generator=g) / math.sqrt(args.T * args.B * n)
    return prob


class Impl:
    """What one implementation provides; ``stream``/``train`` are filled by the adapters below."""

    def __init__(self) -> None:
        self.step: Callable[[Tensor], Tensor] | None = None  # stream: x [B, N] -> spikes [B, N]
        self.forward: Callable[[Tensor], Tensor] | None = None  # train: x_seq [T, B, N] -> spikes [T, B, N]
        self.reset: Callable[[], None] = lambda: None  # zero the hidden state
        self.params: list[Tensor] = []  # learnable tensors (train)
        self.transform_input: Callable[[Tensor], Tensor] = lambda x: x  # applied once, outside timing
        self.iteration: Callable[[], None] | None = None  # train: timed instead of forward + backward
        self.dist: str | None = None  # distribution whose version is reported
        self.note = ""


# -- adapters -------------------------------------------------------------------------------------------------


NEURON = "LIB"  # --neuron: the type of our rows


def ours(prob, workload: str, variant: str) -> Impl:
    import tracetorch as tt

    n = prob["beta"].numel()
    cls = getattr(tt.snn, NEURON)
    if variant == "torch-kernel":
        from tracetorch.ops import backend

        backend.set_backend("torch")
    # The classic LIF learns beta and threshold only. Any further parameter the layer grows (LIB gained a
    # bias before the spike function, default 0) is kept at its default and fixed, as for tracetorch 0.19.2.
    decays = ("pos_beta", "neg_beta") if NEURON.startswith("D") else ("beta",)
    extra = {
        name: False
        for name in inspect.signature(cls).parameters
        if name.startswith("learn_") and name not in (*(f"learn_{d}" for d in decays), "learn_threshold")
    }
    kw = {d: prob["beta"] for d in decays} | {f"learn_{d}": True for d in decays}
    layer = cls(n, threshold=prob["thr"], learn_threshold=True, **kw, **extra)
    impl = Impl()
    impl.dist = "tracetorch-core"
    impl.reset = layer.zero_states
    impl.params = [p for p in layer.parameters() if p.requires_grad]
    if workload == "stream":
        if variant == "ttcompile":
            layer.TTcompile()
        impl.step = layer
    elif variant in ("scan", "torch-kernel"):
        impl.forward = layer.scan
    elif variant == "kernels":
        impl.forward = layer.scan
        impl.iteration = _replay_kernels(impl, prob)
    else:
        impl.forward = lambda xs: torch.stack([layer(x) for x in xs.unbind(0)])
    fixed = ", ".join(f"{k}=False" for k in extra)
    impl.note = " ".join(repr(layer).split()) + (f"; passed {fixed}" if fixed else "")
    try:  # which kernels ran: the native C ones (built with the system compiler) or the torch fallback
        from tracetorch.ops.fire.native import native_status

        impl.note += f"; native kernels: {native_status()}"
        if variant == "torch-kernel":
            impl.note += " (TRACETORCH_BACKEND=torch: not used)"
    except ImportError:  # a tracetorch-core without them
        impl.note += "; native kernels: not in this version"
    return impl


def _replay_kernels(impl: Impl, prob) -> Callable[[], None]:
    """The native kernel calls (``fire_forward``, ``fire_backward``) of one training iteration of ``impl``, recorded
    with their arguments; the returned callable repeats exactly those calls, nothing else (no autograd, no Python
    around them): the kernels' own time, against which the whole call's overhead is measured."""
    from tracetorch.ops.fire import native

    calls = []
    real = {name: getattr(native, name) for name in ("fire_forward", "fire_backward")}

    def recording(name: str):
        def call(*a, **k):
            calls.append((real[name], a, k))
            return real[name](*a, **k)

        return call

    x = prob["x_seq"].clone().requires_grad_(True)
    for name in real:
        setattr(native, name, recording(name))
    try:
        impl.reset()
        impl.forward(x).backward(prob["grad_out"])
    finally:
        for name, fn in real.items():
            setattr(native, name, fn)
    if [fn.__name__ for fn, _, _ in calls] != ["fire_forward", "fire_backward"]:
        raise RuntimeError(f"expected one native forward and backward, recorded {[c[0].__name__ for c in calls]}")

    def replay() -> None:
        for fn, a, k in calls:
            fn(*a, **k)

    return replay


def tracetorch_pypi(prob, workload: str, version: str) -> Impl:
    import tracetorch as tt

    got = md.version("tracetorch")
    if got != version:
        raise RuntimeError(f"expected tracetorch=={version} in this venv, found {got}")
    n = prob["beta"].numel()
    kwargs = {}
    if version.startswith("0.19"):
        kwargs = {"bias": 0.0, "learn_bias": False}  # 0.19 adds a bias before the spike function; keep it 0
    layer = tt.snn.LIB(
        n,
        beta=prob["beta"].clone(),
        threshold=prob["thr"].clone(),
        learn_beta=True,
        learn_threshold=True,
        # forward round(sigmoid(4 v)) = H(v) (v = 0 has measure zero); backward: STE through sigmoid(4 v)
        quant_fn=tt.functional.round_ste(1.0),
        **kwargs,
    )
    impl = Impl()
    impl.dist = "tracetorch"
    impl.reset = layer.zero_states
    impl.params = [p for p in layer.parameters() if p.requires_grad]
    if workload == "stream":
        impl.step = layer
    else:
        impl.forward = lambda xs: torch.stack([layer(x) for x in xs.unbind(0)])
    return impl


def snntorch_leaky(prob, workload: str) -> Impl:
    import snntorch as snn
    from snntorch import surrogate

    lif = snn.Leaky(
        beta=prob["beta"].clone(),
        threshold=prob["thr"].clone(),
        learn_beta=True,
        learn_threshold=True,
        spike_grad=surrogate.sigmoid(slope=SURROGATE_SLOPE),
        init_hidden=True,  # the membrane lives in the layer; lif(x) returns the spikes
        reset_mechanism="subtract",
        reset_delay=False,  # reset in the step that fired (the default True defers it to the next step)
    )
    impl = Impl()
    impl.dist = "snntorch"

    def reset() -> None:
        lif.mem = torch.zeros(0)  # re-created with the input's shape on the next call

    impl.reset = reset
    impl.params = [lif.beta, lif.threshold]
    if workload == "stream":
        impl.step = lif
    else:
        impl.forward = lambda xs: torch.stack([lif(x) for x in xs.unbind(0)])
    return impl


def spikingjelly_plif(prob, workload: str, mode: str) -> Impl:
    from spikingjelly.activation_based import neuron, surrogate

    beta0 = float(prob["beta"].mean())
    node = neuron.ParametricLIFNode(
        init_tau=1.0 / (1.0 - beta0),  # 1/tau = sigmoid(w) = 1 - beta
        decay_input=False,  # H = V - V/tau + X = beta V + X
        v_threshold=float(prob["thr"].mean()),
        v_reset=None,  # soft reset: V = H - spike * v_threshold
        surrogate_function=surrogate.Sigmoid(alpha=SURROGATE_SLOPE),
        detach_reset=False,
        step_mode=mode,
    )
    impl = Impl()
    impl.dist = "spikingjelly"
    impl.reset = node.reset
    impl.params = [p for p in node.parameters() if p.requires_grad]
    if workload == "stream":
        impl.step = node
    elif mode == "m":
        impl.forward = node
    else:
        impl.forward = lambda xs: torch.stack([node(x) for x in xs.unbind(0)])
    return impl


def norse_lifbox(prob, workload: str) -> Impl:
    from norse.torch import LIFBoxCell, LIFBoxParameters
    from norse.torch.functional.reset import reset_subtract

    beta, thr = prob["beta"], prob["thr"]

    class Holder(nn.Module):  # Norse keeps parameters in a NamedTuple; a module registers them for training
        def __init__(self) -> None:
            super().__init__()
            self.tau_mem_inv = nn.Parameter(1.0 - beta.clone())  # dt * tau_mem_inv = 1 - beta with dt = 1
            self.v_th = nn.Parameter(thr.clone())

    h = Holder()
    p = LIFBoxParameters(
        tau_mem_inv=h.tau_mem_inv,
        v_leak=torch.tensor(0.0),
        v_th=h.v_th,
        v_reset=torch.tensor(0.0),
        method="tanh",  # backward 1 - tanh(2 v)^2 = 4 s (1 - s) with s = sigmoid(4 v): the shared surrogate
        alpha=SURROGATE_SLOPE / 2,
        reset_method=reset_subtract,
    )
    cell = LIFBoxCell(p, dt=1.0)
    impl = Impl()
    impl.dist = "norse"
    impl.params = list(h.parameters())
    # LIFBox integrates v + dt/tau (x - v) = beta v + (1 - beta) x; feeding x / (1 - beta0) (computed once,
    # outside timing) gives beta v + x at the initial parameters, so the spikes match the classic LIF.
    impl.transform_input = lambda x: x / (1.0 - beta)
    state = [None]  # Norse's step API returns the state to the caller, who passes it back in

    def reset() -> None:
        state[0] = None

    impl.reset = reset
    if workload == "stream":

        def step(x: Tensor) -> Tensor:
            z, state[0] = cell(x, state[0])
            return z

        impl.step = step
    else:

        def forward(xs: Tensor) -> Tensor:
            s, out = None, []
            for x in xs.unbind(0):
                z, s = cell(x, s)
                out.append(z)
            return torch.stack(out)

        impl.forward = forward
    return impl


def compiled_loop(prob, workload: str) -> Impl:
    """A hand-written LIF step compiled with torch.compile, called once per step (the memory reference)."""
    from torch.nn.functional import softplus

    k = SURROGATE_SLOPE

    def infer_step(x: Tensor, mem: Tensor, raw_beta: Tensor, raw_thr: Tensor) -> tuple[Tensor, Tensor]:
        thr = softplus(raw_thr)
        mem = torch.sigmoid(raw_beta) * mem + x
        spk = (mem >= thr).to(x.dtype)
        return spk, mem - spk * thr

    def train_step(x: Tensor, mem: Tensor, beta: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
        mem = beta * mem + x
        v = mem - thr
        sg = torch.sigmoid(k * v)
        spk = (v >= 0).to(x.dtype) + (sg - sg.detach())  # forward exactly 0/1, backward k * s * (1 - s)
        return spk, mem - spk * thr

    raw_beta = nn.Parameter(torch.logit(prob["beta"].double()).float())
    raw_thr = nn.Parameter(torch.log(torch.expm1(prob["thr"].double())).float())
    impl = Impl()
    impl.dist = "torch"
    impl.params = [raw_beta, raw_thr]
    mem = [None]

    def reset() -> None:
        mem[0] = None

    impl.reset = reset
    if workload == "stream":
        fn = torch.compile(infer_step, fullgraph=True, dynamic=False)

        def step(x: Tensor) -> Tensor:
            if mem[0] is None:
                mem[0] = torch.zeros_like(x)
            spk, mem[0] = fn(x, mem[0], raw_beta, raw_thr)
            return spk

        impl.step = step
    else:
        fn = torch.compile(train_step, fullgraph=True, dynamic=False)

        def forward(xs: Tensor) -> Tensor:
            beta, thr = torch.sigmoid(raw_beta), softplus(raw_thr)
            m, out = torch.zeros_like(xs[0]), []
            for x in xs.unbind(0):
                spk, m = fn(x, m, beta, thr)
                out.append(spk)
            return torch.stack(out)

        impl.forward = forward
    return impl


def inplace_loop(prob, workload: str) -> Impl:
    """Minimal-kernel streaming reference: three in-place ops per step into preallocated buffers, no autograd."""
    if workload != "stream":
        raise ValueError("the in-place loop is a streaming (inference) reference only")
    beta, thr = prob["beta"], prob["thr"]
    neg_thr = -thr
    bufs: dict[str, Tensor] = {}
    impl = Impl()
    impl.dist = "torch"

    def reset() -> None:
        bufs.clear()

    def step(x: Tensor) -> Tensor:
        if not bufs:
            bufs["mem"], bufs["spk"] = torch.zeros_like(x), torch.empty_like(x)
        mem, spk = bufs["mem"], bufs["spk"]
        torch.addcmul(x, beta, mem, out=mem)  # mem = x + beta * mem
        torch.ge(mem, thr, out=spk)  # 0/1 written straight into the float buffer
        torch.addcmul(mem, spk, neg_thr, out=mem)  # mem -= spk * thr
        return spk

    impl.reset, impl.step = reset, step
    return impl


ADAPTERS: dict[str, Callable[[dict, str], Impl]] = {
    "tracetorch": lambda p, w: ours(p, w, "step"),
    "tracetorch-ttcompile": lambda p, w: ours(p, w, "ttcompile"),
    "tracetorch-scan": lambda p, w: ours(p, w, "scan"),
    "tracetorch-steps": lambda p, w: ours(p, w, "steps"),
    "tracetorch-kernels": lambda p, w: ours(p, w, "kernels"),
    "tracetorch-torch-kernel": lambda p, w: ours(p, w, "torch-kernel"),
    "tracetorch-0.16.4": lambda p, w: tracetorch_pypi(p, w, "0.16.4"),
    "tracetorch-0.19.2": lambda p, w: tracetorch_pypi(p, w, "0.19.2"),
    "snntorch": snntorch_leaky,
    "spikingjelly-s": lambda p, w: spikingjelly_plif(p, w, "s"),
    "spikingjelly-m": lambda p, w: spikingjelly_plif(p, w, "m"),
    "norse": norse_lifbox,
    "torch-compile": compiled_loop,
    "inplace": inplace_loop,
}


# -- memory probes --------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_delta(fn: Callable[[], object]) -> int | None:
    """Peak resident set during ``fn()`` minus the resident set just before it (bytes), or None if unsupported."""
    _trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return None
    rss0 = _status_kib("VmRSS")
    if rss0 is None or _status_kib("VmHWM") is None:
        return None
    fn()
    return (_status_kib("VmHWM") - rss0) * 1024


def peak_alloc_delta(fn: Callable[[], object]) -> int:
    """Highest tensor bytes live at once during ``fn()`` above those live when it started (c10 CPU allocator)."""
    from torch.profiler import ProfilerActivity, profile

    _trim()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


# -- measurements ---------------------------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict:
    qs = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [samples[0]] * 3
    return {
        "samples": samples,
        "median": statistics.median(samples),
        "p25": qs[0],
        "p75": qs[2],
        "min": min(samples),
        "max": max(samples),
    }


def run_stream(impl: Impl, prob, args) -> dict:
    xs = [impl.transform_input(x).contiguous() for x in prob["x_pool"].unbind(0)]
    pool = len(xs)
    step = impl.step
    out: dict = {}
    with torch.no_grad():
        impl.reset()
        for i in range(args.warmup):
            step(xs[i % pool])
        per_step = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(xs[i % pool])
            per_step.append((time.perf_counter() - t0) / args.steps)
        out["time"] = summarize(per_step)
        # spike rate over a fresh stream (outside timing)
        impl.reset()
        total, count = 0.0, 0
        for i in range(max(2 * pool, 100)):
            spk = step(xs[i % pool])
            total += float(spk.sum())
            count += spk.numel()
        out["spike_rate"] = total / count
        out["binary"] = bool(((spk == 0) | (spk == 1)).all())

        def block() -> None:
            for i in range(10):
                step(xs[i % pool])

        out["peak_alloc_bytes"] = peak_alloc_delta(block) if args.memory else None
        out["peak_rss_bytes"] = None
    return out


def run_train(impl: Impl, prob, args) -> dict:
    with torch.no_grad():
        x_seq = impl.transform_input(prob["x_seq"]).contiguous()
    x_seq.requires_grad_(True)  # stands in for the output of a preceding layer: dL/dx is computed too
    grad_out = prob["grad_out"]
    forward = impl.forward

    def iteration() -> Tensor:
        impl.reset()
        x_seq.grad = None
        for p in impl.params:
            p.grad = None
        spk = forward(x_seq)
        # loss = sum(grad_out * spk); its gradient w.r.t. the spikes is grad_out, passed straight to backward so
        # that no loss kernel (and no [T, B, N] temporary) is timed: only the layer's forward and backward are
        spk.backward(grad_out)
        return spk.detach()

    out: dict = {}
    spk = None
    for _ in range(args.warmup):
        spk = iteration()
    if spk is None:
        spk = iteration()
    out["spike_rate"] = float(spk.float().mean())
    out["binary"] = bool(((spk == 0) | (spk == 1)).all())
    out["output_shape"] = list(spk.shape)
    grads_ok = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in impl.params)
    grads_nonzero = all(p.grad is not None and bool((p.grad != 0).any()) for p in impl.params)
    x_grad_ok = x_seq.grad is not None and bool(torch.isfinite(x_seq.grad).all())
    out["grads_ok"] = grads_ok and grads_nonzero and x_grad_ok
    out["learnable"] = {f"{tuple(p.shape)}": p.numel() for p in impl.params}
    out["n_learnable"] = sum(p.numel() for p in impl.params)
    del spk
    timed = impl.iteration or iteration
    for _ in range(args.warmup if impl.iteration else 0):
        timed()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        timed()
        times.append(time.perf_counter() - t0)
    out["time"] = summarize(times)
    if args.memory:
        out["peak_rss_bytes"] = peak_rss_delta(iteration)
        out["peak_alloc_bytes"] = peak_alloc_delta(iteration)
    return out


def copy_bandwidth(args) -> dict:
    """Time of ``dst.copy_(src)`` moving as many bytes as one LIF step must (read x, read+write mem, write
    spikes = 4 * B * N * 4 bytes), with sources rotating through a pool the size of the stream's input pool."""
    numel = 2 * args.B * args.N  # copy reads numel*4 bytes and writes numel*4 bytes = 4 * B * N * 4 in all
    srcs = list(torch.randn(max(1, args.pool // 2), numel).unbind(0))
    dst = torch.empty(numel)
    tiny_src, tiny_dst = torch.randn(1), torch.empty(1)
    reps = max(args.steps, 200)

    def timed(fn) -> list[float]:
        for i in range(reps):
            fn(i)
        res = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(reps):
                fn(i)
            res.append((time.perf_counter() - t0) / reps)
        return res

    n_src = len(srcs)
    copy_t = summarize(timed(lambda i: dst.copy_(srcs[i % n_src])))
    tiny_t = summarize(timed(lambda i: tiny_dst.copy_(tiny_src)))
    moved = 2 * numel * 4
    return {
        "bytes_per_step": moved,
        "copy_time": copy_t,
        "bandwidth_GBps": moved / copy_t["median"] / 1e9,
        "tiny_copy_time": tiny_t,
        "bandwidth_GBps_without_call_overhead": moved / max(copy_t["median"] - tiny_t["median"], 1e-12) / 1e9,
    }


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """Options every suite's worker takes (repeats, threads, seed, memory probe, output file)."""
    ap.add_argument("--pool", type=int, default=8, help="distinct stream inputs cycled through")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--steps", type=int, default=200, help="stream steps per timed block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--out", required=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", required=True, choices=[*ADAPTERS, "bandwidth"])
    ap.add_argument("--workload", required=True, choices=["stream", "train"])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--N", type=int, default=1024)
    ap.add_argument("--x-mean", type=float, default=0.15)
    ap.add_argument("--x-std", type=float, default=0.3)
    ap.add_argument("--neuron", default="LIB", help="our rows' neuron type (LIB, DLIB, ...)")
    add_common_args(ap)
    args = ap.parse_args()
    global NEURON
    NEURON = args.neuron

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    result: dict = {
        "impl": args.impl,
        "workload": args.workload,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
    }
    try:
        if args.impl == "bandwidth":
            result.update(copy_bandwidth(args))
        else:
            prob = make_problem(args)
            impl = ADAPTERS[args.impl](prob, args.workload)
            result["dist"] = impl.dist
            result["version"] = md.version(impl.dist) if impl.dist else None
            result["note"] = impl.note
            run = run_stream if args.workload == "stream" else run_train
            result.update(run(impl, prob, args))
        result["ok"] = True
    except Exception as exc:  # reported in the table, never fatal for the run
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))


if __name__ == "__main__":
    main()
