"""Node ids: the smallest free `base_i`, as always, now in O(1) amortised per node (the
count from 1 each time made lowering quadratic in the number of statements)."""
from __future__ import annotations

from archc.dsl.graph import Graph


def test_ids_are_the_smallest_free_suffix_even_after_removals():
    g = Graph()
    ids = [g.add("relu", [], shape=(1,), dtype="float32", name="x") for _ in range(5)]
    assert ids == ["x", "x_1", "x_2", "x_3", "x_4"]
    g.remove("x_2")
    assert g.fresh_id("x") == "x_2"
    assert g.add("relu", [], shape=(1,), dtype="float32", name="x") == "x_2"
    assert g.fresh_id("x") == "x_5"
    c = g.copy()
    c.remove("x_1")
    assert c.fresh_id("x") == "x_1" and g.fresh_id("x") == "x_5"


def test_many_statements_lower(tmp_path):
    from archc.dsl.lower import lower
    src = tmp_path / "big.arch"
    src.write_text("model m(x: float[T, 4]) {\n" + "    x = relu(x)\n" * 5000 +
                   "    return x\n}\n")
    g = lower(src)
    assert len(g) == 5001 and "relu_4999" in g.nx
