"""runtime/lanes.py: lanes run side by side on their own threads, errors come back to the
caller, work is cut evenly; the column kernels a lane runs equal their refs."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from archc.runtime import lanes as lanes_mod
from archc.runtime.kernels import elementwise as k_ew, ffn as k_ffn
from archc.runtime.kernels.elementwise import ref_gelu, ref_silu
from archc.runtime.lanes import Lanes, poll_changed


def test_lanes_run_at_once_on_their_own_threads():
    lanes = Lanes.shared(2)
    seen, barrier = [], threading.Barrier(2, timeout=10)

    def meet(tag):
        # both lanes must be inside their calls at the same time to pass the barrier
        barrier.wait()
        seen.append((tag, threading.get_ident()))
    lanes.run([[(meet, ("a",))], [(meet, ("b",))]])
    assert sorted(t for t, _ in seen) == ["a", "b"]
    assert len({i for _, i in seen}) == 2
    assert ("a", threading.get_ident()) in seen            # lane 0 is the caller


def test_a_helper_lanes_error_reaches_the_caller_after_every_lane_ends():
    lanes = Lanes.shared(2)
    done = []

    def slow():
        time.sleep(0.05)
        done.append(1)

    def boom():
        raise ValueError("lane 1 failed")
    with pytest.raises(ValueError, match="lane 1 failed"):
        lanes.run([[(slow, ())], [(boom, ())]])
    assert done == [1]
    lanes.run([[(done.append, (2,))], [(done.append, (3,))]])      # still usable
    assert sorted(done) == [1, 2, 3]


def test_shared_items_each_run_once_by_whichever_lane_is_free():
    lanes = Lanes.shared(2)
    counter = np.zeros(1, np.int64)
    ran, lock = [], threading.Lock()

    def item(i, slow):
        if slow:
            time.sleep(0.02)          # this lane is held up: the other takes the rest
        with lock:
            ran.append((i, threading.get_ident()))
    for _ in range(3):                # the counter is the step's own, reset by each run
        ran.clear()
        lanes.run_shared([[(item, (i, i == 0))] for i in range(12)], counter)
        assert sorted(i for i, _ in ran) == list(range(12))
        slow_lane = next(t for i, t in ran if i == 0)
        assert sum(t != slow_lane for _, t in ran) >= 6


def test_a_shared_items_error_reaches_the_caller_and_the_other_items_still_run():
    lanes = Lanes.shared(2)
    counter = np.zeros(1, np.int64)
    ran = []

    def boom():
        raise ValueError("item failed")
    items = [[(ran.append, (i,))] for i in range(6)] + [[(boom, ())]] + \
        [[(ran.append, (i,))] for i in range(6, 9)]
    with pytest.raises(ValueError, match="item failed"):
        lanes.run_shared(items, counter)
    lanes.run_shared([[(ran.append, (9,))]], counter)               # still usable
    assert 9 in ran and set(range(6)) <= set(ran)


def test_column_items_cover_aligned_and_fewer_for_small_products():
    lanes = Lanes(2)
    r = lanes.column_items(2304, 1e9)
    assert len(r) == 2 * lanes_mod.ITEMS_PER_LANE
    assert r[0][0] == 0 and r[-1][1] == 2304
    assert all(a == b for (_, a), (b, _) in zip(r, r[1:]))
    assert all(c % lanes_mod.COLUMN_ALIGN == 0 for c, _ in r)
    assert len(lanes.column_items(2304, 3.5 * lanes_mod.MIN_ITEM_FLOPS)) == 3
    assert len(lanes.column_items(2304, lanes_mod.MIN_LANE_FLOPS)) == 2   # one a lane
    assert lanes.column_items(2304, 1e3) == [(0, 2304)]
    assert lanes.column_items(40, 1e9) == [(0, 16), (16, 40)]        # 16 columns at least


def test_column_ranges_cover_aligned_and_skip_small_products():
    lanes = Lanes(3)
    r = lanes.column_ranges(1000, 1e9)
    assert r[0][0] == 0 and r[-1][1] == 1000
    assert all(a == b for (_, a), (b, _) in zip(r, r[1:]))          # contiguous
    assert all(c % lanes_mod.COLUMN_ALIGN == 0 for c, _ in r)
    assert len(r) == 3 and max(b - a for a, b in r) - min(b - a for a, b in r) <= 16
    assert lanes.column_ranges(1000, 1e3) == [(0, 1000)]             # not worth a fork
    assert lanes.column_ranges(20, 1e9) == [(0, 20)]                 # narrower than 2 x 16
    assert lanes.row_ranges(7, 10**6) == [(0, 2), (2, 4), (4, 7)]
    assert lanes.row_ranges(7, 10) == [(0, 7)]


def test_lanes_dot_equals_numpy():
    lanes = Lanes.shared(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((96, 400)).astype(np.float32))
    out = np.empty((64, 400), np.float32)
    lanes.dot(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("c0,c1", [(0, 37), (16, 80), (48, 80)])
def test_bias_act_cols_touches_only_its_columns(dt, c0, c1):
    rng = np.random.default_rng(1)
    y = rng.standard_normal((5, 80)).astype(dt)
    bias = rng.standard_normal(80).astype(dt)
    got = y.copy()
    k_ew.bias_act_cols(got, bias, k_ew.ACT["gelu"], c0, c1)
    want = y.copy()
    want[:, c0:c1] = ref_gelu(y[:, c0:c1] + bias[c0:c1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_glu_cols_halves_make_the_whole(dt):
    rng = np.random.default_rng(2)
    F = 48
    h = rng.standard_normal((6, 2 * F)).astype(dt)
    out = np.full((6, F), np.nan, dt)
    for c0, c1 in ((0, 16), (16, F)):
        k_ffn.glu_cols(out, h, k_ew.ACT["silu"], c0, c1)
    np.testing.assert_allclose(out, ref_silu(h[:, :F]) * h[:, F:], rtol=1e-5, atol=1e-6)


def test_poll_changed_sees_a_write_from_another_thread():
    seq = np.zeros(1, np.int64)
    assert not poll_changed(seq, 0, 1000)                   # unchanged: gives up
    assert poll_changed(seq, 5, 1)                          # already different
    t = threading.Timer(0.01, lambda: seq.__setitem__(0, 1))
    t.start()
    # long enough to outlast the timer: the read is not hoisted out of the loop
    assert poll_changed(seq, 0, 10**12)
    t.join()


def test_lanes_work_when_handovers_block(monkeypatch):
    # no polling: every hand-over waits on the locks
    monkeypatch.setattr(lanes_mod, "SPIN_POLLS", 0)
    lanes = Lanes(2)
    out = []
    for i in range(20):
        lanes.run([[(out.append, (2 * i,))], [(out.append, (2 * i + 1,))]])
    assert sorted(out) == list(range(40))


def test_a_hand_over_the_helper_is_late_for_runs_on_the_caller(monkeypatch):
    # the helper's virtual CPU descheduled: it reaches its claim 20 ms late, by when the
    # caller, its own lane done, has run lane 1's calls itself
    real = lanes_mod.claim

    def late_in_helpers(seq, expected, new):
        if threading.current_thread().name.startswith("archc-lane"):
            time.sleep(0.02)
        return real(seq, expected, new)
    monkeypatch.setattr(lanes_mod, "claim", late_in_helpers)
    lanes = Lanes(2)
    ran = []
    for i in range(5):
        lanes.run([[(ran.append, ((0, i, threading.get_ident()),))],
                   [(ran.append, ((1, i, threading.get_ident()),))]])
    me = threading.get_ident()
    assert sorted(r[:2] for r in ran) == [(lane, i) for lane in (0, 1) for i in range(5)]
    assert all(t == me for _, _, t in ran)                  # all on the caller's thread
    assert lanes.helpers[0].stolen == 5
    time.sleep(0.15)                                        # the helper catches up, runs nothing
    assert len(ran) == 10 and lanes.helpers[0].error is None


@pytest.mark.parametrize("polls", [0, 50, lanes_mod.SPIN_POLLS])
def test_every_hand_over_runs_once_whoever_takes_it(monkeypatch, polls):
    # helper and caller race for each hand-over (blocking, short and long polling)
    monkeypatch.setattr(lanes_mod, "SPIN_POLLS", polls)
    lanes = Lanes(3)
    counts = np.zeros((3, 300), np.int64)

    def tick(lane, i):
        counts[lane, i] += 1
    for i in range(300):
        lanes.run([[(tick, (k, i))] for k in range(3)])
    assert (counts == 1).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_lanes_still_run_in_a_forked_child():
    lanes = Lanes.shared(2)
    lanes.run([[(len, ((),))], [(len, ((),))]])            # helpers running in the parent
    pid = os.fork()
    if pid == 0:                                            # child: new helpers, no hang
        signal.alarm(20)                                    # a hang kills the child
        ok = []
        try:
            lanes.run([[(ok.append, (0,))], [(ok.append, (1,))]])
        finally:
            os._exit(0 if sorted(ok) == [0, 1] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
