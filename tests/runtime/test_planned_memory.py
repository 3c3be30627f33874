"""The executor allocates exactly what the compiler planned, and nothing per op once built.

- a program's activation arena is the memory plan's peak that `archc dump` prints for the
  same sizes, and a decoding session's KV arena is the KV plan's total (`dump --kv`);
- running a built program (a forward, a cached decode step) creates no arrays: every
  step's transient allocations (Python objects of the call) stay below 2 KiB, half the
  smallest activation (NumPy arrays are traced by tracemalloc; Numba kernels here take all
  their scratch as arguments).
"""
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.cli import main
from archc.api import executor
from archc.runtime.kv_cache import Session

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "gpt2": dict(n_layer=2, d_model=64, n_head=4, vocab=64, n_ctx=32),
    "mistral": dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=96, vocab=64, window=8),
    "mixtral": dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab=64,
                    experts=4),
}


def _load(fam, **over):
    return archc.load(ROOT / "examples" / f"{fam}.arch", config={**MODELS[fam], **over})


def _dump(fam, capsys, B, S) -> tuple[int, int]:
    args = ["dump", str(ROOT / "examples" / f"{fam}.arch"), "-O", "--kv", "--batch", str(B),
            "--max-seq", str(S)]
    for k, v in MODELS[fam].items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    peak = re.search(r"planned peak (?:[\d.]+ \w+ \()?([\d,]+) B", out).group(1)
    kv = re.search(r"^total: ([\d,]+) bytes", out, re.M).group(1)
    return int(peak.replace(",", "")), int(kv.replace(",", ""))


@pytest.mark.parametrize("fam", list(MODELS))
def test_arenas_are_the_dumped_plans(fam, capsys):
    B, S = 2, 16
    peak, kv_total = _dump(fam, capsys, B, S)
    model = _load(fam)
    ex = executor(model.graph, model.params)
    ids = np.arange(B * S).reshape(B, S) % 64
    ex.run({"ids": ids})
    prog = ex.program({"B": B, "T": S})
    assert prog.arena.nbytes == prog.arena_bytes == peak
    assert not prog.unplanned
    sess = Session(ex, B, S)
    assert sess.arena.nbytes == sess.nbytes == kv_total
    # the session's programs are planned with its KV plan, and use nothing else
    sess.forward({"ids": ids[:, :5]}, {"B": B, "T": 5})
    sess.forward({"ids": ids[:, 5:6]}, {"B": B, "T": 1})
    for T in (5, 1):
        assert not ex.program({"B": B, "T": T}, sess).unplanned


def _step_allocations(prog, inputs) -> dict[str, int]:
    """Peak bytes traced while each step runs, for steps above 2 KiB."""
    prog.execute(inputs)                      # warm: compiled, first-call caches filled
    found = {}
    tracemalloc.start()
    try:
        for s in prog.steps:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            s.fn(*s.args)
            extra = tracemalloc.get_traced_memory()[1] - before
            if extra > 2048:
                found[f"{s.node} ({s.op})"] = extra
    finally:
        tracemalloc.stop()
    return found


def test_the_plan_and_the_run_agree_on_the_lanes(capsys):
    # per-lane scratch is planned for every lane a run on this machine may have (Numba's
    # thread limit, read without Numba), and `dump --lanes N` plans it for N
    from archc.runtime import budget, jit
    assert budget.plan_lanes() == jit.max_threads()
    peaks = {}
    for lanes in (1, 3):
        args = ["dump", str(ROOT / "examples" / "gpt2.arch"), "-O", "--lanes", str(lanes)]
        for k, v in MODELS["gpt2"].items():
            args += ["--set", f"{k}={v}"]
        assert main(args) == 0
        out = capsys.readouterr().out
        peaks[lanes] = int(re.search(r"planned peak (?:[\d.]+ \w+ \()?([\d,]+) B", out)
                           .group(1).replace(",", ""))
    assert peaks[3] > peaks[1]              # attention's probabilities and panels, per lane


def test_the_allocation_probe_sees_an_allocating_step():
    class Fake:
        steps = [type("S", (), {"fn": staticmethod(lambda: np.ones(2048, np.float32)),
                                "args": (), "node": "n", "op": "ones"})]

        def execute(self, inputs):
            pass
    assert _step_allocations(Fake(), {}) == {"n (ones)": pytest.approx(8192, abs=512)}


@pytest.mark.parametrize("fam", list(MODELS))
def test_steady_state_allocates_nothing(fam):
    # d_model 128, B 8: the smallest activation of a decode step is 4 KiB
    model = _load(fam, d_model=128)
    ex = executor(model.graph, model.params)
    B = 8
    ids = np.arange(B * 12).reshape(B, 12) % 64
    prog = ex.program({"B": B, "T": 12})
    prog.compile()
    assert _step_allocations(prog, {"ids": ids}) == {}
    sess = Session(ex, B, 16)
    sess.forward({"ids": ids}, {"B": B, "T": 12})
    step = ex.program({"B": B, "T": 1}, sess)
    sess.forward({"ids": ids[:, :1]}, {"B": B, "T": 1})
    assert _step_allocations(step, {"ids": ids[:, :1]}) == {}
