"""A lowercase call named like a scalar function (sqrt, exp, tanh) is a number on numbers
and a tensor op on tensors and on list literals."""
from __future__ import annotations

import numpy as np
import pytest

from archc.dsl.errors import ArchError
from archc.dsl.lower import lower
from archc.runtime.reference import run_reference


@pytest.mark.parametrize("fn,ref", [("sqrt", np.sqrt), ("exp", np.exp), ("tanh", np.tanh)])
def test_list_argument_is_a_tensor(arch_file, fn, ref):
    g = lower(arch_file(f"""
        model m(x: float[2]) {{
            return x * {fn}([0.25, 0.5]) + {fn}(1.0)
        }}
    """))
    assert sum(n.op == fn for n in g.nodes()) == 1        # the list: an op; 1.0: a number
    x = np.array([1.0, 2.0], np.float32)
    got = run_reference(g, {"x": x}, {})["out"]
    want = x * ref(np.array([0.25, 0.5])) + ref(1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_scalar_of_a_string_is_still_an_error(arch_file):
    with pytest.raises(ArchError, match="expected a number"):
        lower(arch_file("""
            model m(x: float[2]) {
                return x * sqrt("four")
            }
        """))
