"""Byte-level language models: ``bytelm-mamba`` (a stack of ``tt.ssm.Mamba`` blocks), ``bytelm-lstm`` and
``bytelm-snn`` (residual blocks of spiking neurons whose spikes reach the residual stream through synaptic traces).

Both read one byte per step (``[batch]`` int64 in ``0..255``) and return logits ``[batch, 256]`` for the next
byte; ``scan`` takes ``[T, batch]`` and returns ``[T, batch, 256]`` with the same numbers, continuing from and
leaving the hidden states in the model. ``stream_bytes`` primes the model on a prompt with ``scan`` (chunk by
chunk) and then samples one byte per step, yielding each as soon as it exists; memory stays flat however long
it runs, since the only thing carried from step to step is the fixed-size hidden state. ``stream_batch`` does the
same for many prompts at once: each primes its own copy of the model's state, then one batched step per byte
serves every stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tracetorch as tt

from .architectures import register
from .mixin import HubMixin

__all__ = ["LSTMByteLM", "MambaByteLM", "RMSNorm", "SpikingByteLM", "check_sampling", "sample_next"]

VOCAB = 256


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last axis (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def check_sampling(temperature: float, top_k: int) -> None:
    """``ValueError`` unless ``temperature`` is a finite number >= 0 and ``top_k`` an integer >= 0."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0: no truncation), got {top_k!r}")


def sample_next(
    logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None
) -> Tensor:
    """One byte per row of ``logits`` ``[batch, 256]``: greedy at ``temperature == 0``, else sampled from
    ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely bytes (``0``: all)."""
    check_sampling(temperature, top_k)
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _ByteLM(HubMixin, tt.Model):
    """Shared byte-LM behaviour: input checks, ``stream_bytes``."""

    PRIME_CHUNK = 1024  # bytes of prompt per scan: ~25 MB of activations, and faster than one long scan

    def _check_bytes(self, x: Tensor, ndim: int, what: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != ndim or x.dtype not in (torch.int64, torch.int32, torch.uint8):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}.{what} takes integer bytes of {ndim} axes, got {got}")

    def _one_stream_state(self) -> None:
        """Refuse a hidden state that holds more than one stream (a snapshot saved with a batch)."""
        held = {tuple(v.shape)[:1] for v in tt.get_states(self).values() if v is not None}
        if held and held != {(1,)}:
            raise ValueError(
                f"the hidden state holds a batch of {sorted(held)[0][0]} streams (a snapshot saved with that batch "
                "size?); this continues one state per stream: load a batch-1 snapshot or call zero_states()"
            )

    def _prime(self, prompt: bytes) -> Tensor:
        """Continue the state with ``prompt`` (empty: a newline), in chunks of :attr:`PRIME_CHUNK` bytes (the same
        numbers as one scan, bit for bit); the next-byte logits ``[1, 256]``."""
        device = next(self.parameters()).device
        prompt = bytes(prompt) or b"\n"
        for start in range(0, len(prompt), self.PRIME_CHUNK):
            chunk = torch.frombuffer(bytearray(prompt[start : start + self.PRIME_CHUNK]), dtype=torch.uint8)
            logits = self.scan(chunk.to(device=device, dtype=torch.long).unsqueeze(-1))[-1]  # [T, 1] -> [1, 256]
        return logits

    @staticmethod
    def _check_max_bytes(max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")

    @torch.no_grad()
    def stream_bytes(
        self,
        prompt: bytes,
        *,
        max_bytes: int = 256,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> Iterator[bytes]:
        """Continue the hidden state with ``prompt`` and yield ``max_bytes`` sampled bytes, one at a time.

        The state continues from wherever the model is (zero, a loaded snapshot, or an earlier stream); with an
        empty prompt and no state, the first byte is conditioned on a newline. Batch size 1. The prompt is read
        in chunks of :attr:`PRIME_CHUNK` bytes (the same numbers as one scan, bit for bit), so its memory is
        bounded however long it is.
        """
        self._check_max_bytes(max_bytes)
        check_sampling(temperature, top_k)
        self._one_stream_state()
        logits = self._prime(prompt)
        for _ in range(max_bytes):
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
            yield bytes([int(nxt)])
            logits = self(nxt)

    @torch.no_grad()
    def stream_batch(
        self,
        prompts: Sequence[bytes],
        *,
        max_bytes: int = 256,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> Iterator[list[bytes]]:
        """Continue ``len(prompts)`` streams side by side; yield, ``max_bytes`` times, one sampled byte per stream.

        Every prompt primes its own copy of the model's current state (zero or a loaded batch-1 snapshot) as
        :meth:`stream_bytes` would; then one batched step per byte serves all streams, which costs little more
        than one stream's step (the weights are read once per step for the whole batch). Stream ``i`` runs the same
        model as it would alone (up to the rounding of batched matrix products) and draws its samples from the
        shared ``generator`` in batch order. Afterwards the model's state holds the whole batch (``zero_states()``
        or ``load_states`` to go back to one stream).
        """
        self._check_max_bytes(max_bytes)
        check_sampling(temperature, top_k)
        prompts = [bytes(p) for p in prompts]
        if not prompts:
            raise ValueError("stream_batch needs at least one prompt")
        self._one_stream_state()
        start = {k: None if v is None else v.clone() for k, v in tt.get_states(self).items()}
        primed, logits = [], []
        for prompt in prompts:
            tt.load_states(self, {k: None if v is None else v.clone() for k, v in start.items()})
            logits.append(self._prime(prompt))
            primed.append(tt.get_states(self))
        tt.load_states(self, {k: torch.cat([s[k] for s in primed]) for k in start})
        batch = torch.cat(logits)
        for _ in range(max_bytes):
            nxt = sample_next(batch, temperature=temperature, top_k=top_k, generator=generator)
            yield [bytes([b]) for b in nxt.tolist()]
            batch = self(nxt)


class _ResidualByteLM(_ByteLM):
    """``embed -> blocks -> norm -> head``: the step and sequence paths of byte LMs built from residual blocks
    (subclasses set ``embed``, ``blocks``, ``norm`` and ``head``)."""

    def forward(self, x: Tensor) -> Tensor:
        """One step: bytes ``[batch]`` -> next-byte logits ``[batch, 256]``."""
        self._check_bytes(x, 1, "forward")
        h = self.embed(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h))

    def scan(self, x_seq: Tensor) -> Tensor:
        """Whole sequence: bytes ``[T, batch]`` -> logits ``[T, batch, 256]`` (same numbers as stepping)."""
        self._check_bytes(x_seq, 2, "scan")
        h = self.embed(x_seq)
        for b in self.blocks:
            h = b.scan(h)
        return self.head(self.norm(h))


class _MambaBlock(tt.Model):
    """Pre-norm residual block ``x + Mamba(RMSNorm(x))``."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = tt.ssm.Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))

    def scan(self, x_seq: Tensor) -> Tensor:
        return x_seq + self.mixer.scan(self.norm(x_seq))


@register("bytelm-mamba", family="ssm")
class MambaByteLM(_ResidualByteLM):
    """Byte LM from Mamba blocks: embedding, ``n_layers`` x ``x + Mamba(RMSNorm(x))``, RMSNorm, linear head.

    Args:
        d_model: width. n_layers: blocks. d_state, d_conv, expand: of each ``tt.ssm.Mamba``.
    """

    def __init__(self, d_model: int = 256, n_layers: int = 4, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.blocks = nn.ModuleList(_MambaBlock(d_model, d_state, d_conv, expand) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)
        nn.init.normal_(self.embed.weight, std=0.1)
        for b in self.blocks:  # GPT-2/Mamba style: shrink each residual branch's output with depth
            nn.init.normal_(b.mixer.out_proj.weight, std=0.02 / (2 * n_layers) ** 0.5)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)


@register("bytelm-lstm", family="rnn")
class LSTMByteLM(_ByteLM):
    """Byte LM from LSTMs (the classic baseline): embedding, ``n_layers`` x ``tt.rnn.LSTM``, linear head."""

    def __init__(self, hidden: int = 256, n_layers: int = 2, embed: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.layers = nn.ModuleList(tt.rnn.LSTM(embed if i == 0 else hidden, hidden) for i in range(n_layers))
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: Tensor) -> Tensor:
        self._check_bytes(x, 1, "forward")
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)

    def scan(self, x_seq: Tensor) -> Tensor:
        self._check_bytes(x_seq, 2, "scan")
        h = self.embed(x_seq)
        for layer in self.layers:
            h = layer.scan(h)
        return self.head(h)


def log_uniform_decays(n: int, tau_range: tuple[float, float], gen: torch.Generator) -> Tensor:
    """``n`` decays ``beta = 1 - 1 / tau`` with time constants ``tau`` log-uniform in ``tau_range`` (steps)."""
    lo, hi = (math.log(t) for t in tau_range)
    tau = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))
    return (1.0 - 1.0 / tau).float()


class _SpikingBlock(tt.Model):
    """Pre-norm residual block ``x + W_out LI(spikes(W_in RMSNorm(x)))``.

    ``spikes`` is a firing layer of ``tt.snn`` (``neuron``, e.g. ``"LIB"``: ``m_t = beta m_{t-1} + u_t``, a spike
    ``s_t = H(m_t - theta)`` resets ``m`` by ``theta``) with per-neuron membrane time constants log-uniform in
    ``tau_range``; with ``synapse`` the spikes pass through a leaky integrator (``snn.LI``, a post-synaptic trace
    ``c_t = alpha c_{t-1} + s_t``, its own time constants) before ``W_out``, so the residual stream sees a filtered
    spike train; without, it sees the binary spikes themselves.
    """

    def __init__(
        self,
        d_model: int,
        hidden: int,
        neuron: str,
        tau_range: tuple[float, float],
        synapse: bool,
        gen: torch.Generator,
    ) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.w_in = nn.Linear(d_model, hidden)
        self.neuron = getattr(tt.snn, neuron)(hidden, log_uniform_decays(hidden, tau_range, gen))
        self.trace = tt.snn.LI(hidden, log_uniform_decays(hidden, tau_range, gen)) if synapse else None
        self.w_out = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        s = self.neuron(self.w_in(self.norm(x)))
        return x + self.w_out(self.trace(s) if self.trace is not None else s)

    def scan(self, x_seq: Tensor) -> Tensor:
        s = self.neuron.scan(self.w_in(self.norm(x_seq)))
        return x_seq + self.w_out(self.trace.scan(s) if self.trace is not None else s)


@register("bytelm-snn", family="snn")
class SpikingByteLM(_ResidualByteLM):
    """Byte LM from spiking neurons: embedding, ``n_layers`` x ``_SpikingBlock``, RMSNorm, linear head.

    Args:
        d_model: width of the residual stream. hidden: spiking neurons per block. n_layers: blocks.
        neuron: a firing type of ``tt.snn`` whose first parameter is its decay (``"LIB"``, ``"RLIB"``, ...).
        tau_range: membrane (and trace) time constants, log-uniform per neuron, in steps (bytes).
        synapse: spikes reach ``W_out`` through a leaky-integrator trace (``True``) or as they are.
        seed: generator seed of the time constants (the weights are then trained or loaded).
    """

    def __init__(
        self,
        d_model: int = 256,
        hidden: int = 768,
        n_layers: int = 4,
        neuron: str = "LIB",
        tau_range: list[float] = (2.0, 256.0),
        synapse: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, d_model)
        self.blocks = nn.ModuleList(
            _SpikingBlock(d_model, hidden, neuron, tuple(tau_range), synapse, gen) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)
        nn.init.normal_(self.embed.weight, std=0.1)
        for b in self.blocks:  # shrink each residual branch's output with depth, as for the Mamba model
            nn.init.normal_(b.w_out.weight, std=0.02 / (2 * n_layers) ** 0.5)
            nn.init.zeros_(b.w_out.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
