"""Writing results without ever losing a user's file.

- An output that resolves to a file the run reads (the model, an include, the weights, an
  input; through symlinks and hard links too) is refused before anything runs.
- A regular file (or a new one) is written to a temporary file beside it and renamed over
  it, so an interrupted run leaves the old file whole; it keeps an existing file's mode,
  and a new one gets the umask's. A symlink is followed: its target is replaced, the link
  stays.
- Anything that is not a regular file (a device such as /dev/null, a FIFO, `-` or
  /dev/stdout) is written into, never replaced.
- Every failure (no such directory, permission, name too long, disk full) is one line,
  and those that can be seen beforehand (the directory, the name's length, the format for
  the number of outputs) are seen by `check_output`, before anything runs.

Temporary files are named `.NAME.archc-PID-XXXX.tmp`; one whose process is gone (killed
by SIGKILL mid-write) is removed the next time that output is written (dsl/cache.py).

A job writing many outputs into one folder (archc/batch.py) writes through `OutputFolder`
with `sync=False`: no fsync per file and no look for stale temporary files per write; it
sweeps the folder once (dsl/cache.py remove_stale_temps_in) and trusts an output only
when `is_whole` says so (a machine that crashed mid-job may leave a torn file).
"""
from __future__ import annotations

import errno
import io
import os
import stat
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..dsl.cache import NEW_FILE, replace_atomically
from ..dsl.errors import ArchError
from ..dsl.files import file_id, kind_of

_STDOUT = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_STDERR = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")


def to_stdout(path: str | os.PathLike) -> bool:
    """Whether an output path is the process's standard output."""
    return str(path) in _STDOUT


def check_output(path: str | os.PathLike | None, reads: Iterable[tuple[str, str]],
                 outputs: Sequence[str] | None = None) -> None:
    """Before a run, refuse an output that cannot be written or that is one of the files
    this run reads: `reads` holds (what, path) pairs, e.g. ("input", "x.npy"); the same
    device and inode counts, so a symlink or hard link to an input is caught too.
    `outputs`: the names of the arrays to be saved (their number decides .npy or .npz)."""
    if path is None or to_stdout(path) or str(path) in _STDERR:
        return
    out = file_id(path)
    for what, src in reads if out is not None else ():
        if file_id(src) == out:
            same = "" if os.path.abspath(src) == os.path.abspath(path) else f" ({src})"
            raise ArchError(f"output {path} is the {what} file{same}; writing it would "
                            f"destroy the {what}", hint="choose another --output path")
    if outputs is not None:
        output_format(str(path), outputs)
    _check_writable(Path(path))


def _existing(p: Path) -> os.stat_result | None:
    """The stat of an output path (None: a new file); a directory is an error."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _write_error(p, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise ArchError(f"output {p} is a directory")
    return st


def _target_dir(p: Path) -> Path:
    """The directory a regular output is created in (a symlink's target's)."""
    parent = Path(os.path.realpath(p)).parent
    if not parent.is_dir():
        raise ArchError(f"cannot write {p}: directory {p.parent} does not exist")
    return parent


def _check_writable(p: Path) -> None:
    """The errors a write would meet, seen without writing: the directory, the name."""
    st = _existing(p)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return                          # a device or FIFO is written into, as it is
    parent = _target_dir(p)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(Path(os.path.realpath(p)).name)) > name_max:
        raise _write_error(p, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _write_error(p, OSError(errno.EACCES, "permission denied: cannot create files "
                                                    f"in {parent}"))


def write_atomic(path: str | os.PathLike, write: Callable, sync: bool = True) -> None:
    """Call `write(binary file)` for the output `path` (see the module docstring)."""
    name = str(path)
    if name in _STDOUT or name in _STDERR:
        stream = sys.stdout if name in _STDOUT else sys.stderr
        stream.flush()
        _write_or_fail(name, lambda: _to_stream(stream.buffer, write))
        return
    p = Path(path)
    st = _existing(p)
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_or_fail(p, lambda: _write_into(p, st, write))
        return
    # a symlink stays: its target is replaced
    target = _target_dir(p) / Path(os.path.realpath(p)).name
    mode = stat.S_IMODE(st.st_mode) if st is not None else NEW_FILE
    _write_or_fail(p, lambda: _replace(target, mode, write, sync))


def _write_or_fail(p, action: Callable) -> None:
    try:
        action()
    except ArchError:
        raise
    except OSError as e:
        raise _write_error(p, e) from None


def _write_error(p, e: OSError) -> ArchError:
    reason = e.strerror or str(e)
    hint = {errno.ENAMETOOLONG: "a file name may be at most 255 bytes",
            errno.ENOSPC: "free some space, or write elsewhere",
            errno.EACCES: "choose a directory you can write to",
            errno.EROFS: "choose a directory you can write to",
            errno.ENXIO: "start the reader of the FIFO first"}.get(e.errno)
    return ArchError(f"cannot write {p}: {reason}", hint=hint)


def _to_stream(buf, write) -> None:
    buf.write(_in_memory(write))
    buf.flush()


def _in_memory(write) -> bytes:
    """What `write` writes, as bytes: a stream or device cannot seek back (an .npz's zip
    directory needs to), so the file is made in memory first."""
    mem = io.BytesIO()
    write(mem)
    return mem.getvalue()


def _write_into(p: Path, st: os.stat_result, write) -> None:
    """A device or FIFO: open it as it is. A FIFO with no reader is an error at once
    (O_NONBLOCK), not a hang; a socket cannot be opened at all."""
    if stat.S_ISSOCK(st.st_mode):
        raise ArchError(f"cannot write {p}: it is {kind_of(st.st_mode)}")
    flags = os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(st.st_mode) else 0)
    data = _in_memory(write)
    fd = os.open(p, flags)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _replace(target: Path, mode: int, write, sync: bool) -> None:
    replace_atomically(target, write, mode=mode, sync=sync)
    if sync:
        _sync_dir(target.parent)


def _sync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


OUTPUT_FORMATS = (".npy", ".npz")


def output_format(p: str, names: Sequence[str]) -> str:
    """"npy" or "npz" for these outputs at path `p`: one output -> .npy; several, or a name
    ending in .npz -> .npz keyed by output name. A stream or device (stdout, /dev/null, a
    FIFO) has no extension to go by: one output is written as .npy, several as .npz."""
    special = to_stdout(p) or p in _STDERR or _is_special(p)
    if p.endswith(".npz") or (special and len(names) > 1):
        return "npz"
    if not (p.endswith(".npy") or special):
        raise ArchError(f"output {p}: archc writes .npy (one array) or .npz (several by "
                        "name)", hint=f"name it {Path(p).stem or 'out'}.npy or "
                                      f"{Path(p).stem or 'out'}.npz")
    if len(names) != 1:
        raise ArchError(f"the model has {len(names)} outputs ({', '.join(names)}); "
                        f"{p} can hold only one", hint="write them all with --output out.npz")
    return "npy"


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray],
                 sync: bool = True) -> None:
    """Write `outputs` as `output_format` says; `sync` as write_atomic's."""
    p = str(path)
    write_atomic(p, _writer(p, outputs), sync)


class OutputFolder:
    """Many outputs written into one folder (a batch job), each as `save_outputs` would
    write it, for fewer system calls: creating a file is most of a small output's cost
    (0.3 ms on this project's virtual machines, where each other call costs ~10 us), and
    `check_output` + `write_atomic` made ~25 calls per file (a realpath of every path
    component twice, the umask read from /proc, fchmod). Here a file is one lstat: a new
    name (the usual case) cannot be a file the run reads, so it is written at once
    (temporary file, one write, rename); an existing regular file is compared with the
    files the job reads, by (device, inode), and keeps its mode; anything else (a
    symlink, a device, a directory) goes the general way. `reads` as check_output's."""

    def __init__(self, folder: str | os.PathLike, reads: Iterable[tuple[str, str]]):
        self.folder = str(folder)
        self.reads = list(reads)
        self.read_ids = {file_id(src): (what, src) for what, src in self.reads}
        self.read_ids.pop(None, None)

    def save(self, name: str, outputs: Mapping[str, np.ndarray],
             reads: Sequence[tuple[str, str]] = ()) -> None:
        """Write `outputs` as FOLDER/name; `reads`: this output's own inputs."""
        path = os.path.join(self.folder, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise _write_error(path, e) from None
        if st is not None and not stat.S_ISREG(st.st_mode):
            check_output(path, self.reads + list(reads))
            save_outputs(path, outputs, sync=False)
            return
        if st is not None:
            here = (st.st_dev, st.st_ino)
            same = self.read_ids.get(here) or next(
                ((what, src) for what, src in reads if file_id(src) == here), None)
            if same is not None:
                check_output(path, [same])       # says it as a single run does
        data = _in_memory(_writer(path, outputs))
        mode = stat.S_IMODE(st.st_mode) if st is not None else NEW_FILE
        _write_or_fail(path, lambda: replace_atomically(Path(path), lambda f: f.write(data),
                                                        mode=mode, sync=False))


def _writer(path: str, outputs: Mapping[str, np.ndarray]) -> Callable:
    """`write(file)` for `outputs` in the format `output_format` says."""
    if output_format(path, list(outputs)) == "npz":
        return lambda f: np.savez(f, **outputs)
    (arr,) = outputs.values()
    return lambda f: np.save(f, arr, allow_pickle=False)


def is_whole(path: str | os.PathLike) -> bool:
    """Is this output complete: an .npy whose data is as long as its header says, or an
    .npz whose every member reads with the right checksum?"""
    import zipfile
    from numpy.lib import format as npy
    try:
        with open(path, "rb") as f:
            if str(path).endswith(".npz"):
                with zipfile.ZipFile(f) as z:
                    return bool(z.namelist()) and z.testzip() is None
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) \
                else npy.read_array_header_2_0
            shape, _, dtype = read_header(f)
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            return os.fstat(f.fileno()).st_size == f.tell() + size
    except Exception:  # noqa: BLE001 - anything unreadable is not whole
        return False


def _is_special(p: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False
