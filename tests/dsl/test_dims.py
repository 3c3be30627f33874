"""Symbolic dimensions."""
from __future__ import annotations

from archc.dsl.dims import Dim, dim_add, dim_div, dim_mul, dim_sub, evaluate, numel

T, B = Dim.sym("T"), Dim.sym("B")


def test_arithmetic_normalises():
    assert str(dim_add(dim_mul(4, T), 3)) == "4*T + 3"
    assert str(dim_mul(B, T)) == "B*T"
    assert dim_sub(dim_add(T, 2), T) == 2          # collapses back to an int
    assert dim_mul(T, 0) == 0
    assert str(dim_sub(8, T)) == "-T + 8"


def test_equality_and_hash():
    assert dim_add(T, T) == dim_mul(2, T)
    assert hash(dim_mul(B, T)) == hash(dim_mul(T, B))
    assert T != B and T != 1


def test_exact_division():
    assert dim_div(dim_mul(4, T), 2) == dim_mul(2, T)
    assert dim_div(dim_mul(B, T), T) == B
    assert dim_div(dim_add(T, 1), 2) is None
    assert dim_div(12, 5) is None and dim_div(12, 4) == 3 and dim_div(3, 0) is None


def test_evaluate_and_numel():
    n = numel((B, T, 4))
    assert str(n) == "4*B*T"
    assert evaluate(n, {"B": 2, "T": 3}) == 24
    assert evaluate(7, {}) == 7
