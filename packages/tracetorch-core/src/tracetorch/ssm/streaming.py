"""Mamba's no-grad streaming engine: one step per call on buffers preallocated per stream, the same kernels on the
same operands in the same order as the reference step (:meth:`tracetorch.ssm.Mamba._flat_step`), so the same numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..autocast import any_autocast
from ..layer import normal_tensors
from ..params import stamp

if TYPE_CHECKING:
    from .layers import Mamba

__all__ = ["MambaStream"]


_SLOTS = 32  # steps per pass over the window buffer (then d_conv - 1 rows are copied back to its start)
_silu_ = torch._C._nn.silu_
_softplus = torch._C._nn.softplus
_Linear, _Conv1d = nn.Linear, nn.Conv1d
_global_hooks = (nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks)


class MambaStream:
    """Mamba's no-grad streaming step for ``[batch, D]`` inputs, on buffers preallocated per stream.

    The reference step (:meth:`Mamba._flat_step`) spends most of its time dispatching ~40 small ops (chunk, cat,
    transposes, fresh allocations). This runs the same kernels on the same operands in the same order, so the
    results are bit-identical, with ``out=`` and in-place ops on buffers and views built once per stream:

    * ``in_proj`` writes ``(u, z)`` straight into the next row of a time-major buffer ``[rows, batch, 2E]``,
      whose ``u`` halves of the last ``d_conv`` rows are the conv input (the window and this step's ``u``); the
      last ``d_conv - 1`` rows are copied back to the start once every ``_SLOTS`` steps. The state ``conv`` is
      a ``[batch, E, d_conv-1]`` view of those rows.
    * the SSM state alternates between two ``[batch, N, E]`` buffers; ``ssm`` is a ``[batch, E, N]`` view
      (the reference's layout, see :func:`tracetorch.functional.ssm.selective_step`).

    Each step checks that the layer's states are still the views it left there (else a load,
    ``zero_states``, ``detach_states``, a scan or a reference step replaced them, and new buffers are filled
    from the states) and that no parameter changed (identity, version counter, data pointer; the derived
    tensors are then rebuilt). Outputs are fresh tensors; the state buffers are written in place, so a
    reference kept from ``get_states()`` follows the stream (``save_states()`` copies).
    """

    __slots__ = (  # noqa: RUF023 - grouped by role
        "shape", "dtype", "device", "inference", "slots", "pos", "cur", "buf", "wrap_dst", "wrap_src", "views",
        "prod", "prod_t", "c", "xdbl", "dt_in", "b", "cm", "delta", "delta_u", "du", "du_u", "dA", "h", "ht", "y",
        "y3", "conv_state", "ssm_state",
    )  # fmt: skip

    @staticmethod
    def step(layer: Mamba, x: Tensor) -> Tensor | None:
        """One step of ``layer`` on ``x``, or ``None`` when the reference path must run."""
        d = layer.__dict__
        if not isinstance(x, Tensor) or x.ndim != 2 or layer.dim not in (-1, 1) or any_autocast():
            return None
        mods = d["_modules"]
        ip, cv, xp, dp, op = mods["in_proj"], mods["conv1d"], mods["x_proj"], mods["dt_proj"], mods["out_proj"]
        # a replaced, parametrized or hooked submodule runs the reference
        if (
            type(ip) is not _Linear or type(xp) is not _Linear or type(dp) is not _Linear or type(op) is not _Linear
            or type(cv) is not _Conv1d or _global_hooks[0] or _global_hooks[1]
            or ip._forward_hooks or ip._forward_pre_hooks or cv._forward_hooks or cv._forward_pre_hooks
            or xp._forward_hooks or xp._forward_pre_hooks or dp._forward_hooks or dp._forward_pre_hooks
            or op._forward_hooks or op._forward_pre_hooks
        ):  # fmt: skip
            return None
        own = d["_parameters"]
        srcs = (
            ip._parameters["weight"], cv._parameters["weight"], cv._parameters["bias"], xp._parameters["weight"],
            dp._parameters["weight"], dp._parameters["bias"], own["A_log"], own["D"], op._parameters["weight"],
        )  # fmt: skip
        if srcs[2] is None or srcs[5] is None:  # biases removed: the reference handles it
            return None
        key = stamp(srcs)  # of every parameter the step reads (the cache holds them)
        cache = d.get("_stream_params")
        if cache is None or cache[0] != key:
            if any(p.dtype != x.dtype or p.device != x.device for p in srcs):
                return None
            with normal_tensors():
                p = layer._derive()
            # F.linear(x, w) is mm(x, w.t()): the same views give bit-identical products
            w_t = (srcs[0].t(), srcs[3].t(), srcs[4].t(), srcs[8].t())
            cache = d["_stream_params"] = (key, (w_t[0], p["conv_t"].unsqueeze(1), srcs[2], w_t[1], w_t[2], srcs[5],
                                                 p["A2t"], p["D"], w_t[3]), srcs)  # fmt: skip
        w_in, conv_t, conv_b, w_x, w_dt, b_dt, a2t, d_skip, w_out = cache[1]
        states = d["_states"]
        st = d.get("_stream")
        if (
            st is None
            or states["conv"] is not st.conv_state
            or states["ssm"] is not st.ssm_state
            or x.shape != st.shape
            or x.dtype is not st.dtype
            or x.device != st.device
            or torch.is_inference_mode_enabled() is not st.inference
        ):
            if x.dtype != w_in.dtype or x.device != w_in.device:
                return None
            layer.check_input(x.shape)  # first step of a stream, or an error with a clear message
            s = layer.prepare_states(x.shape, x.dtype, x.device)
            if s["conv"].dtype != x.dtype or s["ssm"].dtype != x.dtype:
                return None
            st = d["_stream"] = MambaStream(layer, x, s["conv"], s["ssm"])
        # as Mamba._step: in_proj -> (u, z); conv over [window, u] + bias, silu; x_proj -> (dt_in, B, C),
        # delta = softplus(dt_proj(dt_in)); h = B (delta u) + exp2(delta A2t) h; y = C h + D u; out_proj(y silu(z))
        pos = st.pos
        if pos == st.slots:
            st.wrap_dst.copy_(st.wrap_src)
            pos = 0
        row, full, z, conv_state = st.views[pos]
        torch.mm(x, w_in, out=row)
        torch.mul(full, conv_t, out=st.prod_t)
        torch.sum(st.prod, -2, out=st.c)  # over a contiguous [batch, K, E], as the reference
        c = _silu_(st.c.add_(conv_b))
        torch.mm(c, w_x, out=st.xdbl)
        delta = _softplus(torch.addmm(b_dt, st.dt_in, w_dt, out=st.delta), 1, 20, out=st.delta)
        da = torch.mul(st.delta_u, a2t, out=st.dA).exp2_()
        torch.mul(delta, c, out=st.du)
        cur = st.cur
        h = torch.mul(st.b, st.du_u, out=st.h[1 - cur]).addcmul_(da, st.h[cur])
        torch.bmm(st.cm, h, out=st.y3)
        y = st.y.addcmul_(d_skip, c).mul_(_silu_(z))
        out = torch.mm(y, w_out)
        st.pos, st.cur = pos + 1, 1 - cur
        states["conv"] = st.conv_state = conv_state
        states["ssm"] = st.ssm_state = st.ht[1 - cur]
        return out

    def __init__(self, layer: Mamba, x: Tensor, conv: Tensor, ssm: Tensor) -> None:
        b, e, n, r, k = x.shape[0], layer.d_inner, layer.d_state, layer.dt_rank, layer.d_conv
        new = {"dtype": x.dtype, "device": x.device}
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.inference = torch.is_inference_mode_enabled()
        # row k-1+i holds in_proj's output (u, z) of the i-th step of this pass; rows i..i+k-2 its conv window
        self.slots = slots = max(_SLOTS, k)  # >= k - 1: the wrap copy does not overlap itself
        self.buf = torch.empty(slots + k - 1, b, 2 * e, **new)
        self.buf[: k - 1, :, :e].copy_(conv.permute(2, 0, 1))
        self.wrap_dst, self.wrap_src = self.buf[: k - 1], self.buf[slots:]
        self.views = [
            (self.buf[i + k - 1], self.buf[i : i + k, :, :e], self.buf[i + k - 1, :, e:],
             self.buf[i + 1 : i + k, :, :e].permute(1, 2, 0))
            for i in range(slots)
        ]  # fmt: skip
        self.pos = 0
        self.prod = torch.empty(b, k, e, **new)
        self.prod_t = self.prod.transpose(0, 1)
        self.c = torch.empty(b, e, **new)
        self.xdbl = torch.empty(b, r + 2 * n, **new)
        self.dt_in = self.xdbl[:, :r]
        self.b = self.xdbl[:, r : r + n].unsqueeze(-1)
        self.cm = self.xdbl[:, r + n :].unsqueeze(-2)
        self.delta = torch.empty(b, e, **new)
        self.delta_u = self.delta.unsqueeze(-2)
        self.du = torch.empty(b, e, **new)
        self.du_u = self.du.unsqueeze(-2)
        self.dA = torch.empty(b, n, e, **new)
        self.h = [torch.empty(b, n, e, **new), torch.empty(b, n, e, **new)]
        self.h[0].copy_(ssm.transpose(-1, -2))
        self.ht = [h.transpose(-1, -2) for h in self.h]
        self.cur = 0
        self.y = torch.empty(b, e, **new)
        self.y3 = self.y.unsqueeze(-2)
        self.conv_state = self.ssm_state = None
