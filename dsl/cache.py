"""archc's on-disk cache, and the parser tables kept in it.

    ARCHC_CACHE_DIR=/path  ->  /path
    otherwise              ->  $XDG_CACHE_HOME/archc  (default ~/.cache/archc)

Compiled kernels go under `numba/` (runtime/jit.py). The LALR tables of the grammar go in
`lark-<hash>.json`: building them took 0.08-0.12 s of every start, reading them back 0.01 s.

The tables are JSON, never a pickle (Lark's own cache pickles): loading a cache file must
not be able to run code. Lark rebuilds its objects only from its own classes, so a file
that was tampered with can at worst fail to load, and then the tables are built afresh.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
from pathlib import Path

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef


def cache_root() -> Path:
    root = os.environ.get("ARCHC_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "archc"


def private_dir(path: Path) -> str | None:
    """Make `path` (and missing parents) a directory only its owner can enter (0700), and
    check it the way ssh checks ~/.ssh: a directory, owned by this user, writable by no
    one else. Returns None when it is fit to cache in, else why not."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as e:
        return f"cannot be created or entered ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return "is writable by other users"
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


# Lark's serialised tables hold dicts keyed by integers and tuples, which plain JSON would
# turn into string keys and lists; those two are written as tagged objects instead.
_TAG = "~"


def _encode(o):
    if isinstance(o, dict):
        if _TAG not in o and all(isinstance(k, str) for k in o):
            return {k: _encode(v) for k, v in o.items()}
        return {_TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in o.items()]}
    if isinstance(o, tuple):
        return {_TAG: "tuple", "items": [_encode(v) for v in o]}
    if isinstance(o, list):
        return [_encode(v) for v in o]
    if o is None or isinstance(o, (str, int, float, bool)):
        return o
    raise TypeError(f"cannot keep a {type(o).__name__} in the parser cache")


def _decode(o):
    if isinstance(o, dict):
        tag = o.get(_TAG)
        if tag == "dict":
            return {_decode(k): _decode(v) for k, v in o["items"]}
        if tag == "tuple":
            return tuple(_decode(v) for v in o["items"])
        return {k: _decode(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_decode(v) for v in o]
    return o


def cached_lark(grammar: str, **options) -> Lark:
    """Lark(grammar, parser="lalr", **options), its tables read from the cache when this
    grammar, these options and this Lark version built them before."""
    key = json.dumps([grammar, sorted(options.items()), lark.__version__])
    path = cache_root() / f"lark-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    try:
        if private_dir(path.parent) is not None:
            raise OSError("the cache directory is not safe to read")
        saved = _decode(json.loads(path.read_text()))
        return Lark.__new__(Lark)._load(saved)
    except Exception:           # absent, unreadable, or not our tables: build them
        pass
    parser = Lark(grammar, parser="lalr", **options)
    if private_dir(path.parent) is not None:
        return parser           # an unsafe or unusable cache: run without it
    try:
        data, memo = parser.memo_serialize([TerminalDef, Rule])
        text = json.dumps(_encode({"data": data, "memo": memo})).encode()
        replace_atomically(path, lambda f: f.write(text))
    except (OSError, TypeError):
        pass                    # a read-only home or an odd table: run without the cache
    return parser


def _temp_prefix(name: str) -> str:
    # short enough that a 255-byte name still has a temporary name that fits
    return f".{name.encode()[:100].decode(errors='ignore')}.archc-"


_random = random.Random()     # temporary names: new ones, not secret ones
# replace_atomically's `mode` for a new file: 0666 less the process's umask, as any new file
NEW_FILE = -1
_TEMP_TRIES = 100


def replace_atomically(path: Path, write, *, mode: int | None = None,
                       sync: bool = True) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, then rename it over
    `path`: readers see the old file or the complete new one, never a part. `mode`: the
    file's permissions; None: 0600 (private); NEW_FILE: a new file's (the umask's).

    The temporary file is `.NAME.archc-PID-XXXX.tmp`, made with O_EXCL (never an existing
    file or a symlink); one left by a process that is gone (killed mid-write: SIGKILL, a
    power cut) is removed here, the next time `path` is written.

    `sync=False`, for a job writing many files into one folder (archc/batch.py): no fsync
    (a killed process still leaves old or new; a crashed machine may leave a torn file)
    and no look for stale temporary files (a listing of the folder per file: quadratic);
    such a job sweeps the folder once (`remove_stale_temps_in`) and checks what it finds."""
    if sync:
        remove_stale_temps(path)
    fd, tmp = _create_temp(path, 0o600 if mode is None else 0o666)
    try:
        if mode is not None and mode != NEW_FILE:
            os.fchmod(fd, mode)        # exactly this mode: the umask applied at creation
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _create_temp(path: Path, mode: int) -> tuple[int, str]:
    """A new temporary file beside `path`: (fd, name). A name that exists is skipped (O_EXCL);
    the names need not be secret, only new (a creation per output file is what a batch job
    pays most for, so no more than one system call here)."""
    prefix = os.path.join(path.parent, f"{_temp_prefix(path.name)}{os.getpid()}-")
    for _ in range(_TEMP_TRIES):
        tmp = f"{prefix}{_random.getrandbits(40):010x}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of earlier writes of `target` whose process is gone."""
    return _remove_stale(target.parent, _temp_prefix(target.name))


def remove_stale_temps_in(folder: Path) -> list[Path]:
    """Remove the temporary files of earlier writes into `folder`, of any file, whose
    process is gone (on this machine: run it before a job's writers start)."""
    return _remove_stale(folder, ".")


def _remove_stale(folder: Path, prefix: str) -> list[Path]:
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for n in names:
        if not (n.startswith(prefix) and n.endswith(".tmp") and ".archc-" in n):
            continue
        pid = n[len(prefix):].rsplit(".archc-", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(folder / n)
                removed.append(folder / n)
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
