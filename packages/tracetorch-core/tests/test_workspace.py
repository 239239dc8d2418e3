"""The fused kernels' buffer pool: reuse across calls, safety with retain_graph, nothing saved without grad."""

from __future__ import annotations

import gc

import torch

from tracetorch import ops, snn


def test_retain_graph_backward_twice_is_correct_even_when_buffers_could_be_reused():
    ops.clear_workspace()
    layer = snn.LIB(16)
    x = torch.randn(20, 4, 16, requires_grad=True)
    y = layer.scan(x)
    (g1,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    # another sequence of the same shape would reuse freed buffers: the first graph still owns its own
    layer.zero_states()
    other = layer.scan(torch.randn(20, 4, 16, requires_grad=True) * 5)
    other.sum().backward()
    del other
    gc.collect()
    layer.zero_states()
    layer.scan(torch.randn(20, 4, 16) * 5)  # may take pooled buffers
    (g2,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g1, g2)


def test_buffers_return_to_the_pool_when_the_graph_dies():
    ops.clear_workspace()
    layer = snn.LIB(16)
    y = layer.scan(torch.randn(10, 2, 16, requires_grad=True))
    assert ops.workspace_bytes() == 0
    y.sum().backward()
    del y
    layer.zero_states()  # the final state is an output of the same node and keeps it alive too
    gc.collect()
    assert ops.workspace_bytes() == 10 * 2 * 16 * 4  # the saved membrane
    layer.zero_states()
    y = layer.scan(torch.randn(10, 2, 16, requires_grad=True))
    assert ops.workspace_bytes() == 0  # taken again, held while y's graph lives
    assert y.grad_fn is not None
    ops.clear_workspace()


def test_no_grad_scan_saves_nothing():
    ops.clear_workspace()
    layer = snn.DSRLITS(8)
    with torch.no_grad():
        y = layer.scan(torch.randn(10, 2, 8))
    del y
    gc.collect()
    assert ops.workspace_bytes() == 0


def test_a_buffer_returned_while_the_pool_is_locked_does_not_deadlock():
    """The garbage collector may run a node's finalizer (which returns its buffers) inside take(), while the pool's
    lock is held by the same thread: the return must not wait for that lock."""
    import threading

    from tracetorch.ops import workspace

    workspace.clear_workspace()
    done = threading.Event()

    def locked_return() -> None:
        with workspace._lock:  # as take() holds it when a collection runs a finalizer
            workspace._give([torch.empty(1000)])
        done.set()

    t = threading.Thread(target=locked_return, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "returning a buffer under the pool's lock deadlocked"
    assert workspace.workspace_bytes() == 4000
    assert workspace.take(torch.empty(1000)).numel() == 1000 and workspace.workspace_bytes() == 0
