"""Property: for random small graphs of primitive ops, the whole pipeline (verifier on)
preserves every output, and the memory plan never overlaps live values."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from archc.compiler.ir import emit
from archc.compiler.passes.plan_memory import overlaps
from archc.compiler.pipeline import run_pipeline
from archc.dsl.graph import Graph
from archc.runtime.reference import run_reference
from archc.runtime.weights import init_params

SHAPE = (2, 3, 4)
UNARY = ("relu", "gelu", "silu", "tanh", "sigmoid", "neg", "gelu_tanh")
STEPS = ("binary", "unary", "layernorm", "rmsnorm", "linear", "glu", "dropout", "transpose2",
         "scale")


def _build(draw) -> Graph:
    g = Graph("prop")
    n_params = 0

    def param(shape, init="normal"):
        nonlocal n_params
        n_params += 1
        name = f"p{n_params}"
        return g.add("param", [], shape=shape, dtype="float32", scope="",
                     attrs={"name": name, "init": init, "std": 0.5}, name=name)

    for name in ("x", "r"):
        g.inputs.append(g.add("input", [], shape=SHAPE, dtype="float32", attrs={"name": name},
                              name=name))
    vals = list(g.inputs)
    pick = lambda: vals[draw(st.integers(0, len(vals) - 1))]   # noqa: E731
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(STEPS))
        scope = f"l{i}"
        if kind == "binary":
            op = draw(st.sampled_from(("add", "mul", "sub")))
            v = emit(g, op, [pick(), pick()], scope=scope, span=None)
        elif kind == "unary":
            v = emit(g, draw(st.sampled_from(UNARY)), [pick()], scope=scope, span=None)
        elif kind in ("layernorm", "rmsnorm"):
            a = pick()
            if draw(st.booleans()):
                a = emit(g, "add", [a, pick()], scope=scope, span=None)   # a residual
            args = [a, param((4,), "ones")]
            if kind == "layernorm" and draw(st.booleans()):
                args.append(param((4,)))
            v = emit(g, kind, args, scope=scope, span=None)
        elif kind == "linear":
            v = emit(g, "matmul", [pick(), param((4, 4))], scope=scope, span=None)
            if draw(st.booleans()):
                v = emit(g, "add", [v, param((4,))], scope=scope, span=None)
            if draw(st.booleans()):
                v = emit(g, draw(st.sampled_from(UNARY[:5])), [v], scope=scope, span=None)
        elif kind == "glu":
            a = pick()
            gate = emit(g, "matmul", [a, param((4, 4))], scope=scope, span=None)
            gate = emit(g, draw(st.sampled_from(UNARY[:5])), [gate], scope=scope, span=None)
            up = emit(g, "matmul", [a, param((4, 4))], scope=scope, span=None)
            v = emit(g, "mul", [gate, up], scope=scope, span=None)
        elif kind == "dropout":
            v = emit(g, "dropout", [pick()], {"rate": 0.5}, scope=scope, span=None)
        elif kind == "transpose2":
            t = emit(g, "transpose", [pick()], {"perm": [1, 0, 2]}, scope=scope, span=None)
            v = emit(g, "transpose", [t], {"perm": [1, 0, 2]}, scope=scope, span=None)
        else:
            c = g.add("const", [], shape=(), dtype="float32",
                      attrs={"value": np.array(draw(st.sampled_from((0.5, 1.0, 2.0))),
                                               np.float32)}, name="c")
            v = emit(g, draw(st.sampled_from(("mul", "add"))), [pick(), c], scope=scope,
                     span=None)
        vals.append(v)
    g.outputs["out"] = vals[-1]
    if draw(st.booleans()):
        g.outputs["extra"] = pick()       # an earlier value also escapes
    return g


@st.composite
def graphs(draw):
    return _build(draw)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 2**16))
def test_pipeline_preserves_random_graphs(g, seed):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal(SHAPE).astype(np.float32),
              "r": rng.standard_normal(SHAPE).astype(np.float32)}
    params = init_params(g, seed)
    want = run_reference(g, inputs, params)
    res = run_pipeline(g, verify=True)
    got = run_reference(res.graph, inputs, params)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    assert overlaps(res.graph.meta["memory_plan"]) == []
