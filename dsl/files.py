"""The user's files: archc reads only regular files the user named, and knows which it read.

A FIFO, a device or a socket given as an input would block forever or stream without end,
so it is refused before it is opened (a pipe is read only when the user says `-`). The
files a run reads are kept by identity (device, inode), so an output that would land on
one of them, through a symlink or a hard link too, is refused before anything runs
(runtime/io.py).
"""
from __future__ import annotations

import os
import stat

from .errors import SOURCE_SUFFIX, ArchError, is_source  # noqa: F401  (re-exported)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str, stdin_ok: bool = False) -> os.stat_result:
    """The stat of `path` (symlinks followed) if it is a regular file, else a clear error.
    Nothing is opened, so a FIFO with no writer cannot block."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArchError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise ArchError(f"cannot read {what} {path}: {e.strerror}") from None
    except ValueError:          # a name from a file (an index's shard) can hold a NUL
        raise ArchError(f"cannot read {what} {str(path)!r}: a file name cannot hold a NUL "
                        "character") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArchError(f"{what} {path} is {kind_of(st.st_mode)}, not a regular file",
                        hint="give a file; a pipe is read from standard input as `-`"
                        if stdin_ok and not stat.S_ISDIR(st.st_mode) else None)
    return st


def open_regular(path: str | os.PathLike, what: str):
    """Open a regular file for binary reading. O_NONBLOCK makes the open itself return at
    once even if the path was swapped for a FIFO after the check; fstat then refuses it."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ArchError(f"cannot read {what} {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ArchError(f"{what} {path} is {kind_of(st.st_mode)}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of an existing file, symlinks followed; None if it cannot be seen."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


MAX_JSON_DEPTH = 64


def bounded_json(data: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads, after a scan that refuses nesting deeper than `max_depth` (the parser
    recurses: a config.json of 100k brackets would raise RecursionError)."""
    import json
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise ArchError(f"{what} is nested more than {max_depth} deep; not a "
                                "checkpoint file archc can read")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ArchError(f"{what} is not valid JSON: {str(e).splitlines()[0]}") from None
