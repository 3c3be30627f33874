"""Bounded fuzzing, one target per kind of input (targets.py): mutated .arch sources, random
or corrupted .npy inputs, mutated safetensors headers, config.json files and checkpoint
indexes. archc must succeed or raise ArchError, never anything else. Derandomized (a fixed
seed), so CI repeats the same cases in about half a minute; tests/fuzz/fuzz_arch.py runs the
same targets for as long as you like."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))       # targets.py imports arch_mutations as a sibling
_spec = importlib.util.spec_from_file_location("fuzz_targets", HERE / "targets.py")
t = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(t)
m = t.m

# cases per target in CI: about 25 s in all on a busy 2-core machine (.npy cases run the
# compiled FFN, 0.6 s each)
BUDGET = {"arch": 150, "npy": 20, "safetensors": 60, "config": 60, "index": 60}


def bounded(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _target_test(kind: str):
    @bounded(BUDGET[kind])
    @given(seed=st.integers(0, 2 ** 32 - 1))
    def test(tmp_path_factory, seed):
        t.TARGETS[kind](random.Random(seed), tmp_path_factory.mktemp(kind))
    test.__name__ = f"test_{kind}_target"
    return test


test_arch_target = _target_test("arch")
test_npy_target = _target_test("npy")
test_safetensors_target = _target_test("safetensors")
test_config_target = _target_test("config")
test_index_target = _target_test("index")


def test_every_target_has_a_budget():
    assert sorted(BUDGET) == sorted(t.TARGETS)


def test_the_unmutated_checkpoint_loads(tmp_path):
    import archc
    (tmp_path / "tiny.arch").write_text(t.TINY)
    (tmp_path / "w.safetensors").write_bytes(t.safetensors_bytes(t.tensors(random.Random(0))))
    model = archc.load(tmp_path / "tiny.arch", weights=tmp_path / "w.safetensors")
    assert sorted(model.params) == ["emb", "layers.0.b", "layers.0.k", "layers.0.q",
                                    "layers.1.b", "layers.1.k", "layers.1.q"]


@pytest.mark.parametrize("kind, module, name", [
    ("arch", "archc.dsl.lower", "load_program"),
    ("safetensors", "archc.runtime.safetensors", "read_header"),
    ("config", "archc.runtime.checkpoint", "config_overrides"),
    ("index", "archc.runtime.checkpoint", "read_checkpoint"),
])
def test_the_oracle_catches_internal_errors(tmp_path, monkeypatch, kind, module, name):
    # a fuzz target that cannot fail is a defect: a broken reader must fail the target
    import importlib
    monkeypatch.setattr(importlib.import_module(module), name,
                        lambda *a, **k: (_ for _ in ()).throw(KeyError("x")))
    rng = random.Random(0)
    with pytest.raises(KeyError):
        for _ in range(20):        # some cases are refused before the reader is reached
            t.TARGETS[kind](rng, tmp_path)


def test_mutations_change_the_file():
    text = m.FFN.read_text()
    assert m.mutate(text, [("delete", 0, 0, "x", b"")]) != text.encode()
    assert m.mutate(text, [("huge", 0, 0, "x", b"")]).count(b"10**100") == 1
    assert b"\xff" in m.mutate(text, [("bytes", 3, 0, "x", b"\xff")])
    assert b'"\\x"' in m.mutate(text, [("insert", 3, 0, '"\\x"', b"")])


def test_json_mutations_reach_every_level():
    rng = random.Random(3)
    seen = {repr(t.mutate_json({"a": {"b": [1, {"c": 2}]}}, rng, 1)) for _ in range(200)}
    assert any("'c'" in s and "2}" not in s for s in seen)     # the deepest value changed
