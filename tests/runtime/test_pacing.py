"""Threads on a shared machine: the default count leaves out cores other processes are
busy on, and a repeated program (a decode step) switches between all threads and one by
timing. Correctness only: speed is measured in benchmarks/, never asserted here."""
from __future__ import annotations

import numpy as np
import pytest

from archc.runtime import jit


def drive(p: jit.Pacer, cost: dict[int, float], runs: int) -> list[int]:
    used = []
    for _ in range(runs):
        n = p.threads()
        used.append(n)
        p.record(n, cost[n])
    return used


def test_the_pacer_keeps_all_threads_when_they_are_faster():
    p = jit.Pacer(2)
    used = drive(p, {2: 1.0, 1: 1.9}, 400)
    assert p.current == 2
    probes = used.count(1)
    assert 3 <= probes <= 12          # growing gaps: a quiet machine pays a few probes


def test_the_pacer_moves_to_one_thread_when_a_core_is_busy_and_back_when_it_is_free():
    p = jit.Pacer(2)
    drive(p, {2: 1.0, 1: 1.9}, 50)
    drive(p, {2: 6.0, 1: 1.9}, 40)      # another process takes a core
    assert p.current == 1
    drive(p, {2: 1.0, 1: 1.9}, 200)     # and leaves
    assert p.current == 2


def test_the_pacer_is_off_for_one_thread_and_by_environment(monkeypatch):
    assert drive(jit.Pacer(1), {1: 1.0}, 20) == [1] * 20
    monkeypatch.setenv("ARCHC_PACE", "0")
    assert drive(jit.Pacer(2), {2: 9.0, 1: 1.0}, 50) == [2] * 50


@pytest.mark.parametrize("running, cores, want", [([1, 1, 1], 2, 2), ([2, 3, 2], 2, 1),
                                                  ([5, 5, 5], 2, 1), ([2, 1, 2], 2, 2)])
def test_free_cores_leaves_out_other_runnable_tasks(monkeypatch, running, cores, want):
    seq = iter(running * 3)
    monkeypatch.setattr(jit, "_running", lambda: next(seq))
    monkeypatch.setattr(jit, "max_threads", lambda: cores)
    assert jit.free_cores(samples=3, gap=0) == want
    monkeypatch.setenv("ARCHC_THREADS_FREE", "0")
    assert jit.free_cores(samples=3, gap=0) == cores


def test_a_decode_program_gives_the_same_tokens_whatever_the_pacer_chooses(monkeypatch):
    import archc
    from pathlib import Path
    from archc.runtime.generate import generate
    root = Path(__file__).resolve().parents[2]
    model = archc.load(root / "examples" / "gpt2.arch", config={"n_layer": 2, "d_model": 64,
                                                                "n_head": 4, "vocab": 97})
    prompt = np.array([[1, 2, 3, 4]])
    monkeypatch.setenv("ARCHC_PACE", "0")
    fixed = archc.api.executor(model.graph, model.params, threads=2)
    want = generate(fixed, prompt, 12).ids
    monkeypatch.setattr(jit.Pacer, "FIRST_PROBE", 1)      # switch as often as it can
    monkeypatch.setattr(jit.Pacer, "WARMUP", 0)
    monkeypatch.delenv("ARCHC_PACE")
    paced = archc.api.executor(model.graph, model.params, threads=2)
    np.testing.assert_array_equal(generate(paced, prompt, 12).ids, want)
