"""The op registry is the single list: every stage finds each op's piece, no stage names an
op the registry does not know, and a new op registered through the documented extension
points runs through every stage with nothing else edited."""
from __future__ import annotations

import numpy as np
import pytest

from archc.dsl.ops import ACTIVATION, OPS, TRAITS, TT, activations, op, ops_with
from archc.dsl.scratch import Arg
from archc.runtime.kernels import REFERENCE
from archc.runtime.kernels import elementwise as k_ew
from archc.runtime.steps import STEPS, steps_for


def test_every_op_has_a_reference_and_compiled_steps():
    assert sorted(set(OPS) - set(REFERENCE)) == []
    assert sorted(set(OPS) - set(STEPS)) == []


def test_no_stage_names_an_unknown_op():
    for table in (REFERENCE, STEPS):
        assert sorted(set(table) - set(OPS)) == []


def test_traits_are_consistent():
    for name, spec in OPS.items():
        assert set(spec.traits) <= set(TRAITS), name
        rows = spec.traits.get("per_position")
        if isinstance(rows, tuple):
            assert spec.variadic or all(i < len(spec.inputs) for i in rows), name
    # an activation is a fused epilogue: the compiled activation kernel has its branch
    assert activations() and all(a in k_ew.ACT for a in activations())
    assert set(activations()) <= set(ops_with("contiguous_rows"))
    strided = Arg((3, 4), "float32", "S")
    for name in ops_with("contiguous_rows"):
        assert OPS[name].scratch(None, [strided]), f"{name}: a strided input's copy is planned"


def test_registering_an_op_twice_or_with_an_unknown_trait_fails():
    with pytest.raises(RuntimeError, match="registered twice"):
        op("relu", inputs=("x",))(lambda x: x)
    with pytest.raises(RuntimeError, match="unknown trait"):
        op("never_made", inputs=("x",), traits=("shiny",))


@pytest.fixture
def softsign():
    """softsign(x) = x / (1 + |x|), added the way docs/ARCHITECTURE.md says: a declaration
    with its shape rule and traits, a `ref_`, and compiled steps. Removed afterwards."""
    @op("softsign", inputs=("x",), flops=lambda out, x: 3,
        traits={k: v for k, v in ACTIVATION.items() if k != "activation"})
    def infer(x: TT) -> TT:
        return x

    REFERENCE["softsign"] = lambda x: x / (1 + np.abs(x))

    @steps_for("softsign")
    def build(P, node, args, attrs):
        out = P.output()
        x = P.contiguous(args[0])
        P.step(lambda: np.divide(x, 1 + np.abs(x), out=out))
        return out

    yield "softsign"
    for table in (OPS, REFERENCE, STEPS):
        table.pop("softsign", None)


def test_a_new_op_runs_through_every_stage(softsign, tmp_path):
    import archc
    from archc.compiler.dump import dump_text
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[T, 4]) {\n"
                   "    layer a {\n        h = softsign(transpose(x @ transpose(x)))\n    }\n"
                   "    return h\n}\n")
    m = archc.load(src)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    want = (x @ x.T) / (1 + np.abs(x @ x.T))
    np.testing.assert_allclose(m.run(x=x, executor="reference")["h"], want, rtol=1e-6)
    ex = m.compiled()
    np.testing.assert_allclose(ex.run({"x": x})["h"], want, rtol=1e-6)
    assert all(not p.unplanned for p in ex._programs.values())    # its scratch was planned
    assert "softsign" in dump_text(m.graph)


# Tables keyed by op name that are an op's implementation, found by its name (a kernel
# branch, a NumPy ufunc); the registry is checked against them above, not the other way.
IMPLEMENTATION_TABLES = {"runtime/kernels/elementwise.py:ACT",
                         "runtime/kernels/elementwise.py:BINARY",
                         "runtime/steps/elementwise.py:_UFUNCS",
                         "runtime/steps/elementwise.py:_UNARY",
                         # an op's ONNX form, or why it has none (tests/archc/test_onnx_rules.py
                         # walks the registry against them)
                         "archc/onnx_rules.py:BINARY", "archc/onnx_rules.py:UNARY",
                         "archc/onnx_rules.py:NOT_EXPORTABLE"}


def test_no_stage_keeps_its_own_list_of_ops():
    """A module-level tuple, set, list or dict of op names outside the registry is a second
    place that says what an op is: the passes and the runtime ask the traits instead."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    found = []
    for stage in ("compiler", "runtime", "archc"):
        for path in sorted((root / stage).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                    continue
                value = node.value
                elts = value.keys if isinstance(value, ast.Dict) else \
                    getattr(value, "elts", [])
                names = [e.value for e in elts if isinstance(e, ast.Constant)
                         and isinstance(e.value, str)]
                if len(names) >= 2 and all(n in OPS for n in names):
                    target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                    where = f"{path.relative_to(root)}:{getattr(target, 'id', '?')}"
                    if where not in IMPLEMENTATION_TABLES:
                        found.append(where)
    assert found == []
