"""Exact online gradients for one element-wise layer: eligibility traces carried forward in time.

For a layer whose step is element-wise per neuron (every one of the 32 spiking types: even the ``R`` types
feed a neuron's own output back through a per-neuron weight), real-time recurrent learning (RTRL) is cheap.
Write the step as ``(y_t, h_t) = f(x_t, h_{t-1}, theta)`` with ``h`` the layer's ``k`` hidden states. Then
``d h_t / d theta`` has one value per state, per parameter, per element (not a matrix), and obeys

    E_t = (d h_t / d h_{t-1}) E_{t-1} + d h_t / d theta          (a k x k product per element)

so ``d y_t / d theta = d y_t / d theta|immediate + (d y_t / d h_{t-1}) E_{t-1}`` is exact at every step, for
memory that does not grow with the sequence length. The local derivatives come from autograd through the
layer's own step (:func:`tracetorch.functional.neuron_step`), so surrogate gradients, the reset path and
``detach_reset`` are treated exactly as backpropagation through time (BPTT) would treat them.

An ``nn.Linear`` in front of the layer can be bundled in: its weight ``W [N, M]`` gets traces
``d h_t / d W [*, N, M]`` per state (the input ``u [*, M]`` enters only through ``x = W u + b``), so its
gradient is exact too. That costs ``k * batch * N * M`` numbers, the usual price of exact RTRL for a weight
matrix feeding an element-wise recurrence (Zenke & Neftci 2021; Zucchet et al. 2023).

Everything flows into ordinary autograd: :meth:`EligibilityUnit.forward` returns ``y_t`` plus terms that are
exactly zero in value but whose gradients are the exact online gradients. ``loss_t.backward()`` then puts
``dL_t / d theta`` (through the whole history) into ``.grad``, and ``dL_t / d u_t`` (this step only) into
the layers below: across layers only the current step's gradient is passed down (the e-prop / OSTL
approximation; exact for the top element-wise layer and for any layer with only stateless modules above it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..snn.layers import SpikingLayer
from ..state import Stateful

__all__ = ["EligibilityUnit"]


class EligibilityUnit(Stateful):
    """Online-gradient wrapper of one element-wise layer (and optionally the ``nn.Linear`` that feeds it).

    Args:
        layer: a spiking layer of :mod:`tracetorch.snn` (any of the 32 types).
        linear: optional ``nn.Linear(M, layer.num_neurons)`` applied to the input first (needs ``dim=-1``).

    Hidden states: one eligibility trace per (layer state, learnable parameter) pair, named
    ``<state>__<param>`` (``mem__beta``, ``syn__alpha``, ``mem__linear_weight`` for the bundled linear...), each the
    shape of the layer state (``[*, N, M]`` for the linear weight). The layer and the linear are referenced,
    not registered: they belong to the model.

    Shapes: per step ``u [*, M]`` (or ``x [*, N, *]`` without a linear) -> ``y``, shaped like the layer's output.
    """

    def __init__(self, layer: SpikingLayer, linear: nn.Linear | None = None) -> None:
        super().__init__()
        if not isinstance(layer, SpikingLayer):
            raise TypeError(f"EligibilityUnit takes a tt.snn spiking layer, got {type(layer).__name__}")
        if layer.reference_only:
            raise TypeError(
                f"EligibilityUnit: {type(layer).__name__} overrides step (or params); eligibility traces follow the "
                "library's neuron equations, not its own. Learn it online with tt.online.TruncatedLearner."
            )
        if linear is not None:
            if not isinstance(linear, nn.Linear):
                raise TypeError(f"EligibilityUnit: linear must be an nn.Linear, got {type(linear).__name__}")
            if layer.dim != -1 or linear.out_features != layer.num_neurons:
                raise ValueError(
                    f"EligibilityUnit: an nn.Linear(.., {linear.out_features}) can be bundled only with a layer of "
                    f"{linear.out_features} neurons on dim=-1, got {type(layer).__name__}({layer.num_neurons}, "
                    f"dim={layer.dim})"
                )
        # Plain references (not submodules): the model owns them and saves them.
        self.__dict__["_layer"] = layer
        self.__dict__["_linear"] = linear
        self._trace_names: dict[tuple[str, str], str] = {}
        for s in layer.spec.states:
            for p in self.learned_parameters():
                self._trace_names[s, p] = f"{s}__{p}"
                self.define_state(f"{s}__{p}")
            for p in self.linear_parameters():
                self._trace_names[s, p] = f"{s}__{p}"
                self.define_state(f"{s}__{p}")

    @property
    def layer(self) -> SpikingLayer:
        """The traced spiking layer (owned by the model)."""
        return self._layer

    @property
    def linear(self) -> nn.Linear | None:
        """The bundled input ``nn.Linear``, or ``None``."""
        return self._linear

    def learned_parameters(self) -> tuple[str, ...]:
        """The layer's constrained parameters that are learnable (traced); fixed ones need no trace."""
        layer = self._layer
        return tuple(n for n in layer.parameter_names if layer.raw(n).requires_grad)

    def linear_parameters(self) -> tuple[str, ...]:
        """``"linear_weight"`` and ``"linear_bias"``: the bundled linear's parameters, where present and learnable."""
        lin = self._linear
        if lin is None:
            return ()
        return tuple(
            f"linear_{n}" for n in ("weight", "bias") if getattr(lin, n) is not None and getattr(lin, n).requires_grad
        )

    def extra_repr(self) -> str:
        lin = self._linear
        head = f"{type(lin).__name__}({lin.in_features}, {lin.out_features}) -> " if lin is not None else ""
        return f"{head}{type(self._layer).__name__}({self._layer.num_neurons}), traces={len(self._states)}"

    # -- one step -------------------------------------------------------------------------------------------

    def forward(self, u: Tensor) -> Tensor:
        """One step: advance the layer and its traces; return ``y_t`` carrying the exact online gradients."""
        layer, lin = self._layer, self._linear
        x = lin(u) if lin is not None else u
        xd = x.detach()
        layer.check_input(xd.shape)
        fresh = any(s is None for s in layer._states.values())
        state = layer.prepare_states(xd.shape, xd.dtype, xd.device)
        if fresh:  # the layer starts a new stream (zero_states on the model): so do its traces
            for name in self._states:
                self._states[name] = None
        params = layer.params(xd.ndim)
        learned = self.learned_parameters()
        snames = list(state)
        k = len(snames)

        # Local derivatives of (y, new states) w.r.t. (old states, learned parameters, input), per element.
        # The step is element-wise, so a vector-Jacobian product with ones gives each element's own derivative,
        # provided the parameters are expanded to the state's shape (else the batch would be summed).
        with torch.enable_grad():
            s_in = [state[n].detach().requires_grad_() for n in snames]
            p_in = {
                n: (v.detach().expand(xd.shape).clone().requires_grad_() if n in learned else v.detach())
                for n, v in params.items()
            }
            x_in = xd.clone().requires_grad_()
            y, new = layer.step(x_in, dict(zip(snames, s_in, strict=True)), p_in)
            inputs = [*s_in, *(p_in[n] for n in learned), x_in]
            outs = [y, *(new[n] for n in snames)]
            rows = [_local_grads(o, inputs) for o in outs]

        with torch.no_grad():
            ix = k + len(learned)  # index of the input's column
            jy = rows[0]
            u_d = u.detach().unsqueeze(-2) if lin is not None else None
            traced = [*learned, *self.linear_parameters()]
            # history terms of d y_t / d theta, from the traces before this step
            hist: dict[str, Tensor | None] = {}
            for p in traced:
                acc = None
                for i, s in enumerate(snames):
                    e = self._states[self._trace_names[s, p]]
                    if e is None:
                        continue
                    j = jy[i].unsqueeze(-1) if p == "linear_weight" else jy[i]
                    acc = j * e if acc is None else torch.addcmul(acc, j, e)
                hist[p] = acc
            # advance the traces: E_t[s] = sum_s' J[s, s'] E_{t-1}[s'] + d h_t[s] / d theta
            new_traces: dict[str, Tensor] = {}
            for a, s in enumerate(snames):
                row = rows[1 + a]
                for p in traced:
                    if p in learned:
                        acc = row[k + learned.index(p)].clone()
                    elif p == "linear_weight":
                        acc = row[ix].unsqueeze(-1) * u_d
                    else:  # bias
                        acc = row[ix].clone()
                    for i, s2 in enumerate(snames):
                        e = self._states[self._trace_names[s2, p]]
                        if e is not None:
                            j = row[i].unsqueeze(-1) if p == "linear_weight" else row[i]
                            acc.addcmul_(j, e)
                    new_traces[self._trace_names[s, p]] = acc
            layer.store_states({n: new[n].detach() for n in snames})

        out = y.detach()
        if torch.is_grad_enabled():
            # Value-zero terms whose gradients are the exact online gradients of y_t.
            if x.requires_grad:
                out = out + jy[ix] * (x - xd)  # immediate path: into u (and the linear's W, b at this step)
            for n in learned:
                g = jy[k + learned.index(n)] if hist[n] is None else jy[k + learned.index(n)] + hist[n]
                out = out + g * (params[n] - params[n].detach())
            if lin is not None:
                w = lin.weight
                if hist.get("linear_weight") is not None:
                    out = out + torch.einsum("...nm,nm->...n", hist["linear_weight"], w - w.detach())
                if hist.get("linear_bias") is not None:
                    out = out + hist["linear_bias"] * (lin.bias - lin.bias.detach())
        self._states.update(new_traces)
        return out


def _local_grads(out: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    if not out.requires_grad:
        return [torch.zeros_like(i) for i in inputs]
    grads = torch.autograd.grad(out, inputs, torch.ones_like(out), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(grads, inputs, strict=True)]
