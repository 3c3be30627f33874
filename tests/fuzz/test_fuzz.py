"""Bounded fuzzing: mutated examples/*.arch files and random or corrupted .npy inputs make
archc succeed or raise ArchError, never anything else. Derandomized, so the suite is
repeatable; tests/fuzz/fuzz_arch.py runs the same oracle for as long as you like."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

_spec = importlib.util.spec_from_file_location(
    "arch_mutations", Path(__file__).with_name("arch_mutations.py"))
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)

def bounded(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
step = st.tuples(st.sampled_from(m.OPS), st.integers(0, 10_000), st.integers(0, 10_000),
                 st.sampled_from(m.VOCAB), st.binary(min_size=1, max_size=6))


@bounded(200)
@given(source=st.sampled_from(m.EXAMPLES), steps=st.lists(step, min_size=1, max_size=4),
       n=st.integers(0, 2**31))
def test_mutated_arch_files(tmp_path_factory, source, steps, n):
    path = tmp_path_factory.mktemp("fuzz") / f"m{n % 1000}.arch"
    path.write_bytes(m.mutate(source.read_text(), steps))
    m.check_arch(path, source)


@bounded(60)
@given(seed=st.integers(0, 2**32 - 1), corrupt=st.booleans())
def test_random_npy_inputs(tmp_path_factory, seed, corrupt):
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, m.random_array(rng))
    if corrupt:
        path.write_bytes(m.corrupt(path.read_bytes(), rng))
    m.check_npy(path)


def test_the_oracle_catches_internal_errors(tmp_path, monkeypatch):
    # a fuzz test that cannot fail is a defect: a broken lowering must fail the oracle
    import archc.dsl.lower as lower
    monkeypatch.setattr(lower, "load_program", lambda *a: (_ for _ in ()).throw(KeyError("x")))
    path = tmp_path / "a.arch"
    path.write_text(m.FFN.read_text())
    try:
        m.check_arch(path, m.FFN)
    except KeyError:
        return
    raise AssertionError("the oracle let a KeyError through")


def test_mutations_change_the_file():
    text = m.FFN.read_text()
    assert m.mutate(text, [("delete", 0, 0, "x", b"")]) != text.encode()
    assert m.mutate(text, [("huge", 0, 0, "x", b"")]).count(b"10**100") == 1
    assert b"\xff" in m.mutate(text, [("bytes", 3, 0, "x", b"\xff")])
