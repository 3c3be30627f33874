"""`if`/`else` statements and the comparisons and logic they test: chosen while lowering,
by compile-time values, so the graph holds only the branch taken."""
from __future__ import annotations

import pytest

from archc.dsl.errors import ArchError, ArchErrors
from archc.dsl.lower import lower
from archc.dsl.parser import parse

HEAD = """
    config {
        tied = true
        act = "relu"
        n = 3
    }
"""


def ops(g) -> list[str]:
    return [g.node(n).op for n in g.topo()]


def test_if_chooses_the_branch_by_a_config_constant(arch_file):
    src = HEAD + """
    model m(x: float[T, 4]) {
        if tied {
            y = relu(x)
        } else {
            y = Linear(x, 4) as head
        }
        return y
    }
    """
    path = arch_file(src)
    assert "relu" in ops(lower(path)) and not lower(path).params()
    untied = lower(path, config={"tied": False})
    assert "relu" not in ops(untied)
    assert [p.attrs["name"] for p in untied.params()] == ["head.weight", "head.bias"]


def test_else_if_chains_and_comparisons(arch_file):
    path = arch_file(HEAD + """
    model m(x: float[T, 4]) {
        if act == "gelu" {
            y = gelu(x)
        } else if act == "relu" and n >= 3 {
            y = relu(x)
        } else {
            y = x
        }
        return y
    }
    """)
    assert "relu" in ops(lower(path))
    assert "gelu" in ops(lower(path, config={"act": "gelu"}))
    g = lower(path, config={"n": 2})
    assert "relu" not in ops(g) and "gelu" not in ops(g)


def test_a_returning_branch_ends_the_block(arch_file):
    path = arch_file(HEAD + """
    block Mlp(x) {
        if tied {
            return relu(x)
        }
        return gelu(x)
    }
    model m(x: float[T, 4]) { return Mlp(x) }
    """)
    assert "relu" in ops(lower(path)) and "gelu" not in ops(lower(path))
    assert "gelu" in ops(lower(path, config={"tied": False}))


def test_logic_and_comparisons_on_constants():
    # config constants may be conditions themselves; `and`/`or` short-circuit
    from archc.dsl.lowering.model import Lowerer
    from archc.dsl.program import Program
    items = parse("""
        config {
            a = 2 < 3 and not (1 == 2)
            b = false or "x" != "y"
            c = true == 1
            d = none == none
            e = false and undefined_name
            f = [1, 2] == [1, 2]
        }
    """)
    prog = Program("<string>", list(items[0].defs), {}, [])
    lw = Lowerer(prog)
    values = {d.name: lw.eval(d.value, {}, const_only=True) for d in prog.consts}
    assert values == {"a": True, "b": True, "c": False, "d": True, "e": False, "f": True}


@pytest.mark.parametrize("cond, message", [
    ("n", "`if` needs true or false, got the size 3"),
    ("x", "`if` needs true or false, got tensor float[T, 4]"),
    ("x > 0", "`>` compares values known while lowering, got tensor float[T, 4]"),
    ('act < 2', "`<` orders numbers, got the string 'relu'"),
    ("not n", "`not` needs true or false, got the size 3"),
    ("tied and n", "`and` needs true or false, got the size 3"),
])
def test_conditions_are_compile_time_bools(arch_file, cond, message):
    path = arch_file(HEAD + f"""
    model m(x: float[T, 4]) {{
        if {cond} {{
            x = relu(x)
        }}
        return x
    }}
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == message


def test_a_symbolic_size_is_not_compared(arch_file):
    path = arch_file("""
        model m(x: float[T, 4]) {
            if T == 4 { x = relu(x) }
            return x
        }
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == ("`==` cannot compare the size T: a symbolic size is known only "
                               "at run time")


def test_a_failed_branch_poisons_what_it_defines(arch_file):
    # one error, not a second one for `y` being undefined after the `if`
    path = arch_file(HEAD + """
    model m(x: float[T, 4]) {
        if tied {
            y = rleu(x)
        } else {
            z = x
        }
        return y + z
    }
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert not isinstance(e.value, ArchErrors)
    assert e.value.message == "unknown op or block `rleu`"


def test_if_is_a_keyword(arch_file):
    path = arch_file("model m(x: float[T, 4]) {\n    if = relu(x)\n    return x\n}\n")
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.hint == "`if` is a keyword and cannot be used as a name"
