"""The kernel cache: a private directory (0700, the user's own, writable by no one else),
never the installed package's folders, and entries that heal when they are broken.

Each case runs a fresh process: the cache directory is chosen once per process."""
from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numba
import pytest

import archc

SCRIPT = """
import numpy as np
from archc.runtime.kernels.elementwise import bias_act_cols
from archc.runtime.jit import cache_dir
y = np.ones((2, 4), np.float32)
bias_act_cols(y, np.ones(4, np.float32), 0, 0, 4)
assert float(y[0, 0]) == 2.0
print(cache_dir())
print(sum(bias_act_cols.stats.cache_hits.values()))
"""
PACKAGE = Path(archc.__file__).resolve().parent.parent


def run(env_extra: dict) -> tuple[Path, int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHC_CACHE_DIR", "NUMBA_CACHE_DIR")}
    env.update(env_extra)
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    where, hits = p.stdout.split()
    return Path(where), int(hits), p.stderr


def entries(d: Path, suffix: str) -> list[Path]:
    return sorted(d.rglob(f"*.bias_act_cols-*{suffix}"))


def package_entries() -> list[Path]:
    return sorted(PACKAGE.rglob("*.nbi"))


def test_a_new_cache_is_private_and_reused(tmp_path):
    root = tmp_path / "fresh" / "archc"
    where, hits, err = run({"ARCHC_CACHE_DIR": str(root)})
    assert where == root / "numba" and hits == 0 and "warning" not in err
    for d in (root, root / "numba"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert entries(where, ".nbi") and entries(where, ".nbc")
    _, hits, err = run({"ARCHC_CACHE_DIR": str(root)})
    assert hits == 1 and err == ""


@pytest.mark.parametrize("make, why", [
    (lambda p: (p.mkdir(), p.chmod(0o777)), "is writable by other users"),
    (lambda p: p.write_text("a file"), "cannot be created"),
    (lambda p: p.symlink_to(p.parent / "nowhere"), "cannot be created"),
])
def test_an_unsafe_or_unusable_cache_is_refused_and_the_run_works(tmp_path, make, why):
    before = package_entries()
    d = tmp_path / "cache"
    make(d)
    where, hits, err = run({"ARCHC_CACHE_DIR": str(d)})
    assert why in err and "compiling without a cache" in err and err.count("warning") == 1
    assert not str(where).startswith(str(d)) and hits == 0
    assert not where.exists()              # the private stand-in is removed at exit
    assert package_entries() == before      # never beside the sources


def test_home_a_file_runs_uncached_and_never_writes_into_the_package(tmp_path):
    before = package_entries()
    home = tmp_path / "home"
    home.write_text("not a directory")
    _, _, err = run({"HOME": str(home), "XDG_CACHE_HOME": ""})
    assert "compiling without a cache" in err
    assert package_entries() == before


def _planted_index(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    return pickle.dumps(numba.__version__) + pickle.dumps(Payload())


def test_a_planted_pickle_in_a_shared_cache_is_never_loaded(tmp_path):
    d = tmp_path / "shared"
    run({"ARCHC_CACHE_DIR": str(d)})             # a real cache, then made world-writable
    marker = tmp_path / "pwned"
    for f in entries(d, ".nbi"):
        f.write_bytes(_planted_index(marker))
    for sub in [d, *d.rglob("*")]:
        if sub.is_dir():
            sub.chmod(0o777)
    _, _, err = run({"ARCHC_CACHE_DIR": str(d)})
    assert "is writable by other users" in err
    assert not marker.exists()


def test_an_entry_owned_by_someone_else_is_discarded_not_loaded(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    d = tmp_path / "own"
    run({"ARCHC_CACHE_DIR": str(d)})
    marker = tmp_path / "pwned"
    (index,) = entries(d, ".nbi")
    index.write_bytes(_planted_index(marker))
    os.chown(index, 12345, 12345)
    _, hits, err = run({"ARCHC_CACHE_DIR": str(d)})
    assert not marker.exists() and hits == 0
    assert "discarded it and compiling afresh" in err
    _, hits, err = run({"ARCHC_CACHE_DIR": str(d)})   # healed: rebuilt and reused
    assert hits == 1 and err == ""


@pytest.mark.parametrize("suffix, damage", [
    (".nbi", lambda b: b[: len(b) // 2]),
    (".nbi", lambda b: b""),
    (".nbc", lambda b: b[: len(b) // 3]),
    (".nbc", lambda b: os.urandom(len(b))),
])
def test_a_broken_entry_is_said_once_discarded_and_rebuilt(tmp_path, suffix, damage):
    d = tmp_path / "c"
    run({"ARCHC_CACHE_DIR": str(d)})
    for f in entries(d, suffix):
        f.write_bytes(damage(f.read_bytes()))
    _, hits, err = run({"ARCHC_CACHE_DIR": str(d)})
    assert hits == 0 and err.count("discarded it and compiling afresh") == 1
    _, hits, err = run({"ARCHC_CACHE_DIR": str(d)})
    assert hits == 1 and err == ""
