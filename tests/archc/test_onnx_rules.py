"""Every op of the registry has an ONNX export rule or says why it has none: no silent gap.
Runs without the onnx package (the rule table does not import it)."""
from __future__ import annotations

import pytest

from archc.dsl.ops import OPS, TT, activations, op
from archc.onnx_rules import NOT_EXPORTABLE, RULES, UNARY


def test_every_op_has_an_export_rule_or_a_reason():
    missing = sorted(n for n in OPS if n not in RULES and n not in NOT_EXPORTABLE)
    assert missing == [], "give these an @exports rule in archc/onnx_rules.py, or a reason " \
                          "in NOT_EXPORTABLE"
    assert sorted(set(RULES) & set(NOT_EXPORTABLE)) == []          # one or the other
    assert all(len(why) > 20 for why in NOT_EXPORTABLE.values())


def test_no_rule_names_an_unknown_op():
    assert sorted((set(RULES) | set(NOT_EXPORTABLE)) - set(OPS)) == []


def test_every_activation_exports_as_a_fused_epilogue():
    assert sorted(set(activations()) - set(UNARY)) == []


@pytest.fixture
def toy_op():
    """An op registered the documented way but given no ONNX rule; removed afterwards."""
    @op("toy_identity", inputs=("x",), traits=("elementwise", "unary"))
    def infer(x: TT) -> TT:
        return x
    yield "toy_identity"
    OPS.pop("toy_identity", None)


def test_an_op_without_a_rule_is_an_error_naming_it(toy_op, arch_file):
    from archc.dsl.errors import ArchError
    from archc.dsl.lower import lower
    from archc.onnx_export import check_exportable
    g = lower(arch_file("model m(x: float[T, 4]) {\n    return y = toy_identity(x)\n}\n"))
    with pytest.raises(ArchError) as e:
        check_exportable(g)
    assert "op `toy_identity`" in e.value.message and "no ONNX export rule" in e.value.message
    assert e.value.span is not None and e.value.span.line == 2
    with pytest.raises(AssertionError):                  # and the registry walk catches it
        test_every_op_has_an_export_rule_or_a_reason()
