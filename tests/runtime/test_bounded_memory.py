"""Memory is bounded before it is spent: inputs against the budget from their headers, random
initialisation and the reference executor without several copies of their biggest arrays,
and no temporary file outlives a killed writer."""
from __future__ import annotations

import io
import os
import sys
import time
import tracemalloc
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.lib import format as npy

from archc.dsl.errors import ArchError
from archc.runtime import kernel_cache
from archc.runtime.inputs import read_array

BIG = (1, 32 * 1024 * 1024)           # 128 MiB of float32, declared


def _header(f, shape=BIG):
    npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})


def test_a_sparse_npy_past_the_budget_is_refused_from_its_header(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:
        _header(f)
        f.truncate(f.tell() + 128 * 1024 * 1024)      # sparse: no disk, but a real size
    with pytest.raises(ArchError) as e:
        read_array(path, limit=64 << 20)
    assert e.value.message == (f"input {path} needs 128.0 MiB to load, more than --max-memory "
                               "64.0 MiB")


def test_an_npz_bomb_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("a.npy", "b.npy"):
            with zf.open(name, "w", force_zip64=True) as m:
                _header(m, (1, 12 * 1024 * 1024))
                for _ in range(48):
                    m.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ArchError) as e:
            read_array(path, limit=64 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.message == (f"input {path} needs 96.0 MiB to load, more than --max-memory "
                               "64.0 MiB")
    assert peak < 8 << 20


def test_standard_input_is_read_no_further_than_the_budget(monkeypatch):
    class Endless(io.RawIOBase):
        read_total = 0

        def readable(self):
            return True

        def readinto(self, b):
            Endless.read_total += len(b)
            b[:] = bytes(len(b))
            return len(b)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(Endless())))
    with pytest.raises(ArchError, match="standard input holds more than 1.0 MiB"):
        read_array("-", limit=1 << 20)
    assert Endless.read_total < 2 << 20


def test_standard_input_npy_is_checked_from_its_header(monkeypatch):
    head = io.BytesIO()
    _header(head)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(head.getvalue())))
    with pytest.raises(ArchError, match="standard input needs 128.0 MiB to load"):
        read_array("-", limit=1 << 20)


def test_random_init_holds_the_parameter_and_one_block(tmp_path):
    from archc.runtime.weights import INIT_BLOCK, init_param
    node = SimpleNamespace(attrs={"name": "wte", "std": 0.02}, shape=(4096, 512),
                           dtype="float32")
    tracemalloc.start()
    try:
        out = init_param(node, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= out.nbytes + 3 * INIT_BLOCK * 8          # was 5x the parameter
    # the values of one draw of the whole shape
    import zlib
    rng = np.random.default_rng([0, zlib.crc32(b"wte")])
    np.testing.assert_array_equal(out, (rng.standard_normal(node.shape) * 0.02)
                                  .astype(np.float32))


def test_reference_attention_in_query_blocks_is_the_same(monkeypatch):
    from archc.runtime.kernels import attention
    rng = np.random.default_rng(0)
    B, T, H, D = 2, 37, 4, 8
    q, k, v = (rng.standard_normal((B, T, H * D)).astype(np.float32) for _ in range(3))
    mask = (rng.random((B, T)) > 0.2).astype(np.int64)
    for bias in (None, rng.standard_normal((1, H, T, T)), rng.standard_normal((1, H, 1, T))):
        whole = attention.ref_attention(q, k[:, :, :16], v[:, :, :16], mask, bias, heads=H,
                                        kv_heads=2, causal=True, window=9)
        monkeypatch.setattr(attention, "REF_BLOCK", 3 * B * H * T)     # blocks of 3 rows
        blocked = attention.ref_attention(q, k[:, :, :16], v[:, :, :16], mask, bias, heads=H,
                                          kv_heads=2, causal=True, window=9)
        monkeypatch.undo()
        np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-7)


def test_reference_elementwise_ops_in_blocks_are_the_same(monkeypatch, arch_file):
    import archc
    from archc.runtime import reference
    m = archc.load(arch_file("model m(x: float[T, 50]) {\n    return gelu(x) + silu(x)\n}\n"))
    x = np.random.default_rng(1).standard_normal((31, 50)).astype(np.float32)
    whole = m.run(x=x)["out"]
    monkeypatch.setattr(reference, "BLOCK", 97)
    np.testing.assert_array_equal(m.run(x=x)["out"], whole)


def test_a_killed_compiles_temporary_files_are_swept(tmp_path):
    sub = tmp_path / "kernels_x"
    sub.mkdir()
    old = sub / "f.nbi.tmp.0123456789abcdef"
    fresh = sub / "g.nbi.tmp.fedcba9876543210"
    keep = sub / "f.nbi"
    for f in (old, fresh, keep):
        f.write_bytes(b"x")
    long_ago = time.time() - 2 * kernel_cache.STALE_TEMP_SECONDS
    os.utime(old, (long_ago, long_ago))
    assert kernel_cache.sweep_temps(tmp_path) == [old]
    assert sorted(p.name for p in sub.iterdir()) == ["f.nbi", fresh.name]


def test_every_atomic_write_cleans_a_killed_writers_file(tmp_path):
    # the parser tables' cache goes through the same writer as outputs
    from archc.dsl.cache import replace_atomically
    target = tmp_path / "lark-abc.json"
    stale = tmp_path / f".lark-abc.json.archc-{2 ** 22 + 7}-xyz.tmp"
    stale.write_bytes(b"half")
    replace_atomically(target, lambda f: f.write(b"{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lark-abc.json"]
