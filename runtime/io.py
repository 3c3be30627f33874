"""Writing results without ever losing a user's file.

- An output that resolves to a file the run reads (the model, an include, the weights, an
  input; through symlinks and hard links too) is refused before anything runs.
- A regular file (or a new one) is written to a temporary file beside it and renamed over
  it, so an interrupted run leaves the old file whole; it keeps an existing file's mode,
  and a new one gets the umask's. A symlink is followed: its target is replaced, the link
  stays.
- Anything that is not a regular file (a device such as /dev/null, a FIFO, `-` or
  /dev/stdout) is written into, never replaced.
- Every failure (no such directory, permission, name too long, disk full) is one line.

Temporary files are named `.NAME.archc-PID-XXXX.tmp`; one whose process is gone (killed
by SIGKILL mid-write) is removed the next time that output is written.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from ..dsl.cache import replace_atomically
from ..dsl.errors import ArchError
from ..dsl.files import file_id, kind_of

_STDOUT = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_STDERR = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")


def to_stdout(path: str | os.PathLike) -> bool:
    """Whether an output path is the process's standard output."""
    return str(path) in _STDOUT


def check_output(path: str | os.PathLike | None, reads: Iterable[tuple[str, str]]) -> None:
    """Refuse an output that is one of the files this run reads: `reads` holds
    (what, path) pairs, e.g. ("input", "x.npy"). Same device and inode counts, so a
    symlink or hard link to an input is caught too."""
    if path is None or to_stdout(path) or str(path) in _STDERR:
        return
    out = file_id(path)
    if out is None:
        return
    for what, src in reads:
        if file_id(src) == out:
            same = "" if os.path.abspath(src) == os.path.abspath(path) else f" ({src})"
            raise ArchError(f"output {path} is the {what} file{same}; writing it would "
                            f"destroy the {what}", hint="choose another --output path")


def write_atomic(path: str | os.PathLike, write: Callable) -> None:
    """Call `write(binary file)` for the output `path` (see the module docstring)."""
    name = str(path)
    if name in _STDOUT or name in _STDERR:
        stream = sys.stdout if name in _STDOUT else sys.stderr
        stream.flush()
        _write_or_fail(name, lambda: _to_stream(stream.buffer, write))
        return
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _write_error(p, e) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ArchError(f"output {p} is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_or_fail(p, lambda: _write_into(p, st, write))
        return
    target = Path(os.path.realpath(p))        # a symlink stays; its target is replaced
    parent = target.parent
    if not parent.is_dir():
        raise ArchError(f"cannot write {p}: directory {p.parent} does not exist")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    _write_or_fail(p, lambda: _replace(target, mode, write))


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


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)       # no /proc: read it the old way (and put it back)
    os.umask(mask)
    return mask


def _prefix(name: str) -> str:
    # short enough that a 255-byte output name still has a temporary name that fits
    return f".{name.encode()[:100].decode(errors='ignore')}.archc-"


def _replace(target: Path, mode: int, write) -> None:
    remove_stale_temps(target)
    replace_atomically(target, write, prefix=f"{_prefix(target.name)}{os.getpid()}-",
                       mode=mode)
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


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of earlier writes of `target` whose process is gone."""
    removed = []
    prefix = _prefix(target.name)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for n in names:
        if not (n.startswith(prefix) and n.endswith(".tmp")):
            continue
        pid = n[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(target.parent / n)
                removed.append(target.parent / n)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


OUTPUT_FORMATS = (".npy", ".npz")


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray]) -> None:
    """One output -> .npy; several, or a name ending in .npz -> .npz keyed by output name.
    A stream or device (stdout, /dev/null, a FIFO) has no extension to go by: one output is
    written as .npy, several as .npz."""
    p = str(path)
    special = to_stdout(p) or p in _STDERR or _is_special(p)
    if p.endswith(".npz") or (special and len(outputs) > 1):
        write_atomic(p, lambda f: np.savez(f, **outputs))
    elif not (p.endswith(".npy") or special):
        raise ArchError(f"output {p}: archc writes .npy (one array) or .npz (several by "
                        "name)", hint=f"name it {Path(p).stem or 'out'}.npy or "
                                      f"{Path(p).stem or 'out'}.npz")
    elif len(outputs) == 1:
        (arr,) = outputs.values()
        write_atomic(p, lambda f: np.save(f, arr, allow_pickle=False))
    else:
        raise ArchError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); "
                        f"{p} can hold only one", hint="write them all with --output out.npz")


def _is_special(p: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False
