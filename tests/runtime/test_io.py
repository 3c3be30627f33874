"""Outputs are written atomically: a failed or interrupted write leaves the old file intact
and no temporary file behind; a complete write replaces it."""
from __future__ import annotations

import numpy as np
import pytest

from archc.dsl.errors import ArchError
from archc.runtime.io import save_outputs, write_atomic


def _failing_save(exc):
    def save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial bytes")   # some of the file, then the failure
        raise exc
    return save


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, exc):
    out = tmp_path / "out.npy"
    np.save(out, np.arange(4))
    before = out.read_bytes()
    monkeypatch.setattr(np, "save", _failing_save(exc))
    # a disk error is the user's one-line error (exit 2); an interrupt stays an interrupt
    with pytest.raises(ArchError if isinstance(exc, OSError) else type(exc)):
        save_outputs(out, {"y": np.ones(3)})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "save", _failing_save(OSError(5, "I/O error")))
    with pytest.raises(ArchError, match="I/O error"):
        save_outputs(tmp_path / "new.npy", {"y": np.ones(3)})
    assert list(tmp_path.iterdir()) == []


def test_complete_write_replaces(tmp_path):
    out = tmp_path / "out.npy"
    np.save(out, np.arange(4))
    save_outputs(out, {"y": np.ones(3)})
    np.testing.assert_array_equal(np.load(out), np.ones(3))
    save_outputs(tmp_path / "all.npz", {"a": np.ones(2), "b": np.zeros(1)})
    with np.load(tmp_path / "all.npz") as z:
        assert sorted(z.files) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.npz", "out.npy"]


def test_output_errors(tmp_path):
    with pytest.raises(ArchError, match="is a directory"):
        write_atomic(tmp_path, lambda f: None)
    with pytest.raises(ArchError) as e:
        save_outputs(tmp_path / "one.npy", {"a": np.ones(1), "b": np.ones(1)})
    assert e.value.render() == ("error: the model has 2 outputs (a, b); "
                                f"{tmp_path / 'one.npy'} can hold only one\n"
                                "hint: write them all with --output out.npz")


def test_is_whole_tells_a_complete_output_from_a_torn_one(tmp_path):
    from archc.runtime.io import is_whole, save_outputs
    save_outputs(tmp_path / "a.npy", {"y": np.arange(10.0)}, sync=False)
    save_outputs(tmp_path / "b.npz", {"y": np.arange(10.0), "z": np.ones(3)}, sync=False)
    assert is_whole(tmp_path / "a.npy") and is_whole(tmp_path / "b.npz")
    for name in ("a.npy", "b.npz"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"torn_{name}").write_bytes(data[:len(data) - 5])
        assert not is_whole(tmp_path / f"torn_{name}")
    assert not is_whole(tmp_path / "missing.npy")
