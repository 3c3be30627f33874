"""Repeated generation: a second `generate` with the same sizes builds no session and no
program (the first one's are reset and reused), and each call starts from an empty cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archc
from archc.runtime import executor as executor_mod
from archc.runtime import generate as generate_mod
from archc.api import executor
from archc.runtime.generate import generate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"


def _model(fam):
    if not (FIXTURES / fam / "io.npz").is_file():
        pytest.skip(f"no fixture for {fam}")
    model = archc.load(ROOT / "examples" / f"{fam}.arch", weights=FIXTURES / fam)
    return model, np.load(FIXTURES / fam / "io.npz")


@pytest.fixture
def builds(monkeypatch):
    """Counts of Programs and Sessions constructed."""
    counts = {"programs": 0, "sessions": 0}
    program_init = executor_mod.Program.__init__
    session_cls = generate_mod.Session

    def counting_program(self, *a, **k):
        counts["programs"] += 1
        program_init(self, *a, **k)

    def counting_session(*a, **k):
        counts["sessions"] += 1
        return session_cls(*a, **k)

    monkeypatch.setattr(executor_mod.Program, "__init__", counting_program)
    monkeypatch.setattr(generate_mod, "Session", counting_session)
    return counts


@pytest.mark.parametrize("fam", ["gpt2", "mistral", "t5"])
def test_second_generate_builds_nothing_and_starts_fresh(fam, builds):
    model, z = _model(fam)
    a, b = z["input_ids"][:1], z["input_ids"][1:2]
    assert not np.array_equal(a, b)
    first = model.generate(a, 8, keep_logits=True)
    assert first.cached and builds["sessions"] == 1 and builds["programs"] >= 2
    built = dict(builds)
    other = model.generate(b, 8, keep_logits=True)       # same sizes, other tokens
    again = model.generate(a, 8, keep_logits=True)
    assert builds == built, "a repeated generate rebuilt its session or programs"
    # no state leaks from one call into the next: the same prompt gives the same run
    np.testing.assert_array_equal(again.ids, first.ids)
    np.testing.assert_array_equal(np.stack(again.logits), np.stack(first.logits))
    # and the other prompt's run equals one on an executor that never decoded before
    fresh = generate(executor(model.graph, model.params), b, 8, keep_logits=True)
    np.testing.assert_array_equal(other.ids, fresh.ids)
    np.testing.assert_allclose(np.stack(other.logits), np.stack(fresh.logits), atol=1e-6)
    if "greedy_ids" in z:
        n = min(8, len(z["greedy_ids"]))
        np.testing.assert_array_equal(first.ids[0, :n], z["greedy_ids"][:n])


def test_sessions_are_kept_per_size_and_bounded(builds):
    model, z = _model("gpt2")
    a = z["input_ids"][:1]
    ab = z["input_ids"][:2]
    ex = model.compiled()
    r1 = model.generate(a, 4)
    model.generate(ab, 4)                                   # another batch: its own session
    assert builds["sessions"] == 2
    built = dict(builds)
    np.testing.assert_array_equal(model.generate(a, 4).ids, r1.ids)
    assert builds == built
    programs = [len(e._programs) for e in ex.variants()]    # decode steps; prompt passes
    assert len(programs) == 2
    model.generate(a, 4, max_seq=20)                        # a third size evicts the oldest
    assert builds["sessions"] == 3
    assert len(ex._sessions) == generate_mod.SESSIONS_KEPT
    live = {id(s) for s in ex._sessions.values()}
    for e in ex.variants():
        assert all(k[1] in live or k[1] == id(None) for k in e._programs)
    assert [len(e._programs) for e in ex.variants()] == programs   # 1 dropped, 1 built each
