"""Saving and loading hidden states: bit-identical resume, strictness, all-or-nothing, bad files."""

from __future__ import annotations

import os
import stat

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


def test_a_complex_tensor_for_a_real_state_is_refused(tmp_path):
    model = make()
    model(torch.randn(2, 3))
    states = model.save_states()
    path = tmp_path / "complex.safetensors"
    for source in ({**states, "3.mem": states["3.mem"].to(torch.complex64)}, path):
        if source is path:  # the same through a file (an empty model: the reference is the layer's parameters)
            tt.write_states(path, {**states, "5.mem": torch.zeros(2, 2, dtype=torch.complex64)})
            model.zero_states()
        before = {k: None if v is None else v.clone() for k, v in model.get_states().items()}
        with pytest.raises(tt.StateLoadError, match=r"complex tensor .* for a real state"):
            model.load_states(source)
        for k, v in model.get_states().items():  # all or nothing
            assert (v is None and before[k] is None) or torch.equal(v, before[k])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("format_version", "one", "format_version 'one' is not a number"),
        ("format_version", "1.5", "is not a number"),
        ("format_version", "0", "not a valid version"),
        ("none_states", "[not json", "none_states is not JSON"),
        ("none_states", '{"1.mem": null}', "must be a JSON list of state names"),
        ("none_states", "[1, 2]", "must be a JSON list of state names"),
        ("none_states", '["3.mem"]', "names states the file also holds: 3.mem"),
    ],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_bad_metadata_is_a_state_load_error(tmp_path, field, value, message, suffix):
    """Damaged metadata raises StateLoadError (was ValueError, TypeError or JSONDecodeError, or, for a
    none_states entry naming a stored key, a silent drop of that state)."""
    from safetensors.torch import save_file

    model = make()
    model(torch.randn(2, 3))
    good = tmp_path / f"good{suffix}"
    model.save_states(good)
    states, meta = tt.read_states(good)
    tensors = {k: v for k, v in states.items() if v is not None}
    meta[field] = value
    path = tmp_path / f"bad{suffix}"
    if suffix == ".safetensors":
        save_file(tensors, path, metadata=meta)
    else:
        torch.save({"format": "tracetorch.states", "states": tensors, "metadata": meta}, path)
    with pytest.raises(tt.StateLoadError, match=message):
        tt.read_states(path)
    with pytest.raises(tt.StateLoadError, match=message):
        make().load_states(path)


def test_values_that_cannot_be_written_are_state_save_errors(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(b"before")
    for bad in (torch.empty(2, 8, device="meta"), torch.eye(3).to_sparse(), [1.0, 2.0]):
        with pytest.raises(tt.StateSaveError, match=r"cannot write states .*\n  1\.mem: "):
            tt.write_states(path, {"1.mem": bad, "3.mem": torch.zeros(2, 8)})
    model = make()
    model[1].mem = torch.empty(2, 8, device="meta")  # a state on the meta device, in a model's own snapshot
    with pytest.raises(tt.StateSaveError, match="meta device"):
        model.save_states(path)
    assert path.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_files_get_the_users_umask_mode(tmp_path, suffix):
    """A state file is created like any new file of the user (0o666 less the umask: 0644 under umask 022),
    not with the 0600 of a temporary file; the write stays atomic."""
    model = make()
    model(torch.randn(2, 3))
    old = os.umask(0o022)
    try:
        model.save_states(tmp_path / f"a{suffix}")
        os.umask(0o077)
        model.save_states(tmp_path / f"b{suffix}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / f"a{suffix}").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / f"b{suffix}").stat().st_mode) == 0o600
    fresh = make()
    fresh.load_states(tmp_path / f"a{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a{suffix}", f"b{suffix}"]
