"""plan_memory: live values never share bytes, element-wise ops reuse a dying input's
slot, outputs/params stay outside, and the peak beats the naive sum on real models."""
from __future__ import annotations

from pathlib import Path

import pytest

from archc.compiler.passes.plan_memory import overlaps, plan, plan_memory
from archc.compiler.sizes import ALIGN
from archc.compiler.pipeline import run_pipeline
from archc.dsl.lower import lower

from .conftest import small_config

ROOT = Path(__file__).resolve().parents[2]


def test_elementwise_chain_runs_in_place(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 16]) {
            a = exp(x)
            b = tanh(a)
            c = relu(b)
            d = c * 2.0
            return d + x
        }
    """))
    mp = plan(g, {"T": 4})
    n = 4 * 16 * 4                                       # one float[4, 16] value
    # exp allocates; tanh, relu, mul write over their dying input; the final add is an output
    assert mp.inplace == {"tanh": "exp", "relu": "tanh", "mul": "relu"}
    assert mp.slots["exp"] == mp.slots["mul"] == (0, n)
    assert mp.arena_bytes == n and mp.naive_bytes == 4 * n
    assert mp.outside["add"] == "output" and mp.outside["x"] == "input"
    assert overlaps(mp) == []


def test_live_values_get_distinct_slots(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 16]) {
            a = exp(x)
            b = tanh(x)
            c = a * b
            return c + a
        }
    """))
    mp = plan(g, {"T": 3})
    n = 3 * 16 * 4
    assert mp.slots["exp"][0] != mp.slots["tanh"][0]
    assert mp.arena_bytes == 2 * ((n + ALIGN - 1) // ALIGN * ALIGN)
    assert "mul" not in mp.inplace or mp.slots["mul"][0] != mp.slots["exp"][0]
    assert overlaps(mp) == []


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_real_models_plan_below_naive_without_overlap(name):
    path = ROOT / "examples" / f"{name}.arch"
    res = run_pipeline(lower(path, None, small_config(path)), verify=True,
                       options={"dims": {"B": 2, "T": 16, "S": 16}})
    mp = res.graph.meta["memory_plan"]
    assert overlaps(mp) == []
    assert 0 < mp.arena_bytes < mp.naive_bytes
    params = {n.id for n in res.graph.nodes() if n.op == "param"}
    assert not params & set(mp.slots)
    assert not set(res.graph.outputs.values()) & set(mp.slots)
    assert all(off % ALIGN == 0 for off, _ in mp.slots.values())
    note = res.result("plan_memory").notes[0]
    assert note.startswith("activation arena: planned peak") and "vs naive sum" in note


def test_unread_part_of_a_fused_op_gets_scratch(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 8], r: float[T, 8]) {
            return Linear(LayerNorm(x + r) as ln, 8) as fc
        }
    """))
    res = run_pipeline(g, options={"dims": {"T": 2}})
    mp = res.graph.meta["memory_plan"]
    assert "ln.add_layernorm.0" in mp.slots and "ln.add_layernorm.1" in mp.slots
    assert overlaps(mp) == []


def test_pass_leaves_graph_alone(arch_file):
    g = lower(arch_file("model m(x: float[T, 4]) {\n return relu(x) * 2.0\n}\n"))
    r = plan_memory(g, {"T": 2})
    assert not r.changed and len(r.graph) == len(g) and "memory_plan" not in g.meta
