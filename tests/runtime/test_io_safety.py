"""Outputs never destroy a user's file: an output that is a file the run reads is refused,
special files are written into and never replaced, regular ones keep the umask's mode (or
the old file's), and every failure is one line with the old file intact."""
from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest

from archc.dsl.cache import remove_stale_temps, remove_stale_temps_in
from archc.dsl.errors import ArchError
from archc.runtime.io import OutputFolder, check_output, save_outputs, write_atomic


def test_an_output_that_is_an_input_is_refused(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones(2))
    (tmp_path / "link.npy").symlink_to(x)
    os.link(x, tmp_path / "hard.npy")
    reads = [("model", str(tmp_path / "m.arch")), ("input", str(x))]
    for out in (x, tmp_path / "link.npy", tmp_path / "hard.npy", tmp_path / "." / "x.npy"):
        with pytest.raises(ArchError, match="is the input file") as e:
            check_output(out, reads)
        assert "destroy the input" in e.value.render()
    check_output(tmp_path / "new.npy", reads)          # not read: fine
    check_output(None, reads)


def _mknod_null(path):
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot make a device node here (needs root)")


def test_a_device_is_written_into_not_replaced(tmp_path):
    dev = tmp_path / "null"
    _mknod_null(dev)
    save_outputs(dev, {"y": np.ones(3)})
    save_outputs(dev, {"a": np.ones(1), "b": np.ones(2)})   # several: .npz bytes
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_fifo_is_written_into_and_one_with_no_reader_is_an_error(tmp_path):
    fifo = tmp_path / "out.pipe"
    os.mkfifo(fifo)
    with pytest.raises(ArchError, match="start the reader"):
        save_outputs(fifo, {"y": np.ones(3)})         # no reader: at once, not a hang
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    for _ in range(200):             # wait until the reader has the FIFO open
        try:
            save_outputs(fifo, {"y": np.arange(3.0)})
            break
        except ArchError:
            threading.Event().wait(0.01)
    reader.join(5)
    assert got and got[0].startswith(b"\x93NUMPY")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_new_files_get_the_umask_mode_and_old_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        save_outputs(tmp_path / "new.npy", {"y": np.ones(1)})
        assert stat.S_IMODE(os.stat(tmp_path / "new.npy").st_mode) == 0o640
        os.chmod(tmp_path / "new.npy", 0o604)
        save_outputs(tmp_path / "new.npy", {"y": np.ones(2)})
        assert stat.S_IMODE(os.stat(tmp_path / "new.npy").st_mode) == 0o604
    finally:
        os.umask(old)


def test_a_symlinked_output_replaces_its_target_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.npy"
    np.save(target, np.zeros(1))
    (tmp_path / "out.npy").symlink_to(target)
    save_outputs(tmp_path / "out.npy", {"y": np.ones(2)})
    assert (tmp_path / "out.npy").is_symlink()
    np.testing.assert_array_equal(np.load(target), np.ones(2))


@pytest.mark.parametrize("name,message", [
    ("a" * 300 + ".npy", "File name too long"),
    ("missing/out.npy", "does not exist"),
    ("out.txt", "archc writes .npy"),
])
def test_output_errors_are_one_line(tmp_path, name, message):
    with pytest.raises(ArchError, match=message) as e:
        save_outputs(tmp_path / name, {"y": np.ones(1)})
    assert "\n" not in e.value.message


def test_a_long_name_that_fits_still_gets_a_temporary_file(tmp_path):
    out = tmp_path / ("b" * 250 + ".npy")
    save_outputs(out, {"y": np.ones(1)})
    assert out.is_file() and len(list(tmp_path.iterdir())) == 1


def _read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):
        pytest.skip("running as root: permissions do not apply")
    return ro


def test_an_unwritable_directory_is_one_line(tmp_path):
    ro = _read_only_dir(tmp_path)
    with pytest.raises(ArchError, match="Permission denied"):
        save_outputs(ro / "x.npy", {"y": np.ones(1)})


def test_a_killed_writers_temporary_file_is_cleaned_next_time(tmp_path):
    out = tmp_path / "out.npy"
    dead = 2 ** 22 + 12345              # above the default pid_max: never a live process
    stale = tmp_path / f".out.npy.archc-{dead}-abcd.tmp"
    stale.write_bytes(b"partial")
    live = tmp_path / f".out.npy.archc-{os.getpid()}-efgh.tmp"
    live.write_bytes(b"in progress")
    assert remove_stale_temps(out) == [stale]
    save_outputs(out, {"y": np.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.npy", live.name])


def test_write_atomic_to_stdout(capfdbinary):
    write_atomic("-", lambda f: f.write(b"bytes"))
    assert capfdbinary.readouterr().out == b"bytes"


# ---- a batch job's folder (OutputFolder): the same rules, fewer system calls -------------------

def test_a_folder_refuses_outputs_that_are_files_the_job_reads(tmp_path):
    x, w = tmp_path / "x.npy", tmp_path / "w.bin"
    np.save(x, np.ones(2))
    w.write_bytes(b"weights")
    out = tmp_path / "out"
    out.mkdir()
    os.link(x, out / "hard.npy")                 # a hard link to this item's input
    os.link(w, out / "w.npy")                    # ... to the job's weights
    (out / "link.npy").symlink_to(x)             # a symlink to the input
    folder = OutputFolder(out, [("weights", str(w))])
    for name, what in (("hard.npy", "input"), ("w.npy", "weights"), ("link.npy", "input")):
        with pytest.raises(ArchError, match=f"is the {what} file"):
            folder.save(name, {"y": np.zeros(1)}, [("input", str(x))])
    np.testing.assert_array_equal(np.load(x), np.ones(2))
    assert w.read_bytes() == b"weights"


def test_a_folder_writes_as_save_outputs_does(tmp_path):
    target = tmp_path / "elsewhere.npy"
    np.save(target, np.zeros(1))
    (tmp_path / "link.npy").symlink_to(target)
    (tmp_path / "dir.npy").mkdir()
    np.save(tmp_path / "old.npy", np.zeros(1))
    os.chmod(tmp_path / "old.npy", 0o604)
    folder = OutputFolder(tmp_path, [])
    old = os.umask(0o027)
    try:
        folder.save("new.npy", {"y": np.arange(3.0)})
        folder.save("two.npz", {"a": np.ones(1), "b": np.zeros(2)})
        folder.save("old.npy", {"y": np.ones(2)})
        folder.save("link.npy", {"y": np.ones(3)})
    finally:
        os.umask(old)
    np.testing.assert_array_equal(np.load(tmp_path / "new.npy"), np.arange(3.0))
    assert stat.S_IMODE(os.stat(tmp_path / "new.npy").st_mode) == 0o640      # the umask's
    assert sorted(np.load(tmp_path / "two.npz").files) == ["a", "b"]
    assert stat.S_IMODE(os.stat(tmp_path / "old.npy").st_mode) == 0o604      # kept
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.ones(2))
    assert (tmp_path / "link.npy").is_symlink()                              # target replaced
    np.testing.assert_array_equal(np.load(target), np.ones(3))
    with pytest.raises(ArchError, match="is a directory"):
        folder.save("dir.npy", {"y": np.ones(1)})
    with pytest.raises(ArchError, match="can hold only one"):
        folder.save("x.npy", {"a": np.ones(1), "b": np.ones(1)})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert remove_stale_temps_in(tmp_path) == []


def test_a_folder_that_is_gone_or_unwritable_is_one_line(tmp_path):
    with pytest.raises(ArchError, match="cannot write .*gone.*x.npy") as e:
        OutputFolder(tmp_path / "gone", []).save("x.npy", {"y": np.ones(1)})
    assert "\n" not in e.value.message
    ro = _read_only_dir(tmp_path)
    with pytest.raises(ArchError, match="Permission denied"):
        OutputFolder(ro, []).save("x.npy", {"y": np.ones(1)})
