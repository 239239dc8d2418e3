"""The fast selective scan processes the batch in blocks of rows (``BLOCK_BYTES``): every blocking, chunking and
input layout gives the reference's outputs, final state and gradients."""

from __future__ import annotations

import sys

import pytest
import torch

from tracetorch.ops.selective_scan import selective_scan, selective_scan_ref
from tracetorch.ops.selective_scan.torch_kernel import _block_rows

ss_mod = sys.modules["tracetorch.ops.selective_scan.torch_kernel"]  # the chunked torch kernel and its blocking

DT = torch.float64


def inputs(t, b, d, n, *, split_bc=False, skip=True, init=True):
    g = torch.Generator().manual_seed(t * 1000 + b * 100 + d * 10 + n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=DT)  # noqa: E731
    u = r(t, b, d).requires_grad_(True)
    delta = (torch.rand(t, b, d, generator=g, dtype=DT) * 0.5 + 0.01).requires_grad_(True)
    A = (-torch.rand(d, n, generator=g, dtype=DT) * 3 - 0.1).requires_grad_(True)
    if split_bc:  # B and C as non-contiguous views, as a layer's x_proj(...).split(...) gives them
        xp = r(t, b, 3 + 2 * n).requires_grad_(True)
        _, B, C = xp.split([3, n, n], dim=-1)
        leaves = [u, delta, A, xp]
    else:
        B, C = r(t, b, n).requires_grad_(True), r(t, b, n).requires_grad_(True)
        leaves = [u, delta, A, B, C]
    D = r(d).requires_grad_(True) if skip else None
    h0 = r(b, d, n).requires_grad_(True) if init else None
    leaves += [v for v in (D, h0) if v is not None]
    return (u, delta, A, B, C, D, h0), leaves


def check(ins, leaves, chunk):
    y_fast, h_fast = selective_scan(*ins, chunk=chunk)
    y_ref, h_ref = selective_scan_ref(*ins)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-12, atol=1e-12)
    wy, wh = torch.randn_like(y_ref), torch.randn_like(h_ref)
    g_fast = torch.autograd.grad((y_fast * wy).sum() + (h_fast * wh).sum(), leaves)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), leaves)
    for i, (gf, gr) in enumerate(zip(g_fast, g_ref, strict=True)):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12, msg=lambda m, i=i: f"grad {i}: {m}")


@pytest.mark.parametrize("rows", [1, 2, 3, 100])
@pytest.mark.parametrize(
    "t,b,d,n,chunk",
    [(1, 1, 3, 2, 16), (7, 5, 4, 3, 3), (17, 7, 3, 2, 4), (9, 1, 2, 3, 1), (20, 6, 5, 4, 8), (11, 4, 3, 2, 64)],
)
@pytest.mark.parametrize("variant", ["full", "no-skip", "no-init", "split-bc"])
def test_blocked_scan_matches_reference(monkeypatch, rows, t, b, d, n, chunk, variant):
    # BLOCK_BYTES for about `rows` rows per block (batch sizes that are and are not multiples of the block)
    monkeypatch.setattr(ss_mod, "BLOCK_BYTES", rows * min(chunk, t) * n * d * 8)
    assert _block_rows(b, n, d, min(chunk, t), 8) <= max(rows, 1)
    ins, leaves = inputs(
        t, b, d, n, split_bc=variant == "split-bc", skip=variant != "no-skip", init=variant != "no-init"
    )
    check(ins, leaves, chunk)


def test_block_rows_are_balanced_and_bounded(monkeypatch):
    assert _block_rows(32, 8, 512, 16, 4) * 16 * 8 * 512 * 4 <= ss_mod.BLOCK_BYTES
    assert _block_rows(1, 64, 4096, 64, 8) == 1  # never zero rows, even when one row is over budget
    assert _block_rows(3, 1, 1, 1, 4) == 3
    monkeypatch.setattr(ss_mod, "BLOCK_BYTES", 5 * 4)  # at most 5 rows of one element
    for b in range(1, 40):
        rows = _block_rows(b, 1, 1, 1, 4)
        blocks = -(-b // 5)
        assert rows <= 5 and -(-b // rows) == blocks  # fewest blocks, none empty,
        assert rows * (blocks - 1) < b <= rows * blocks  # and of near-equal sizes


def test_blocked_float32_gradients_track_float64(monkeypatch):
    monkeypatch.setattr(ss_mod, "BLOCK_BYTES", 3 * 8 * 4 * 6 * 4)
    ins, leaves = inputs(50, 7, 6, 4)
    y, h = selective_scan(*ins, chunk=8)
    g64 = torch.autograd.grad(y.square().sum() + h.sum(), leaves)
    ins32 = [None if v is None else v.detach().float().requires_grad_(True) for v in ins]
    y32, h32 = selective_scan(*ins32, chunk=8)
    g32 = torch.autograd.grad(y32.square().sum() + h32.sum(), [v for v in ins32 if v is not None])
    for a, b in zip(g32, g64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3)
