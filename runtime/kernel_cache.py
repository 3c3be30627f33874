"""The on-disk kernel cache, kept where only its owner can write and healed when broken.

A Numba cache entry is compiled machine code wrapped in a pickle: loading one runs it. So
whoever can write the cache can run code as its user, and archc caches only where nobody
else can write (`dsl/cache.py`'s `private_dir`: created 0700; a directory that belongs to
another user or is group/world-writable is refused, the way ssh treats ~/.ssh). Refused
or unusable (a file, unwritable, a dangling symlink, HOME a file), it says so once and
compiles into a private temporary directory that is removed at exit: the run works,
uncached. Kernels are never written beside their sources (Numba's fallback writes into
the installed package's __pycache__).

An entry that cannot be loaded (truncated, empty, random bytes, from another machine, or
a file owned by someone else) is removed with its index, said once on stderr, and
compiled afresh, so the next run finds a good entry. Concurrent runs sharing a cache keep
Numba's own protocol: each file is written to a temporary name and renamed.

    ARCHC_CACHE_DIR=/path  ->  /path/numba
    otherwise              ->  $XDG_CACHE_HOME/archc/numba  (default ~/.cache/archc/numba)
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from numba.core import caching

from ..dsl.cache import cache_root, private_dir

_said: set[str] = set()     # each kind of warning is printed once per process


def _warn(kind: str, message: str) -> None:
    if kind not in _said:
        _said.add(kind)
        print(f"warning: {message}", file=sys.stderr)


# Numba writes an entry to `NAME.tmp.<uuid>` and renames it; a process killed between the
# two leaves that file. No pid in the name says whether its writer is alive, so the ones
# older than any compile are removed when the directory is chosen.
STALE_TEMP_SECONDS = 3600


def sweep_temps(d: Path, now: float | None = None) -> list[Path]:
    """Remove Numba's temporary files under `d` left by killed compiles."""
    now = time.time() if now is None else now
    removed = []
    for sub in [d, *(p for p in d.iterdir() if p.is_dir())] if d.is_dir() else []:
        for f in sub.glob("*.tmp.*"):
            try:
                if now - f.stat().st_mtime > STALE_TEMP_SECONDS:
                    f.unlink()
                    removed.append(f)
            except OSError:
                pass
    return removed


def _choose_dir() -> Path:
    d = cache_root() / "numba"
    why = private_dir(cache_root()) or private_dir(d)
    if why is None:
        sweep_temps(d)
        return d
    tmp = Path(tempfile.mkdtemp(prefix="archc-kernels-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    _warn("dir", f"kernel cache {d} {why}; compiling without a cache this run "
                 "(hint: set ARCHC_CACHE_DIR to a directory of your own)")
    return tmp


_dir: Path | None = None


def kernel_dir() -> Path:
    """The directory kernels are cached in this process (chosen, and checked, once)."""
    global _dir
    if _dir is None:
        _dir = _choose_dir()
    return _dir


class _Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Every kernel in kernel_dir(), under a folder per source directory (as Numba's
    user-directory locator does)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(kernel_dir() / self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        # Numba stamps an entry with its own file only, but kernels inline helpers from
        # other files (_vmath.py, elementwise.py's _act): a change there must invalidate
        # every kernel that inlined it, so the stamp covers every kernel source
        return (super().get_source_stamp(), _runtime_stamp())

    def ensure_cache_path(self):
        os.makedirs(self._cache_path, mode=0o700, exist_ok=True)

    @classmethod
    def from_function(cls, py_func, py_file):
        return cls(py_func, py_file)    # never None: no fallback to the package's folder


_stamp: tuple | None = None


def _runtime_stamp() -> tuple:
    """(name, mtime, size) of every file compiled code comes from (the kernel families and
    the lanes' intrinsics), taken once per process."""
    global _stamp
    if _stamp is None:
        root = Path(__file__).resolve().parent
        files = sorted(root.glob("kernels/*.py")) + [root / "lanes.py"]
        _stamp = tuple((str(f.relative_to(root)), f.stat().st_mtime_ns, f.stat().st_size)
                       for f in files)
    return _stamp


class _Impl(caching.CompileResultCacheImpl):
    _locator_classes = [_Locator]


def _owned(path: str) -> bool:
    st = os.stat(path)
    return (not hasattr(os, "geteuid") or st.st_uid == os.geteuid()) \
        and stat.S_ISREG(st.st_mode) and not st.st_mode & 0o022


class _IndexFile(caching.IndexDataCacheFile):
    """Numba's index + data files; anything that fails to load is discarded."""

    def _load_index(self):
        try:
            if os.path.exists(self._index_path) and not _owned(self._index_path):
                raise ValueError("not owned by this user, or writable by others")
            return super()._load_index()
        except FileNotFoundError:
            return {}
        except Exception as e:  # noqa: BLE001 - a bad pickle raises anything
            self.discard(e)
            return {}

    def load(self, key):
        name = self._load_index().get(key)
        if name is None:
            return None
        try:
            if not _owned(self._data_path(name)):
                raise ValueError("not owned by this user, or writable by others")
            return self._load_data(name)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            self.discard(e)
            return None

    def discard(self, why: BaseException) -> None:
        """Remove this function's index and data files."""
        base = os.path.basename(self._index_path)[:-len(".nbi")]
        try:
            names = os.listdir(self._cache_path)
        except OSError:
            names = []
        for n in names:
            if n == base + ".nbi" or (n.startswith(base + ".") and n.endswith(".nbc")):
                try:
                    os.unlink(os.path.join(self._cache_path, n))
                except OSError:
                    pass
        _warn("entry", f"a kernel cache entry was unreadable ({type(why).__name__}); "
                       f"discarded it and compiling afresh (in {self._cache_path})")


class SafeFunctionCache(caching.FunctionCache):
    """Numba's per-function cache, with the locator and index above."""
    _impl_class = _Impl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _IndexFile(cache_path=self._cache_path,
                                      filename_base=self._impl.filename_base,
                                      source_stamp=self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as e:  # noqa: BLE001 - a payload that unpickled but will not rebuild
            self._cache_file.discard(e)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except OSError as e:
            _warn("save", f"cannot write the kernel cache ({e.strerror or e}); kernels will "
                          "be compiled again next run")


def use_safe_cache(dispatcher) -> None:
    """Cache `dispatcher`'s compiled kernels through SafeFunctionCache."""
    dispatcher._cache = SafeFunctionCache(dispatcher.py_func)
