"""docs/ARCHITECTURE.md's recipes, performed through the extension points they name: a
layer registered from a test module, a fusion rule in a table of our own, and the family
checklist (example, fixture, family test) checked for every fixture."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.compiler.patterns import Pat, Rule, RewriteLog, any_, rewrite
from archc.dsl.layers import LAYERS, layer
from archc.dsl.lower import lower

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scale_layer():
    @layer("Scale")
    def scale(ctx, x):
        """Scale(x): x * gain, a learned gain per channel"""
        gain = ctx.param("gain", (x.shape[-1],), init="ones")
        return ctx.op("mul", x, gain)
    yield
    LAYERS.pop("Scale")


def test_a_new_layer(scale_layer, tmp_path):
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[T, 3]) {\n    return Scale(x) as s\n}\n")
    m = archc.load(src)
    assert {n.attrs["name"] for n in m.graph.params()} == {"s.gain"}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = m.run(x=x, executor="reference").values()
    np.testing.assert_array_equal(y, x)          # the gain starts at ones
    bad = tmp_path / "bad.arch"
    bad.write_text("model m(x: float[T, 3]) {\n    return Scale(x, gian=2.0) as s\n}\n")
    with pytest.raises(archc.ArchError, match="no argument `gian`"):
        lower(bad)


def _fold_double_negation(g, m):
    # neg(neg(x)) -> x: the replacement is the inner argument itself
    return m["x"]


RULES_TOY = [Rule("neg+neg", Pat("neg", Pat("neg", any_("x"))), _fold_double_negation)]


def test_a_new_fusion_rule(tmp_path):
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[T, 3]) {\n    return neg(neg(x)) + x\n}\n")
    g = lower(src)
    out = g.copy()
    log = RewriteLog()
    rewrite(out, RULES_TOY, log)
    assert log.fired["neg+neg"] == 1
    assert [out.node(n).op for n in out.topo()].count("neg") == 0
    from archc.runtime.reference import run_reference
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (a,), (b,) = run_reference(g, {"x": x}, {}).values(), run_reference(out, {"x": x}, {}).values()
    np.testing.assert_array_equal(a, b)


def test_every_family_fixture_has_its_example():
    fixtures = sorted(p.name for p in (ROOT / "tests" / "fixtures" / "hf").iterdir() if p.is_dir())
    text = (ROOT / "tests" / "e2e" / "test_families_hf.py").read_text() + \
        (ROOT / "tests" / "e2e" / "test_families_hf_sparse.py").read_text()
    for fam in fixtures:
        # a variant fixture (a config flag's other value) names its family's example
        meta = json.loads((ROOT / "tests" / "fixtures" / "hf" / fam / "meta.json").read_text())
        example = ROOT / "examples" / f"{meta.get('example', fam)}.arch"
        assert example.is_file(), f"{fam}: no {example.relative_to(ROOT)}"
        assert f'"{fam}"' in text, f"{fam}: not in a family test's FAMILIES"
        assert "weights hf" in example.read_text()
