"""Lanes: a program's cores as persistent threads that each run their share of a step.

    lanes = Lanes.shared(2)                 # lane 0 is the caller, lanes 1.. are helpers
    lanes.run(([(fn, args), ...],           # lane 0's calls
               [(fn, args), ...]))          # lane 1's, at the same time; returns when all end
    lanes.run_shared(items, counter)        # items (lists of calls) taken by whichever lane
                                            # is free: a matrix product's column ranges

Why: on this project's 2-core machines a prompt's matrix products with OpenBLAS's own
threads reached ~150 GFLOP/s at T=128 (OpenBLAS splits each call's 128 rows between its
threads and wakes them for every call), and attention's many small per-head products far
less. One product per core on a column range of the weight (archc's gemm_nt where it
applies, kernels/linalg.py) reaches 175-180 GFLOP/s in a pass, and per-head products
shared out by head run undisturbed on each core. So a multi-threaded program keeps
OpenBLAS at one thread and cuts its heavy steps into lanes (runtime/steps/ says how each
op is cut): each lane writes its own part of the output, and a step ends when every lane
has finished (a fork-join).

Everything a lane calls releases the GIL while it computes: BLAS through NumPy, and Numba
kernels compiled with nogil=True, so the lanes really run side by side. A lane's Numba
kernels run on one thread (each helper sets that once). An error in a helper is raised in
the caller after every lane has stopped.

Handing work over: a sequence number per direction, which the waiting side polls for up to
SPIN_POLLS reads (about a millisecond) in compiled code without the GIL, then a plain lock
it blocks on. Blocking alone cost 68 us per fork-join on these virtual machines (waking a
halted virtual CPU), polling 3 us; a pass has about 90 fork-joins. A hand-over the helper
has not started by the time the caller's own lane is done, the caller takes back and runs
(work stealing, _Helper): after the machine sat idle for 0.3 s the helper's virtual CPU
took 1-2 ms to run it, fork-join after fork-join for up to ~40 ms, which made a small
model's prompt pass 5x slower than on one lane.
"""
from __future__ import annotations

import _thread
import os
import threading
import weakref
from typing import Callable, Sequence

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import jit
from .jit import njit

Calls = Sequence[tuple[Callable, tuple]]
# polls of a sequence number before blocking on the lock (~0.3-1 ns each here)
SPIN_POLLS = 2_000_000

# a product smaller than this (2*M*K*N) is not worth a fork-join: it runs on one lane
MIN_LANE_FLOPS = 4_000_000
# lanes cut a product's output columns at multiples of this (64-byte lines of float32)
COLUMN_ALIGN = 16
# a product shared out as items (run_shared) is cut into this many per lane, each at
# least MIN_ITEM_FLOPS (~0.3 ms here; a Python call per item): with static halves, a core
# slowed by another process held the other back. Two lanes, same process, alternating (AMD
# EPYC Zen 3, GPT-2's shapes at M = 128 and 512): static/items 0.98-1.05 quiet, 1.06-1.26
# with a busy loop beside them; 8 items a lane no better quiet than 4
ITEMS_PER_LANE = 4
MIN_ITEM_FLOPS = 16_000_000
# a row-wise kernel over fewer elements than this runs on one lane
MIN_LANE_ELEMENTS = 32_768


@intrinsic
def _load_acquire(typingctx, arr, idx):
    # arr[idx] read with acquire ordering: a load the compiler may not hoist out of a loop
    sig = types.int64(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)
    return sig, codegen


@intrinsic
def _compare_and_swap(typingctx, arr, idx, expected, new):
    # atomically: if arr[idx] == expected, arr[idx] = new; True if it swapped
    sig = types.boolean(arr, idx, expected, new)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        res = builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(res, 1)
    return sig, codegen


@intrinsic
def _fetch_add(typingctx, arr, idx, value):
    # atomically: arr[idx] += value, returning the value before
    sig = types.int64(arr, idx, value)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "acq_rel")
    return sig, codegen


@njit(cache=True, nogil=True)
def take(counter):
    # the next item's number (counter[0], then one more): each number to one lane only
    return _fetch_add(counter, 0, 1)


def run_items(items: Sequence[Calls], counter: np.ndarray) -> None:
    """Run items (each a list of calls) until none is left, taking them one at a time
    from `counter`, which every lane of the step shares."""
    n = len(items)
    while True:
        i = take(counter)
        if i >= n:
            return
        for fn, args in items[i]:
            fn(*args)


@njit(cache=True, nogil=True)
def claim(seq, expected, new):
    # seq[0]: expected -> new, True for the one thread that did it
    return _compare_and_swap(seq, 0, expected, new)


@njit(cache=True, nogil=True)
def poll_changed(seq, seen, polls):
    # True as soon as seq[0] != seen, False after `polls` reads; the GIL is released
    for _ in range(polls):
        if _load_acquire(seq, 0) != seen:
            return True
    return False


def run_calls(calls: Calls) -> None:
    for fn, args in calls:
        fn(*args)


class _Helper:
    """One helper thread. Every hand-over has a number n (go_seq); whoever claims it first
    (claimed: n - 1 -> n) runs its calls: the helper, or the caller once its own lane is
    done. A helper whose virtual CPU is slow to run (descheduled by the host, or waking
    from idle: 1-2 ms each time here after 0.3 s idle) costs one lane's speed, not a wait
    per fork-join."""

    def __init__(self, index: int):
        self.go = _thread.allocate_lock()         # released: "there may be a new hand-over"
        self.done = _thread.allocate_lock()       # released by the helper after its run
        self.go.acquire()
        self.done.acquire()
        self.go_seq = np.zeros(1, np.int64)       # bumped by the caller per hand-over
        self.claimed = np.zeros(1, np.int64)      # the last hand-over someone took
        self.done_seq = np.zeros(1, np.int64)     # the last hand-over run to its end
        self.calls: Calls = ()
        self.error: BaseException | None = None
        self.stolen = 0                           # hand-overs the caller ran itself
        self.ready = threading.Event()            # set once the thread is set up
        self.thread = threading.Thread(target=self._loop, name=f"archc-lane-{index}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        jit.numba.set_num_threads(1)      # thread-local in Numba: this lane's kernels
        probe = np.zeros(1, np.int64)     # the hand-over kernels loaded now, not mid-step
        poll_changed(probe, 0, 0)
        claim(probe, 1, 1)
        self.ready.set()
        seen = 0
        while True:
            poll_changed(self.go_seq, seen, SPIN_POLLS)
            self.go.acquire()
            seen = int(self.go_seq[0])
            if not claim(self.claimed, seen - 1, seen):
                continue                  # the caller ran it (or a signal left over)
            self._run(self.calls, seen)
            self.done.release()

    def _run(self, calls: Calls, n: int) -> None:
        try:
            run_calls(calls)
        except BaseException as e:  # noqa: BLE001  (re-raised in the caller)
            self.error = e
        self.calls = ()                   # no reference to a program's arrays kept
        self.done_seq[0] = n

    def start(self, calls: Calls) -> None:
        self.calls = calls
        self.go_seq[0] += 1
        if self.go.locked():              # signals coalesce: the helper reads go_seq
            self.go.release()

    def finish(self) -> None:
        """The caller, its own lane done: run the hand-over here if the helper has not
        taken it yet, else wait for the helper to end it."""
        n = int(self.go_seq[0])
        if claim(self.claimed, n - 1, n):
            self.stolen += 1
            self._run(self.calls, n)
            return
        poll_changed(self.done_seq, n - 1, SPIN_POLLS)
        self.done.acquire()


class Lanes:
    """`n` lanes: the calling thread and n - 1 helper threads."""

    _shared: dict[int, "Lanes"] = {}
    _shared_lock = threading.Lock()
    _every: "weakref.WeakSet[Lanes]" = weakref.WeakSet()

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self.helpers: list[_Helper] = []  # started by the first run that needs them
        self._busy = threading.Lock()     # one fork-join at a time (callers on other threads wait)
        Lanes._every.add(self)

    def _start_helpers(self) -> None:
        # waits until every helper has set itself up: with work stealing a helper might
        # otherwise not run at all during its first steps, and set up (allocate) later,
        # in the middle of some other step
        self.helpers = [_Helper(i) for i in range(1, self.n)]
        for helper in self.helpers:
            helper.ready.wait()

    @classmethod
    def _after_fork(cls) -> None:
        # a forked child has only the forking thread: every Lanes forgets the parent's
        # helpers (its next run starts its own) and takes fresh locks, which the parent's
        # threads may have held at the fork
        cls._shared_lock = threading.Lock()
        for lanes in list(cls._every):
            lanes._busy = threading.Lock()
            lanes.helpers = []

    @classmethod
    def shared(cls, n: int) -> "Lanes":
        """The process's lanes for n cores (helper threads are made once and kept)."""
        with cls._shared_lock:
            lanes = cls._shared.get(n)
            if lanes is None:
                lanes = cls._shared[n] = cls(n)
            return lanes

    def run(self, per_lane: Sequence[Calls]) -> None:
        """Run per_lane[k] on lane k, all at once; return when all are done."""
        if len(per_lane) > self.n:
            raise ValueError(f"{len(per_lane)} lanes of work for {self.n} lanes")
        with self._busy:
            if not self.helpers and any(per_lane[1:]):
                self._start_helpers()
            started = []
            for helper, calls in zip(self.helpers, per_lane[1:]):
                if calls:
                    helper.start(calls)
                    started.append(helper)
            error = None
            try:
                run_calls(per_lane[0] if per_lane else ())
            finally:
                for helper in started:
                    helper.finish()
                    if helper.error is not None and error is None:
                        error = helper.error
                    helper.error = None
            if error is not None:
                raise error

    def run_shared(self, items: Sequence[Calls], counter: np.ndarray) -> None:
        """Run the items (each a list of calls, independent of the others) on every lane
        at once, each lane taking the next item as it finishes one: a lane on a core the
        machine's other work slows takes fewer. Returns when all are done. `counter` (one
        int64, the step's own) counts the items taken."""
        counter[0] = 0
        work = [(run_items, (items, counter))]
        self.run([work] * min(self.n, len(items)))

    def is_lane_step(self, fn) -> bool:
        return fn == self.run or fn == self.run_shared

    # ----- cutting work into lanes
    def column_ranges(self, n_cols: int, flops: float) -> list[tuple[int, int]]:
        """[c0, c1) per lane for a product with n_cols output columns: aligned cuts, one
        range (no fork-join) when the product is small."""
        return _aligned_cuts(n_cols, self.n if flops >= MIN_LANE_FLOPS else 1)

    def column_items(self, n_cols: int, flops: float) -> list[tuple[int, int]]:
        """[c0, c1) of the items a product's output columns are cut into for run_shared:
        ITEMS_PER_LANE per lane, fewer when an item would be under MIN_ITEM_FLOPS; one
        range when the product is too small to share."""
        k = min(self.n * ITEMS_PER_LANE, max(self.n, int(flops // MIN_ITEM_FLOPS)))
        return _aligned_cuts(n_cols, k if flops >= MIN_LANE_FLOPS else 1)

    def row_ranges(self, n_rows: int, elements: int) -> list[tuple[int, int]]:
        """[r0, r1) per lane for a row-wise kernel over n_rows rows (`elements` in all)."""
        k = max(1, min(self.n if elements >= MIN_LANE_ELEMENTS else 1, n_rows))
        cuts = [n_rows * i // k for i in range(k + 1)]
        return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]

    def dot(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """out = a @ b for 2-D a (M, K), b (K, N), out (M, N) C-contiguous, cut into
        column ranges (a step that makes its products as it runs: MoE's experts)."""
        ranges = self.column_ranges(b.shape[1], 2.0 * a.shape[0] * a.shape[1] * b.shape[1])
        if len(ranges) == 1:
            np.dot(a, b, out)
            return
        self.run([[(np.matmul, (a, b[:, c0:c1], out[:, c0:c1]))] for c0, c1 in ranges])


def _aligned_cuts(n_cols: int, k: int) -> list[tuple[int, int]]:
    # n_cols cut into k ranges (fewer where a range would be under COLUMN_ALIGN), at
    # multiples of COLUMN_ALIGN
    k = max(1, min(k, n_cols // COLUMN_ALIGN))
    if k == 1:
        return [(0, n_cols)]
    cuts = [0] + [min(n_cols, round(n_cols * i / k / COLUMN_ALIGN) * COLUMN_ALIGN)
                  for i in range(1, k)] + [n_cols]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Lanes._after_fork)

