"""Image classifiers from spiking layers: ``snn-conv-classifier``.

A static image is shown to the network for ``steps`` time steps as a constant input current ("direct"
encoding); the class logits are the readout averaged over those steps::

    logits = mean_t  Linear(LIB(Linear(flatten(pool(LIB(BN(conv(... x ...))))))))_t      x: [B, C, H, W]

``forward`` is one time step (``[B, C, H, W] -> [B, classes]``) and ``scan`` a whole sequence
(``[T, B, C, H, W] -> [T, B, classes]``, same numbers); ``classify`` runs the standard ``steps`` on a batch of
images in ``[0, 1]`` from fresh (or the given) hidden states and returns the averaged logits.
"""

from __future__ import annotations

from torch import Tensor, nn

import tracetorch as tt
from tracetorch import snn
from tracetorch.scan import scan_chain

from .architectures import register
from .mixin import HubMixin

__all__ = ["SpikingConvClassifier", "Standardize"]


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed scalars (not learned, not in ``state_dict``)."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


@register("snn-conv-classifier", family="snn")
class SpikingConvClassifier(HubMixin, tt.Model):
    """Convolutional SNN classifier: ``[Conv3x3 -> BatchNorm -> LIB -> MaxPool2] x len(channels) -> Flatten ->
    Linear(hidden) -> LIB -> Linear(classes)``, inputs standardised by ``(x - mean) / std`` first.

    Args:
        image_shape: ``[C, H, W]`` of one image (H and W divisible by ``2 ** len(channels)``).
        channels: output channels of each conv stage.
        hidden: width of the spiking fully connected layer.
        classes: number of classes.
        steps: time steps each image is shown for (``classify``).
        beta: initial membrane decay of every LIB layer (learned per neuron/channel).
        mean, std: input standardisation (the training set's pixel mean and standard deviation).
        surrogate: spike function of every LIB layer (see ``tracetorch.functional.make_spike_fn``).
    """

    def __init__(
        self,
        image_shape: list[int],
        channels: list[int],
        hidden: int,
        classes: int = 10,
        steps: int = 4,
        beta: float = 0.5,
        mean: float = 0.0,
        std: float = 1.0,
        surrogate: str = "atan",
    ) -> None:
        c, h, w = (int(v) for v in image_shape)
        scale = 2 ** len(channels)
        if not channels or h % scale or w % scale:
            raise ValueError(f"image_shape {image_shape}: H and W must be divisible by 2**len(channels) = {scale}")
        if steps < 1 or hidden < 1 or classes < 2 or std <= 0:
            raise ValueError(
                f"need steps >= 1, hidden >= 1, classes >= 2, std > 0; got {steps}, {hidden}, {classes}, {std}"
            )
        layers: list[nn.Module] = [Standardize(mean, std)]
        for c_out in channels:
            layers += [
                nn.Conv2d(c, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                snn.LIB(c_out, beta, dim=-3, spike_fn=surrogate),
                nn.MaxPool2d(2),
            ]
            c = c_out
        flat = c * (h // scale) * (w // scale)
        layers += [nn.Flatten(), nn.Linear(flat, hidden), snn.LIB(hidden, beta, spike_fn=surrogate)]
        layers += [nn.Linear(hidden, classes)]
        super().__init__(*layers)
        self.image_shape = [int(v) for v in image_shape]
        self.steps = int(steps)

    def _check(self, x: Tensor, lead: int) -> None:
        want = lead + 3
        if not isinstance(x, Tensor) or x.ndim != want or list(x.shape[-3:]) != self.image_shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected images [{'T, ' * (lead - 1)}B, {', '.join(map(str, self.image_shape))}], got {got}"
            )

    def forward(self, x: Tensor) -> Tensor:
        """One time step: images ``[B, C, H, W]`` in ``[0, 1]`` -> logits ``[B, classes]``."""
        self._check(x, 1)
        return super().forward(x)

    def scan(self, x_seq: Tensor) -> Tensor:
        """A sequence of images ``[T, B, C, H, W]`` -> logits ``[T, B, classes]`` (same numbers as stepping)."""
        self._check(x_seq, 2)
        return scan_chain(self._modules.values(), x_seq)  # layer by layer; convs see all steps at once

    def classify(self, images: Tensor, *, fresh: bool = True) -> Tensor:
        """Averaged logits ``[B, classes]`` for ``images`` ``[B, C, H, W]`` shown for ``self.steps`` steps.

        ``fresh`` (default) zeroes the hidden states first, as in training and evaluation; ``False`` continues
        from the states the model holds (e.g. a loaded snapshot)."""
        self._check(images, 1)
        if fresh:
            self.zero_states()
        return self.scan(images.unsqueeze(0).expand(self.steps, *images.shape)).mean(0)
