"""State-space layers ``S4D``, ``S6`` and ``Mamba`` as ``tt.Layer``s: hidden states inside the layer, one step
per call, ``scan`` for whole sequences (same numbers, much faster).

Each hidden state has the input's shape with the feature axis holding the layer's channels, plus one trailing
axis: ``d_state`` for SSM states (``[B, D, N]`` for a ``[B, D]`` input; ``[B, D, H, W, N]`` for ``[B, D, H, W]``
with ``dim=-3``) and ``d_conv - 1`` for Mamba's convolution window. Inside, the feature axis is moved last and
every other axis is folded into the batch.

* ``S4D``: time-invariant diagonal SSM. A step is the recurrence; ``scan`` uses the convolution form
  (kernel ``C B_bar A_bar^k`` by FFT) plus closed forms for the initial state's contribution and the final
  state, so no ``[T, batch, D, N]`` tensor is ever built.
* ``S6``: Mamba's selective SSM. ``scan`` batches every step-independent op over all steps and runs the
  recurrence with :func:`tracetorch.ops.selective_scan` (one autograd node, hand-written backward).
* ``Mamba``: the Mamba block (projections, causal depthwise conv, S6 core, gate), with its conv window as a
  state so that streaming one step at a time gives what ``scan`` gives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import features_back, features_last
from ..functional import ssm as S
from ..layer import Layer, normal_tensors, step_loop, under_autocast
from ..ops import backend
from ..ops.selective_scan import selective_scan
from ..params import stamp
from ..state import Stateful
from .streaming import MambaStream

__all__ = ["S4D", "S6", "Mamba"]


def _log_uniform(n: int, lo: float, hi: float) -> Tensor:
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={lo!r}, dt_max={hi!r}")
    return torch.exp(torch.rand(n) * (math.log(hi) - math.log(lo)) + math.log(lo))


def _positive_int(owner: str, what: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{owner}: {what} must be an int >= {minimum}, got {v!r}")
    return v


class _SSMLayer(Layer):
    """Shared layout logic: states with the layer's channels on the feature axis plus one trailing axis."""

    math_hooks = (*Layer.math_hooks, "_flat_step", "_s6_step")  # the per-step math behind step (see Layer.math_hooks)

    def __init__(self, d_model: int, *, dim: int, channels: int, trailing: dict[str, tuple[int, str]]) -> None:
        super().__init__(d_model, dim=dim)
        self.channels = channels  # size of the states' feature axis
        self._trailing = dict(trailing)  # state name -> (trailing size, what it is)
        for name in trailing:
            self.define_state(name)
        self._derived_key: tuple | None = None
        self._derived: dict[str, Tensor] = {}
        self._derived_sources: tuple[Tensor, ...] = ()

    def params(self, ndim: int) -> dict[str, Tensor]:
        """The tensors a step needs, derived from the parameters (discretisations, transposes).

        Derived once per call; when no gradient can flow (``no_grad``, or frozen parameters) the result is
        reused until a parameter changes (tracked by version counters and storage), which matters when streaming.
        The reused tensors are normal ones even when made under ``torch.inference_mode()``.
        """
        sources = self._derive_sources()
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in sources)):
            self._derived_key = None
            return self._derive()
        key = (*stamp(sources), *[(p.dtype, p.device) for p in sources])  # the sources are held below
        if key != self._derived_key:
            with normal_tensors():  # never an inference tensor: the cache outlives an inference_mode block
                self._derived = self._derive()
            self._derived_key = key
            self._derived_sources = sources
        return self._derived

    def _derive(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def _derive_sources(self) -> tuple[Tensor, ...]:
        """The parameters :meth:`_derive` reads (every other one is used directly by the step)."""
        raise NotImplementedError

    def state_shape(self, name: str, input_shape: torch.Size) -> torch.Size:
        shape = list(input_shape)
        shape[self.feature_dim(len(shape))] = self.channels
        shape.append(self._trailing[name][0])
        return torch.Size(shape)

    def check_state_tensor(self, name: str, value: Tensor) -> str | None:
        problem = Stateful.check_state_tensor(self, name, value)
        if problem:
            return problem
        size, what = self._trailing[name]
        if value.ndim < 2 or value.shape[-1] != size:
            return f"shape {tuple(value.shape)}: the last axis must have {size} entries ({what})"
        inner = value.shape[:-1]
        if not -len(inner) <= self.dim < len(inner):
            return f"shape {tuple(value.shape)} has no axis {self.dim} (the layer's dim) before the {what} axis"
        if inner[self.feature_dim(len(inner))] != self.channels:
            return (
                f"shape {tuple(value.shape)} does not fit {type(self).__name__} "
                f"(expected {self.channels} channels on axis {self.dim}, then {size} = {what})"
            )
        return None

    # per-step input [..., F at d, ...] <-> [batch, F]; state [..., C at d-1, ..., K] <-> [batch, C, K]
    # (tracetorch.features; every state has one trailing axis)
    def _flat_states(self, state: dict[str, Tensor], d: int) -> dict[str, Tensor]:
        return {k: features_last(v, d, trailing=1) for k, v in state.items()}

    def _unflat_states(self, flat: dict[str, Tensor], state: dict[str, Tensor], d: int) -> dict[str, Tensor]:
        return {k: features_back(flat[k], state[k].shape, d, trailing=1) for k in state}

    def step(self, x: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        if x.ndim == 2 and self.dim in (-1, 1):  # [batch, features]: already the working layout
            return self._flat_step(x, state, params)
        d = self.feature_dim(x.ndim)
        y, new = self._flat_step(features_last(x, d), self._flat_states(state, d), params)
        return features_back(y, x.shape, d), self._unflat_states(new, state, d)

    def sequence(self, x_seq: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        # the sequence forms (convolution, selective scan) know only the library's steps
        if self.reference_only or backend.REFERENCE:
            return super().sequence(x_seq, state, params)
        d = self.feature_dim(x_seq.ndim - 1)  # negative: the same axis in the sequence
        t = x_seq.shape[0]
        xs = (x_seq.movedim(d, -1) if d != -1 else x_seq).reshape(t, -1, x_seq.shape[d])
        y, new = self._flat_sequence(xs, self._flat_states(state, d), params)
        return features_back(y, x_seq.shape, d), self._unflat_states(new, state, d)

    def _flat_step(self, x: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, dict]:
        raise NotImplementedError

    def _flat_sequence(self, xs: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, dict]:
        raise NotImplementedError


class S4D(_SSMLayer):
    """Diagonal real time-invariant SSM (S4D-Real, Gu et al. 2022), one independent SSM per channel.

    Per channel ``d`` and state index ``n`` (zero-order hold with learnable step ``dt``):
    ``A = -exp(A_log)``, ``A_bar = exp(dt A)``, ``B_bar = (A_bar - 1) / A * B``;
    ``h <- A_bar h + B_bar x``; ``y = sum_n C h + D x``.

    Args:
        d_model: channels ``D`` (the input's feature axis; output has the same shape as the input).
        d_state: ``N``, states per channel.
        dim: the feature axis of the per-step input.
        dt_min, dt_max: ``dt`` is initialised log-uniform in ``[dt_min, dt_max]``, one per channel.

    Parameters: ``log_dt`` ``[D]``; ``A_log`` ``[D, N]`` = ``log(1..N)`` (S4D-Real: ``A = -(1..N)``);
    ``B`` ``[D, N]`` = 1 (as in S4D's reference code: only the product ``C B`` reaches the output, so ``B`` at 1
    keeps the state the plain ZOH-filtered input); ``C`` ``[D, N]`` ~ N(0, 1/N); ``D`` ``[D]`` = 1.
    State: ``h`` ``[*, D, *, N]``. ``scan`` uses the convolution form (FFT), exact up to rounding; a sequence with
    a NaN or inf runs the recurrence, so that, as in the steps, it reaches no earlier output.
    """

    def __init__(
        self, d_model: int, d_state: int = 64, *, dim: int = -1, dt_min: float = 1e-3, dt_max: float = 1e-1
    ) -> None:
        d_state = _positive_int("S4D", "d_state", d_state)
        super().__init__(d_model, dim=dim, channels=d_model, trailing={"h": (d_state, "d_state")})
        self.d_state = d_state
        n = d_model
        self.log_dt = nn.Parameter(torch.log(_log_uniform(n, dt_min, dt_max)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(n, 1))
        self.B = nn.Parameter(torch.ones(n, d_state))
        self.C = nn.Parameter(torch.randn(n, d_state) / math.sqrt(d_state))
        self.D = nn.Parameter(torch.ones(n))

    def _derive_sources(self) -> tuple[Tensor, ...]:
        return (self.log_dt, self.A_log, self.B, self.C, self.D)

    def _derive(self) -> dict[str, Tensor]:
        dt = torch.exp(self.log_dt)
        A = -torch.exp(self.A_log)
        A_bar, B_bar = S.zoh(dt, A, self.B)
        return {"dtA": dt.unsqueeze(-1) * A, "A_bar": A_bar, "B_bar": B_bar, "C": self.C, "D": self.D}

    def _flat_step(self, x, state, p):
        y, h = S.diagonal_step(x, state["h"], p["A_bar"], p["B_bar"], p["C"], p["D"])
        return y, {"h": h}

    def _flat_sequence(self, xs, state, p):
        # The FFT mixes every step into every output: a NaN or inf at step t would reach the outputs before t. Such
        # an input runs the recurrence instead, as the steps do (one sum tells: cheap next to the FFT; a finite
        # input whose sum overflows just takes the recurrence too).
        if not torch.compiler.is_compiling() and not torch.isfinite(xs.detach().sum()):
            return step_loop(self._flat_step, xs, state, p)
        t = xs.shape[0]
        h0 = state["h"].transpose(0, 1).contiguous()  # [D, batch, N]
        x = xs.permute(2, 1, 0).contiguous()  # [D, batch, T]: time last for the FFT, channels batch the matmuls
        steps = torch.arange(t + 1, dtype=xs.dtype, device=xs.device)
        powers = torch.exp2(p["dtA"].unsqueeze(-1) * (steps * S.LOG2E))  # A_bar^k, [D, N, T+1]
        # y_t = sum_{j <= t} K_{t-j} x_j + sum_n C A_bar^{t+1} h0 + D x_t, with K_k = sum_n C B_bar A_bar^k
        kernel = torch.bmm((p["C"] * p["B_bar"]).unsqueeze(1), powers[..., :t]).squeeze(1)  # [D, T]
        size = 1 << (2 * t - 1).bit_length()
        spec = torch.fft.rfft(x, n=size) * torch.fft.rfft(kernel, n=size).unsqueeze(1)
        y = torch.fft.irfft(spec, n=size)[..., :t]
        y = torch.baddbmm(y, h0, p["C"].unsqueeze(-1) * powers[..., 1:])  # [D, batch, T]
        y = torch.addcmul(y.permute(2, 1, 0), p["D"], xs)
        # h_T = A_bar^T h0 + sum_j A_bar^{T-1-j} B_bar x_j
        weights = (p["B_bar"].unsqueeze(-1) * powers[..., :t].flip(-1)).transpose(-1, -2).contiguous()  # [D, T, N]
        h = torch.baddbmm(powers[..., t].unsqueeze(1) * h0, x, weights)  # [D, batch, N]
        return y, {"h": h.transpose(0, 1)}

    def extra_repr(self) -> str:
        return f"{self.features}, d_state={self.d_state}, dim={self.dim}"


def _dt_rank(owner: str, dt_rank: int | str, d_model: int) -> int:
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    return _positive_int(owner, "dt_rank", dt_rank)


class _Selective:
    """Parameters and math of the S6 core on ``channels`` channels (shared by ``S6`` and ``Mamba``)."""

    def _init_s6(self, channels: int, d_state: int, dt_rank: int, dt_min: float, dt_max: float) -> None:
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.x_proj = nn.Linear(channels, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, channels, bias=True)
        # Mamba's reference init: weight uniform +-dt_rank^-0.5; bias = softplus^-1(dt), dt log-uniform
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        dt = _log_uniform(channels, dt_min, dt_max).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1))
        self.D = nn.Parameter(torch.ones(channels))

    def _s6_params(self) -> dict[str, Tensor]:
        A = -torch.exp(self.A_log)
        return {"A": A, "A2t": (A * S.LOG2E).t().contiguous(), "D": self.D}

    def _delta_bc(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt_in, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt_in)), B, C

    def _s6_step(self, u: Tensor, h: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        delta, B, C = self._delta_bc(u)
        y, ht = S.selective_step_t(u, delta, p["A2t"], B, C, p["D"], h.transpose(-1, -2))
        return y, ht.transpose(-1, -2)

    def _s6_sequence(self, us: Tensor, h: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        delta, B, C = self._delta_bc(us)
        return selective_scan(us, delta, p["A"], B, C, p["D"], h)


class S6(_Selective, _SSMLayer):
    """Mamba's selective SSM (S6, Gu & Dao 2023): ``A`` fixed per channel, ``dt``, ``B``, ``C`` from the input.

    Per step, for input ``x`` ``[batch, D]``: ``(dt_in, B, C) = x_proj(x)`` (``R + N + N``);
    ``delta = softplus(dt_proj(dt_in))`` ``[batch, D]``; ``A = -exp(A_log)``;
    ``h <- exp(delta A) h + (delta x) B``; ``y = sum_n C h + D x``. As Mamba's ``selective_scan_ref``
    (``B_bar = delta B``, the simplified ZOH of the paper).

    Args:
        d_model: channels ``D``.
        d_state: ``N``.
        dt_rank: ``R``; ``"auto"`` = ``ceil(D / 16)``.
        dim: the feature axis of the per-step input.
        dt_min, dt_max: ``dt_proj``'s bias is initialised so that ``delta`` starts log-uniform in this range.

    Parameters (Mamba's names and inits): ``x_proj`` (no bias), ``dt_proj``, ``A_log`` ``[D, N]`` = ``log(1..N)``,
    ``D`` ``[D]`` = 1. State: ``h`` ``[*, D, *, N]``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        dt_rank: int | str = "auto",
        *,
        dim: int = -1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        d_state = _positive_int("S6", "d_state", d_state)
        super().__init__(d_model, dim=dim, channels=d_model, trailing={"h": (d_state, "d_state")})
        self._init_s6(d_model, d_state, _dt_rank("S6", dt_rank, d_model), dt_min, dt_max)

    def _derive_sources(self) -> tuple[Tensor, ...]:
        return (self.A_log, self.D)

    def _derive(self) -> dict[str, Tensor]:
        return self._s6_params()

    def _flat_step(self, x, state, p):
        y, h = self._s6_step(x, state["h"], p)
        return y, {"h": h}

    def _flat_sequence(self, xs, state, p):
        y, h = self._s6_sequence(xs, state["h"], p)
        return y, {"h": h}

    def extra_repr(self) -> str:
        return f"{self.features}, d_state={self.d_state}, dt_rank={self.dt_rank}, dim={self.dim}"


class Mamba(_Selective, _SSMLayer):
    """The Mamba block (Gu & Dao 2023) without residual or normalisation (add them around it).

    For input ``x`` ``[batch, D]`` per step, with ``E = expand * D``:
    ``(u, z) = in_proj(x)`` (``E + E``); ``u = silu(conv(u))`` with a depthwise causal conv over time of
    kernel ``d_conv`` (its last ``d_conv - 1`` inputs are the state ``conv``); ``y = S6(u)`` on ``E`` channels
    (state ``ssm``); ``out = out_proj(y * silu(z))`` ``[batch, D]``.

    Args:
        d_model: model width ``D`` (input and output features).
        d_state: ``N``. d_conv: conv kernel (>= 2). expand: ``E = expand * D``.
        dt_rank: ``"auto"`` = ``ceil(D / 16)``.
        dim: the feature axis of the per-step input.
        dt_min, dt_max: initial range of ``delta``.

    Parameters carry the names, shapes and inits of the reference ``mamba_ssm`` ``Mamba`` module (``in_proj``,
    ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``). States: ``conv`` ``[*, E, *, d_conv-1]``
    and ``ssm`` ``[*, E, *, N]``. A typical residual block: ``x + Mamba(D)(RMSNorm(x))``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        *,
        dim: int = -1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        d_state = _positive_int("Mamba", "d_state", d_state)
        d_conv = _positive_int("Mamba", "d_conv", d_conv, 2)
        expand = _positive_int("Mamba", "expand", expand)
        e = expand * d_model
        trailing = {"conv": (d_conv - 1, "d_conv - 1"), "ssm": (d_state, "d_state")}
        super().__init__(d_model, dim=dim, channels=e, trailing=trailing)
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = e
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1, bias=True)
        self._init_s6(e, d_state, _dt_rank("Mamba", dt_rank, d_model), dt_min, dt_max)
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def _derive_sources(self) -> tuple[Tensor, ...]:
        return (self.A_log, self.D, self.conv1d.weight)

    def _derive(self) -> dict[str, Tensor]:
        p = self._s6_params()
        p["conv_t"] = self.conv1d.weight.squeeze(1).t().contiguous()  # [K, E]
        return p

    def _flat_step(self, x, state, p):
        u, z = self.in_proj(x).chunk(2, dim=-1)
        c, window = S.causal_conv_step_t(u, state["conv"].transpose(-1, -2), p["conv_t"], self.conv1d.bias)
        window = window.transpose(-1, -2)
        y, h = self._s6_step(F.silu(c), state["ssm"], p)
        return self.out_proj(y * F.silu(z)), {"conv": window, "ssm": h}

    def forward(self, x: Tensor) -> Tensor:
        """One time step. Without autograd (inference, streaming) and for ``[batch, D]`` inputs a lean path runs
        on preallocated buffers (``tracetorch.ssm.streaming.MambaStream``); it computes the same numbers as the
        reference step."""
        if (
            not self.reference_only
            and not backend.REFERENCE
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and not under_autocast(x)
        ):
            y = MambaStream.step(self, x)
            if y is not None:
                return y
        return super().forward(x)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # copies (deepcopy, pickle) drop the streaming buffers
        state.pop("_stream", None)
        state.pop("_stream_params", None)
        return state

    def _flat_sequence(self, xs, state, p):
        u, z = self.in_proj(xs).chunk(2, dim=-1)
        # one conv1d over the whole sequence, the carried window prepended: [batch, E, K-1+T]
        full = torch.cat([state["conv"], u.permute(1, 2, 0)], dim=-1)
        c = F.conv1d(full, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)  # [batch, E, T]
        window = full[..., -(self.d_conv - 1) :]
        y, h = self._s6_sequence(F.silu(c.permute(2, 0, 1)), state["ssm"], p)
        return self.out_proj(y * F.silu(z)), {"conv": window, "ssm": h}

    def extra_repr(self) -> str:
        return (
            f"{self.features}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, dim={self.dim}"
        )
