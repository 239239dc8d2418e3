"""Streaming keyword spotting from raw audio: ``snn-keyword-spotter``.

The model takes audio one hop at a time (``[B, hop]`` samples per step) and returns per-frame class logits; every
piece of memory it needs is a hidden state, so a microphone stream runs in constant memory and a snapshot taken
after some background noise starts a stream warm:

* :class:`StreamingLogMel` keeps the last ``n_fft - hop`` samples (state ``tail``) and a running loudness
  ``level`` (an exponential moving average of the frame's mean mel power, decay ``level_decay``; the first frame
  of a fresh stream sets it; never below ``level_floor``, a microphone's noise floor, so digital silence does
  not make the next sound look infinitely loud). Frame features, in ``[0, ~1.5]``::

      f_t = (max(dB(mel_t), dB(level_t) - top_db) - dB(level_t)) / top_db + 1,   dB(p) = 10 log10(max(p, 1e-10))

  so a stream is normalised by its own recent loudness instead of by a clip's maximum (which needs the future).
* :class:`SpikingBlock` ``x + Linear(DSRLITS(tanh x))``: the residual spiking block of the original traceTorch
  audio model (dual ternary spikes with a recurrent trace and a synaptic trace).
* :class:`KeywordSpotter` ``StreamingLogMel -> Linear -> SpikingBlock x layers -> Linear -> LI``; the clip's
  class is the argmax of the per-frame logits averaged over the clip's frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import tracetorch as tt
from tracetorch import snn

from .architectures import register
from .mixin import HubMixin

__all__ = ["FrameClassifier", "KeywordSpotter", "SpikingBlock", "StreamingLogMel"]


class StreamingLogMel(tt.Model):
    """Raw audio ``[B, hop]`` per step -> normalised log-mel frame ``[B, n_mels]`` (see the module docstring).

    The mel filterbank is a buffer (``mel``, ``[n_mels, n_fft // 2 + 1]``) saved with the weights, so the
    features do not depend on the library that computed it. States: ``tail`` ``[B, n_fft - hop]``, ``level``
    ``[B, 1]``. ``scan`` computes every frame of ``[T, B, hop]`` at once, then the level recurrence step by step.
    """

    def __init__(
        self, n_fft: int, hop: int, n_mels: int, top_db: float, level_decay: float, level_floor: float = 0.0
    ) -> None:
        super().__init__()
        if not (0 < hop <= n_fft) or n_mels < 1 or top_db <= 0 or not (0.0 <= level_decay < 1.0):
            raise ValueError(f"need 0 < hop <= n_fft, n_mels >= 1, top_db > 0, 0 <= level_decay < 1; got "
                             f"{n_fft}, {hop}, {n_mels}, {top_db}, {level_decay}")  # fmt: skip
        self.n_fft, self.hop, self.top_db, self.level_decay = n_fft, hop, float(top_db), float(level_decay)
        self.level_floor = float(level_floor)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel", torch.zeros(n_mels, n_fft // 2 + 1))
        self.define_state("tail")
        self.define_state("level")

    def _check(self, x: Tensor, ndim: int) -> None:
        if not isinstance(x, Tensor) or x.ndim != ndim or x.shape[-1] != self.hop or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            lead = "T, B" if ndim == 3 else "B"
            raise ValueError(f"expected float audio [{lead}, {self.hop}] (one hop of samples per step), got {got}")
        tail = self.tail
        if tail is not None and (tail.shape[0] != x.shape[-2] or tail.dtype != x.dtype):
            raise tt.StateError(
                f"this stream holds {tail.shape[0]} {tail.dtype} channels, the input has {x.shape[-2]} "
                f"{x.dtype}: call zero_states() to start a new stream"
            )

    def _power(self, frames: Tensor) -> Tensor:
        """Mel power ``[..., n_mels]`` of windowed frames ``[..., n_fft]``."""
        spec = torch.fft.rfft(frames * self.window)
        return (spec.real**2 + spec.imag**2) @ self.mel.t()

    def _normalise(self, mel: Tensor, level: Tensor) -> Tensor:
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        ref = 10.0 * torch.log10(level.clamp_min(1e-10))
        return (torch.maximum(db, ref - self.top_db) - ref) / self.top_db + 1.0

    def _next_level(self, mel: Tensor, level: Tensor | None) -> Tensor:
        energy = mel.mean(-1, keepdim=True)
        level = energy if level is None else self.level_decay * level + (1.0 - self.level_decay) * energy
        return level.clamp_min(self.level_floor)

    def forward(self, x: Tensor) -> Tensor:
        """One hop of samples ``[B, hop]`` -> one feature frame ``[B, n_mels]``."""
        self._check(x, 2)
        tail = self.tail if self.tail is not None else x.new_zeros(x.shape[0], self.n_fft - self.hop)
        frame = torch.cat([tail, x], -1)
        mel = self._power(frame)
        self.level = self._next_level(mel, self.level)
        self.tail = frame[:, self.hop :].clone()
        return self._normalise(mel, self.level)

    def scan(self, x_seq: Tensor) -> Tensor:
        """``[T, B, hop]`` -> ``[T, B, n_mels]``, the same numbers as ``T`` calls of ``forward``."""
        self._check(x_seq, 3)
        t, b, _ = x_seq.shape
        tail = self.tail if self.tail is not None else x_seq.new_zeros(b, self.n_fft - self.hop)
        signal = torch.cat([tail, x_seq.transpose(0, 1).reshape(b, t * self.hop)], -1)
        frames = signal.unfold(-1, self.n_fft, self.hop).transpose(0, 1)  # [T, B, n_fft]
        mel = self._power(frames)
        level, levels = self.level, []
        for m in mel.unbind(0):
            level = self._next_level(m, level)
            levels.append(level)
        self.level = level
        self.tail = signal[:, signal.shape[-1] - (self.n_fft - self.hop) :].clone()
        return self._normalise(mel, torch.stack(levels))


class SpikingBlock(tt.Model):
    """``x + Linear(DSRLITS(tanh x))`` (the original traceTorch audio model's block). ``[*, H]`` per step.

    Decays and thresholds are drawn per neuron from ``gen``: decays uniform in ``decay_range``, thresholds in
    ``[0.1, 1]``, spike scales in ``[0, 1]``, recurrent weights ``N(0, 0.1^2)``; the projection starts near zero.
    """

    def __init__(self, hidden: int, decay_range: tuple[float, float], gen: torch.Generator | None = None) -> None:
        super().__init__()
        gen = gen if gen is not None else torch.Generator().manual_seed(0)

        def u(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(hidden, generator=gen)

        lo, hi = decay_range
        self.neuron = snn.DSRLITS(
            hidden,
            pos_alpha=u(lo, hi), neg_alpha=u(lo, hi), pos_beta=u(lo, hi), neg_beta=u(lo, hi),
            pos_gamma=u(lo, hi), neg_gamma=u(lo, hi),
            pos_threshold=u(0.1, 1.0), neg_threshold=u(0.1, 1.0),
            pos_scale=u(0.0, 1.0), neg_scale=u(0.0, 1.0),
            pos_rec_weight=0.1 * torch.randn(hidden, generator=gen),
            neg_rec_weight=0.1 * torch.randn(hidden, generator=gen),
        )  # fmt: skip
        self.proj = nn.Linear(hidden, hidden)
        nn.init.normal_(self.proj.weight, std=0.01, generator=gen)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(self.neuron(torch.tanh(x)))

    def scan(self, x_seq: Tensor) -> Tensor:
        return x_seq + self.proj(self.neuron.scan(torch.tanh(x_seq)))


class FrameClassifier(tt.Model):
    """``encoder -> body -> head``: per step ``[B, features] -> [B, classes]`` per-frame logits; ``scan`` takes
    ``[T, B, features]`` and returns ``[T, B, classes]`` (same numbers as stepping, frame by frame)."""

    def __init__(self, encoder: nn.Module, body: list[nn.Module], head: list[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.body = nn.ModuleList(body)
        self.head = tt.Model(*head)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)
        for b in self.body:
            h = b(h)
        return self.head(h)

    def scan(self, x_seq: Tensor) -> Tensor:
        h = tt.scan(self.encoder, x_seq)
        for b in self.body:
            h = tt.scan(b, h)
        return self.head.scan(h)


@register("snn-keyword-spotter", family="snn")
class KeywordSpotter(HubMixin, tt.Model):
    """Spiking keyword spotter on raw audio (see the module docstring).

    Args:
        rate: sample rate in Hz (the features' frame rate is ``rate / hop``).
        n_fft, hop, n_mels, top_db, level_decay, level_floor: the streaming front end (:class:`StreamingLogMel`).
        hidden, layers: width and number of :class:`SpikingBlock`.
        decay_range: initial decays of the blocks' traces, uniform per neuron.
        readout_beta: decay of the LI readout.
        labels: the class names (``len(labels)`` classes).
        seed: the generator seed of the blocks' initial parameters (weights are then loaded or trained).

    Per step ``[B, hop]`` samples -> ``[B, classes]`` logits; ``scan`` ``[T, B, hop]`` -> ``[T, B, classes]``.
    """

    def __init__(
        self,
        rate: int = 8000,
        n_fft: int = 256,
        hop: int = 128,
        n_mels: int = 40,
        top_db: float = 80.0,
        level_decay: float = 0.97,
        level_floor: float = 0.0,
        hidden: int = 128,
        layers: int = 3,
        decay_range: list[float] = (0.5, 0.989),
        readout_beta: float = 0.9,
        labels: list[str] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.rate, self.labels = int(rate), list(labels)
        gen = torch.Generator().manual_seed(seed)
        self.front = StreamingLogMel(n_fft, hop, n_mels, top_db, level_decay, level_floor)
        head = nn.Linear(hidden, len(self.labels))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        blocks = [SpikingBlock(hidden, tuple(decay_range), gen) for _ in range(layers)]
        self.net = FrameClassifier(nn.Linear(n_mels, hidden), blocks, [head, snn.LI(len(self.labels), readout_beta)])

    @property
    def hop(self) -> int:
        """The number of audio samples per frame (feed the model ``[B, hop]`` at a time)."""
        return self.front.hop

    def forward(self, x: Tensor) -> Tensor:
        """One hop of audio ``[B, hop]`` -> per-frame logits ``[B, classes]``."""
        return self.net(self.front(x))

    def scan(self, x_seq: Tensor) -> Tensor:
        """Hops ``[T, B, hop]`` -> per-frame logits ``[T, B, classes]`` (same numbers as stepping)."""
        return self.net.scan(self.front.scan(x_seq))

    def frames(self, audio: Tensor) -> Tensor:
        """Audio ``[B, L]`` -> hops ``[ceil(L / hop), B, hop]``; a last partial hop is padded with zeros."""
        if not isinstance(audio, Tensor) or audio.ndim != 2 or not audio.is_floating_point():
            got = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise ValueError(f"expected float audio [B, L], got {got}")
        audio = torch.nn.functional.pad(audio, (0, -audio.shape[1] % self.hop))
        return audio.reshape(audio.shape[0], -1, self.hop).transpose(0, 1)

    def classify(self, audio: Tensor) -> Tensor:
        """Clip logits ``[B, classes]``: the per-frame logits of ``audio`` ``[B, L]`` averaged over its frames,
        continuing from the current states (load the ``noise`` snapshot, or warm up on background first)."""
        return self.scan(self.frames(audio)).mean(0)
