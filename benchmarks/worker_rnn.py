"""One measurement of the RNN/SSM suite: one implementation, one workload, in the interpreter that runs this file.

The driver (``run_rnn.py``) starts this script once per (implementation, workload, allocator mode) in a fresh
process of the venv that holds the implementation, exactly as ``run.py`` does with ``worker.py`` for the LIF
suite; the probes (peak tensor memory, peak RSS) and the sample statistics are ``worker.py``'s own. Needs only
torch and the library under test.

Workloads (``--model`` lstm | gru | mamba)
    stream: inference, one step at a time under ``torch.no_grad()``, hidden state kept where the library keeps
        it; time per step.
    train: one iteration over a whole sequence ``x_seq`` ``[T, B, D]`` (``requires_grad``): forward, then
        backward of ``sum(g * y)`` for a fixed dense ``g`` (``y.backward(g)``); every iteration starts from a
        zero state with all ``.grad`` unset; time per iteration. Batch-first libraries (mamba.py) get
        ``x_seq`` and ``g`` transposed to ``[B, T, D]`` once, outside the timing.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import sys
import time
import traceback
from collections.abc import Callable

import torch
import worker as W  # benchmarks/worker.py: Impl, summarize, the memory probes (imports only torch)
from torch import Tensor, nn


class UnavailableError(RuntimeError):
    """The implementation does not exist in this checkout or venv: the row says "not available", not "failed"."""


class Impl(W.Impl):
    def __init__(self) -> None:
        super().__init__()
        self.batch_first = False  # train: takes and returns [B, T, D] instead of [T, B, D]
        self.api = ""
        self.n_params = 0  # every parameter of the module, learnable or not


def _finish(impl: Impl, module: nn.Module, dist: str, api: str) -> Impl:
    impl.dist, impl.api = dist, api
    impl.params = [p for p in module.parameters() if p.requires_grad]
    impl.n_params = sum(p.numel() for p in module.parameters())
    impl.note = " ".join(repr(module).split())
    return impl


def _stacked(layer: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda xs: torch.stack([layer(x) for x in xs.unbind(0)])


# -- adapters -------------------------------------------------------------------------------------------------


def ours(args, variant: str) -> Impl:
    import tracetorch as tt

    d = args.D
    if args.model == "mamba":
        if not hasattr(tt, "ssm") or not hasattr(tt.ssm, "Mamba"):
            raise UnavailableError("tracetorch.ssm.Mamba is not in this checkout yet")
        layer = tt.ssm.Mamba(d, d_state=args.d_state, d_conv=args.d_conv, expand=args.expand)
        name = f"tt.ssm.Mamba({d}, d_state={args.d_state}, d_conv={args.d_conv}, expand={args.expand})"
    else:
        cls = {"lstm": tt.rnn.LSTM, "gru": tt.rnn.GRU}[args.model]
        layer = cls(d, d)
        name = f"tt.rnn.{cls.__name__}({d}, {d})"
    impl = Impl()
    impl.reset = layer.zero_states
    if variant == "step":
        impl.step, api = layer, f"`{name}`; `layer(x)` per step"
    elif variant == "scan":
        impl.forward, api = layer.scan, f"`{name}`; `layer.scan(x_seq)`"
    else:
        impl.forward, api = _stacked(layer), f"`{name}`; `layer(x)` per step, stacked"
    return _finish(impl, layer, "tracetorch-core", api)


def torch_nn(args) -> Impl:
    d = args.D
    impl = Impl()
    if args.workload == "stream":
        if args.model != "lstm":
            raise ValueError("the torch.nn streaming reference is nn.LSTMCell")
        cell = nn.LSTMCell(d, d)
        state: list = [None]

        def reset() -> None:
            state[0] = None

        def step(x: Tensor) -> Tensor:
            state[0] = cell(x, state[0])
            return state[0][0]

        impl.reset, impl.step = reset, step
        return _finish(impl, cell, "torch", f"`nn.LSTMCell({d}, {d})`; `h, c = cell(x, (h, c))` per step")
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[args.model]
    rnn = cls(d, d)  # time first, like x_seq; zero initial state when none is passed
    impl.forward = lambda xs: rnn(xs)[0]
    return _finish(impl, rnn, "torch", f"`nn.{cls.__name__}({d}, {d})`; `rnn(x_seq)[0]`")


def tracetorch_0192(args) -> Impl:
    import tracetorch as tt

    got = md.version("tracetorch")
    if got != "0.19.2":
        raise RuntimeError(f"expected tracetorch==0.19.2 in this venv, found {got}")
    d = args.D
    if args.model == "mamba":
        if args.expand != 1:
            raise ValueError("tracetorch 0.19.2's Mamba has no expand (fixed at 1)")
        layer = tt.ssm.Mamba(d, d_state=args.d_state, conv_kernel=args.d_conv)
        name = f"tt.ssm.Mamba({d}, d_state={args.d_state}, conv_kernel={args.d_conv})"
    else:
        cls = {"lstm": tt.rnn.LSTM, "gru": tt.rnn.GRU}[args.model]
        layer = cls(d, d)
        name = f"tt.rnn.{cls.__name__}({d}, {d})"
    impl = Impl()
    impl.reset = layer.zero_states
    if args.workload == "stream":
        impl.step = layer
    else:
        impl.forward = _stacked(layer)
    return _finish(impl, layer, "tracetorch", f"`{name}`; `layer(x)` per step")


def mambapy_block(args) -> Impl:
    from mambapy.mamba import MambaBlock, MambaConfig

    cfg = MambaConfig(
        d_model=args.D,
        n_layers=1,  # unused by MambaBlock
        d_state=args.d_state,
        d_conv=args.d_conv,
        expand_factor=args.expand,
        pscan=True,  # the parallel (Blelloch) scan in PyTorch; False is its sequential loop
        use_cuda=False,  # the mamba_ssm CUDA kernel: not on CPU
    )
    block = MambaBlock(cfg)
    impl = Impl()
    cfg_text = f"d_model={args.D}, d_state={args.d_state}, d_conv={args.d_conv}, expand_factor={args.expand}"
    if args.workload == "stream":
        cache: list = [None]

        def reset() -> None:
            cache[0] = None

        def step(x: Tensor) -> Tensor:
            if cache[0] is None:  # (h, last d_conv - 1 inputs): h = None starts from zero
                cache[0] = (None, torch.zeros(x.shape[0], cfg.d_inner, cfg.d_conv - 1, dtype=x.dtype))
            y, cache[0] = block.step(x, cache[0])
            return y

        impl.reset, impl.step = reset, step
        api = f"`MambaBlock(MambaConfig({cfg_text}))`; `y, cache = block.step(x, cache)` per step"
    else:
        impl.batch_first = True
        impl.forward = block
        api = f"`MambaBlock(MambaConfig({cfg_text}, pscan=True))`; `block(x)` on [B, T, D]"
    return _finish(impl, block, "mambapy", api)


ADAPTERS: dict[str, Callable[[argparse.Namespace], Impl]] = {
    "tracetorch": lambda a: ours(a, "step"),
    "tracetorch-scan": lambda a: ours(a, "scan"),
    "tracetorch-steps": lambda a: ours(a, "steps"),
    "torch-nn": torch_nn,
    "tracetorch-0.19.2": tracetorch_0192,
    "mambapy": mambapy_block,
}


# -- measurements ---------------------------------------------------------------------------------------------


def make_inputs(args) -> dict[str, Tensor]:
    """Bitwise the same in every venv (same seed, same torch build); drawn before any module is built."""
    g = torch.Generator().manual_seed(args.seed)
    if args.workload == "stream":
        return {"x_pool": torch.randn(args.pool, args.B, args.D, generator=g)}
    x_seq = torch.randn(args.T, args.B, args.D, generator=g)
    grad_out = torch.randn(args.T, args.B, args.D, generator=g) / math.sqrt(args.T * args.B * args.D)
    return {"x_seq": x_seq, "grad_out": grad_out}


def run_stream(impl: Impl, inp, args) -> dict:
    xs = [x.contiguous() for x in inp["x_pool"].unbind(0)]
    pool, step = len(xs), impl.step
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
        out["time"] = W.summarize(per_step)
        impl.reset()
        sq, count, finite = 0.0, 0, True
        for i in range(4 * pool):
            y = step(xs[i % pool])
            sq += float(y.square().sum())
            count += y.numel()
            finite = finite and bool(torch.isfinite(y).all())
        out["output_rms"] = math.sqrt(sq / count)
        out["finite"] = finite
        out["output_shape"] = list(y.shape)

        def block() -> None:
            for i in range(10):
                step(xs[i % pool])

        out["peak_alloc_bytes"] = W.peak_alloc_delta(block) if args.memory else None
        out["peak_rss_bytes"] = None
    return out


def run_train(impl: Impl, inp, args) -> dict:
    x_seq, grad_out = inp["x_seq"], inp["grad_out"]
    if impl.batch_first:
        x_seq, grad_out = x_seq.transpose(0, 1).contiguous(), grad_out.transpose(0, 1).contiguous()
    x_seq.requires_grad_(True)  # stands in for the output of a preceding layer: dL/dx is computed too
    forward = impl.forward

    def iteration() -> Tensor:
        impl.reset()
        x_seq.grad = None
        for p in impl.params:
            p.grad = None
        y = forward(x_seq)
        y.backward(grad_out)  # loss = sum(grad_out * y): no loss kernel timed
        return y.detach()

    out: dict = {}
    y = None
    for _ in range(max(args.warmup, 1)):
        y = iteration()
    out["output_rms"] = float(y.square().mean().sqrt())
    out["finite"] = bool(torch.isfinite(y).all())
    out["output_shape"] = list(y.shape)
    grads_ok = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in impl.params)
    grads_nonzero = all(p.grad is not None and bool((p.grad != 0).any()) for p in impl.params)
    x_grad_ok = x_seq.grad is not None and bool(torch.isfinite(x_seq.grad).all())
    out["grads_ok"] = grads_ok and grads_nonzero and x_grad_ok
    out["n_learnable"] = sum(p.numel() for p in impl.params)
    del y
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t0)
    out["time"] = W.summarize(times)
    if args.memory:
        out["peak_rss_bytes"] = W.peak_rss_delta(iteration)
        out["peak_alloc_bytes"] = W.peak_alloc_delta(iteration)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", required=True, choices=list(ADAPTERS))
    ap.add_argument("--workload", required=True, choices=["stream", "train"])
    ap.add_argument("--model", required=True, choices=["lstm", "gru", "mamba"])
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--D", type=int, default=256, help="input and output features (hidden size)")
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--d-conv", type=int, default=4)
    ap.add_argument("--expand", type=int, default=1)
    W.add_common_args(ap)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    result: dict = {
        "impl": args.impl,
        "workload": args.workload,
        "model": args.model,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
    }
    try:
        inp = make_inputs(args)
        torch.manual_seed(args.seed)  # each library's own initialisation, from the same seed
        impl = ADAPTERS[args.impl](args)
        result.update(dist=impl.dist, version=md.version(impl.dist), note=impl.note, api=impl.api)
        result["n_params"] = impl.n_params
        result.update((run_stream if args.workload == "stream" else run_train)(impl, inp, args))
        result["ok"] = True
    except UnavailableError as exc:
        result.update(ok=False, unavailable=True, error=f"not available: {exc}")
    except Exception as exc:  # reported in the table, never fatal for the run
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
