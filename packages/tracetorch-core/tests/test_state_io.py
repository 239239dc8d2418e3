"""Saving and loading hidden states: bit-identical resume, strictness, all-or-nothing, bad files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import snn


def make():
    torch.manual_seed(0)
    return tt.Model(nn.Linear(3, 8), snn.LIB(8), nn.Linear(8, 8), snn.LIB(8, dim=-1), nn.Linear(8, 2), snn.LI(2))


def stream(model, x):
    with torch.no_grad():
        return torch.stack([model(xt) for xt in x.unbind(0)])


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_continue_is_bit_identical(tmp_path, suffix):
    x = torch.randn(60, 4, 3) * 2
    model = make()
    full = stream(model, x)
    model.zero_states()
    first = stream(model, x[:25])
    path = tmp_path / f"states{suffix}"
    model.save_states(path, metadata={"steps_consumed": "25"})
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    result = fresh.load_states(path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert result.metadata["steps_consumed"] == "25"
    second = stream(fresh, x[25:])
    assert torch.equal(torch.cat([first, second]), full)
    assert sum(int(s.sum() > 0) for s in first.unbind(0)) > 0  # the stream did something


def test_save_returns_detached_copies():
    model = make()
    model(torch.randn(2, 3, requires_grad=True))
    snap = model.save_states()
    live = model.get_states()
    for k, v in snap.items():
        assert v.grad_fn is None and torch.equal(v, live[k]) and v.data_ptr() != live[k].data_ptr()


def test_none_states_round_trip_strictly(tmp_path):
    model = make()
    model(torch.randn(2, 3))
    model[5].zero_states()  # one state not created
    path = tmp_path / "s.safetensors"
    model.save_states(path)
    other = make()
    other(torch.randn(2, 3))
    other.load_states(path)  # strict, and the missing-at-save state is known to be None
    assert other[5].mem is None and other[1].mem is not None


def test_missing_and_unexpected_keys_are_errors(tmp_path):
    model = make()
    model(torch.randn(2, 3))
    states = model.save_states()
    bad = dict(states)
    bad.pop("1.mem")
    bad["1.mme"] = states["1.mem"]
    with pytest.raises(tt.StateLoadError) as err:
        model.load_states(bad)
    msg = str(err.value)
    assert "missing (1): 1.mem" in msg and "unexpected: 1.mme" in msg and "did you mean '1.mem'" in msg
    result = model.load_states(bad, strict=False)
    assert result.missing_keys == ["1.mem"] and result.unexpected_keys == ["1.mme"]


def test_wrong_shapes_are_errors_and_nothing_changes():
    model = make()
    model(torch.randn(2, 3))
    before = {k: v.clone() for k, v in model.get_states().items()}
    states = {k: torch.ones_like(v) for k, v in before.items()}
    states["3.mem"] = torch.ones(2, 7)  # wrong feature size
    with pytest.raises(tt.StateLoadError, match=r"3\.mem: shape \(2, 7\) does not fit LIB"):
        model.load_states(states)
    for k, v in model.get_states().items():
        assert torch.equal(v, before[k]), "a failed load must not change any state"
    states["3.mem"] = torch.ones(2, 8, dtype=torch.long)
    with pytest.raises(tt.StateLoadError, match="floating point"):
        model.load_states(states)


def test_loaded_states_take_the_layers_device_and_dtype():
    model = make()
    model(torch.randn(2, 3))
    snap = model.save_states()
    model.double()
    model.load_states(snap)
    assert all(v.dtype == torch.float64 for v in model.get_states().values())
    model(torch.randn(2, 3, dtype=torch.float64))


def test_corrupted_and_foreign_files(tmp_path):
    model = make()
    model(torch.randn(2, 3))
    good = tmp_path / "good.safetensors"
    model.save_states(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(tt.StateLoadError, match="could not read state file"):
        model.load_states(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(tt.StateLoadError):
        model.load_states(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(tt.StateLoadError, match="not a tracetorch state file"):
        model.load_states(foreign)
    with pytest.raises(FileNotFoundError):
        model.load_states(tmp_path / "missing.safetensors")


def test_pt_files_are_loaded_without_unpickling_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "tracetorch.states", "states": {"1.mem": Evil()}, "metadata": {}}, path)
    with pytest.raises(tt.StateLoadError, match="could not read"):
        make().load_states(path)


def test_newer_format_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    save_file({"1.mem": torch.zeros(2, 8)}, path, metadata={"format": "tracetorch.states", "format_version": "99"})
    with pytest.raises(tt.StateLoadError, match="upgrade tracetorch-core"):
        make().load_states(path)


def test_writes_are_atomic_and_validated(tmp_path):
    model = make()
    model(torch.randn(2, 3))
    path = tmp_path / "s.safetensors"
    model.save_states(path)
    original = path.read_bytes()
    with pytest.raises(ValueError, match="reserved"):
        model.save_states(path, metadata={"format": "x"})
    with pytest.raises(TypeError, match="str to str"):
        model.save_states(path, metadata={"steps": 3})
    with pytest.raises(ValueError, match=r"\.safetensors or \.pt"):
        model.save_states(tmp_path / "s.bin")
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temporary files left behind
