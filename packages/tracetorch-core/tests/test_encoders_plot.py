"""Encoders (rate, latency, delta) and the optional plots."""

from __future__ import annotations

import pytest
import torch

import tracetorch as tt
from tracetorch import encoders


def test_rate_matches_probabilities_and_is_seeded():
    x = torch.tensor([0.0, 0.25, 0.9, 1.0, 1.7])
    g = torch.Generator().manual_seed(0)
    s = encoders.rate(x, 4000, generator=g)
    assert s.shape == (4000, 5) and set(s.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s.mean(0), x.clamp(0, 1), atol=0.03, rtol=0)
    again = encoders.rate(x, 4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)


def test_latency_one_spike_earlier_for_larger_values():
    x = torch.tensor([1.0, 0.5, 0.02, 0.005])
    s = encoders.latency(x, 11)
    assert s.sum(0).tolist() == [1.0, 1.0, 1.0, 0.0]  # below threshold: silent
    assert s.argmax(0)[:3].tolist() == [0, 5, 10]
    with pytest.raises(ValueError):
        encoders.latency(x, 0)


def test_delta_events_and_streaming_equivalence():
    x = torch.tensor([[0.0], [0.05], [0.12], [0.13], [0.0], [-0.2]])
    s = encoders.delta(x, threshold=0.1)
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, -1.0, -1.0]
    assert encoders.delta(x, threshold=0.1, off_spikes=False).flatten().tolist() == [0, 0, 1, 0, 0, 0]
    enc = encoders.Delta(0.1)
    first = torch.stack([enc(v) for v in x[:3].unbind(0)])
    snap = enc.save_states()
    enc.zero_states()
    enc.load_states(snap)
    rest = torch.stack([enc(v) for v in x[3:].unbind(0)])
    assert torch.equal(torch.cat([first, rest]), s)
    assert list(tt.get_states(tt.Model(enc))) == ["0.ref"]


def test_plots_draw_without_showing(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    from tracetorch import plot, snn

    layer = snn.LIT(6, pos_threshold=0.5, neg_threshold=0.5)
    spikes = layer.scan(torch.randn(50, 6))
    ax = plot.raster(spikes, title="LIT spikes")
    assert len(ax.collections) == 2  # positive and negative events
    ax2 = plot.traces(snn.LI(3).scan(torch.randn(50, 3)), threshold=1.0)
    assert len(ax2.lines) == 4
    ax.figure.savefig(tmp_path / "raster.png")
    assert (tmp_path / "raster.png").stat().st_size > 1000
    plt.close("all")
    with pytest.raises(ValueError, match="time first"):
        plot.raster(torch.zeros(2, 3, 4))
