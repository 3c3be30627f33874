"""Kernel choice by measurement (runtime/tune.py): a product class is measured once, its
winner remembered per machine, and the product computed by whichever kernel won is the
reference's; a wisdom file that cannot be read is measured again and rewritten."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.runtime import tune
from archc.runtime.kernels import _quant as k_quant


@pytest.fixture
def wisdom(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHC_TUNE", "1")
    monkeypatch.setenv("ARCHC_QUIET", "1")
    w = tune.Wisdom(tmp_path / "tune" / "m.json")
    monkeypatch.setattr(tune, "_wisdom", w)
    return w


def test_a_class_is_measured_once_and_remembered(wisdom, monkeypatch):
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((24, 40)).astype(np.float32)
    x = rng.standard_normal((20, 40)).astype(np.float32)
    measured = []
    real = tune.measure_product
    monkeypatch.setattr(tune, "measure_product",
                        lambda *a: measured.append(a[0]) or real(*a))
    first = tune.choose_product(x, wt, 24)
    assert first in {"blas", *tune.own_kernels(np.float32)} and measured == [32]   # class M32
    assert tune.choose_product(x[:17], wt, 24) == first and len(measured) == 1
    saved = json.loads(wisdom.path.read_text())
    entry = saved["entries"][tune.product_key(np.float32, 20, 40, 24)]
    assert entry["best"] == first
    assert set(entry["gflops"]) == {"blas", *tune.own_kernels(np.float32)}
    assert saved["machine"]["cpu"] == tune.cpu_model()
    assert tune.Wisdom(wisdom.path).get(tune.product_key(np.float32, 30, 40, 24)) == first


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_packed_products_are_measured_as_packed(wisdom, kind):
    # float32's winner does not carry over to packed weights: their own class, measured
    # through gemm_packed with each kernel, remembered under its own key
    from archc.runtime.kernels._quant import pack_weight
    rng = np.random.default_rng(1)
    w = pack_weight(rng.standard_normal((40, 64)).astype(np.float32), kind, False)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    best = tune.choose_packed_product(x, w, 8, 40)
    entry = wisdom.entries[tune.product_key(f"packed-{kind}", 20, 64, 32)]
    assert entry["best"] == best
    assert set(entry["gflops"]) == {"blas", *tune.own_kernels(np.float32)}
    assert tune.product_key(np.float32, 20, 64, 32) not in wisdom.entries
    y = np.full((20, 40), np.nan, np.float32)
    k_quant.gemm_packed(y, x, w.data, w.scales, 8, 40,
                        None if best == "blas" else tune.KERNELS[best])
    dense = np.empty((40, 64), np.float32)
    k_quant.widen_rows(dense, w.data, w.scales)
    np.testing.assert_allclose(y[:, 8:], x @ dense[8:].T, atol=1e-4, rtol=1e-5)
    assert np.isnan(y[:, :8]).all()


def test_unreadable_wisdom_is_measured_again(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("{not json")
    w = tune.Wisdom(path)
    assert w.entries == {}
    w.put("product/float32/M8/K4/N4", "blas", {"blas": 1.0})
    assert tune.Wisdom(path).get("product/float32/M8/K4/N4") == "blas"


@pytest.mark.parametrize("winner", ["blas", *tune.KERNELS])
@pytest.mark.parametrize("kind", ["float32", "int8", "bf16"])
def test_every_winner_computes_the_reference(wisdom, winner, kind, monkeypatch):
    # whichever kernel a machine picks, a model's outputs are the reference's; packed
    # weights widen a panel at a time into the chosen kernel (runtime/kernels/_quant.py),
    # which then writes a column slice of the product (vocab 300: the head has two panels)
    monkeypatch.setattr(tune, "measure_product",
                        lambda M, wt, dtype, own_ok: {winner: 1.0})
    monkeypatch.setattr(tune, "measure_packed_product", lambda M, data, scales: {winner: 1.0})
    model = archc.load("examples/gpt2.arch", seed=3, weights_dtype=kind, config={
        "n_layer": 1, "d_model": 32, "n_head": 2, "vocab": 300, "n_ctx": 40})
    ids = np.arange(24).reshape(1, 24) % 300
    want = model.run(ids=ids, executor="reference")["logits"]
    ex = model.compiled(2)
    got = ex.run({"ids": ids})["logits"]
    np.testing.assert_allclose(got, want, atol=2e-5)
    prog = next(iter(ex._programs.values()))
    calls = prog.calls()
    own = {fn for fn, args in calls if fn in tune.KERNELS.values()} | \
        {args[-1] for fn, args in calls if fn is k_quant.gemm_packed and args[-1] is not None}
    assert own == (set() if winner == "blas" else {tune.KERNELS[winner]})


def test_lanes_without_blas_keep_numba_to_one_thread(wisdom, monkeypatch):
    # every product on archc's own kernel and attention on the micro-kernel: no BLAS step
    # is left, and the lanes alone hold the cores. A parallel Numba kernel in lane 0 (a
    # norm) must not start a second thread team beside the helper lane: with it, a GPT-2
    # small prompt's norms took 10x longer on 2 cores
    from archc.runtime import lanes as lanes_mod
    from archc.runtime.kernels import prefill as k_prefill
    monkeypatch.setattr(tune, "measure_product", lambda M, wt, dtype, own_ok: {"uk6x16": 1.0})
    monkeypatch.setattr(lanes_mod, "MIN_LANE_FLOPS", 0)
    monkeypatch.setattr(lanes_mod, "MIN_LANE_ELEMENTS", 0)
    monkeypatch.setattr(k_prefill, "SMALL_PAIRS", 0)
    monkeypatch.setattr(k_prefill, "MICRO", True)
    model = archc.load("examples/gpt2.arch", seed=3, config={
        "n_layer": 1, "d_model": 32, "n_head": 2, "vocab": 300, "n_ctx": 40})
    ids = np.arange(24).reshape(1, 24) % 300
    ex = model.compiled(2)
    if ex.lanes is None:
        pytest.skip("one core: no lanes")
    got = ex.run({"ids": ids})["logits"]
    prog = next(iter(ex._programs.values()))
    assert not prog.uses_blas and prog.uses_lanes
    assert prog.numba_threads == 1 and not prog.pacer.enabled
    np.testing.assert_allclose(got, model.run(ids=ids, executor="reference")["logits"],
                               atol=2e-5)


def test_rows_are_bucketed():
    assert [tune.bucket(n) for n in (1, 8, 9, 128, 129, 5000)] == [8, 8, 16, 128, 256, 1024]


def _archc_tune(tmp_path, *args):
    # `archc tune` in a process of its own, with a kernel cache of its own under tmp_path
    import os
    import subprocess
    import sys
    env = {**os.environ, "ARCHC_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "archc", "tune", *args], capture_output=True,
                       text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


TINY_GPT2 = ("examples/gpt2.arch", "--set", "n_layer=1", "--set", "d_model=32", "--set",
             "n_head=2", "--set", "vocab=50", "--set", "n_ctx=64", "--seq", "24",
             "--threads", "1")


def test_archc_tune_measures_and_shows_each_product(tmp_path):
    lines = _archc_tune(tmp_path, *TINY_GPT2)
    assert lines[0].split() == ["pass", "node", "product", "(M,", "K)", "x", "N", "kernel",
                                "GFLOP/s"]
    prompt = [ln.split() for ln in lines if ln.startswith("T=24")]
    assert {row[1] for row in prompt} >= {"layers.0.attn.qkv", "layers.0.mlp.ffn", "linear"}
    assert all(row[-2] in {"blas", *tune.KERNELS} and float(row[-1]) > 0 for row in prompt)
    assert any(ln.startswith("T=1 ") and "gemv_t" in ln for ln in lines)
    assert list((tmp_path / "cache" / "numba" / "tune").glob("*.json"))
    assert "every step runs a compiled kernel (none on its NumPy reference)" in lines


def test_archc_tune_shows_packed_products_measured_as_packed(tmp_path):
    lines = _archc_tune(tmp_path, *TINY_GPT2, "--weights-dtype", "int8")
    prompt = [ln.split() for ln in lines if ln.startswith("T=24")]
    assert {row[1] for row in prompt} >= {"layers.0.attn.qkv", "layers.0.mlp.ffn"}
    assert all(row[-3] in {"blas", *tune.KERNELS} and row[-2] == "(int8)"
               and float(row[-1]) > 0 for row in prompt)
    assert any(ln.startswith("T=1 ") and "gemv (int8)" in ln for ln in lines)


def test_archc_tune_lists_the_steps_on_the_reference(tmp_path):
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[T, 4]) {\n    return y = softmax(x, axis=0)\n}\n")
    lines = _archc_tune(tmp_path, str(src), "--seq", "8", "--threads", "1")
    assert "T=8     softmax (softmax) runs on its NumPy reference: compiled for a float x " \
           "over its last axis" in lines
