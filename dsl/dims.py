"""Symbolic dimensions: a shape entry is an `int` or a `Dim`, a polynomial over named sizes.

`T`, `B*T`, `T + 8`, `4*T` stay symbolic through shape inference, so a dump can say
"FLOPs: 96*T" and a mismatch is caught before any input exists. A Dim whose terms are
all constant collapses back to a plain int (see `Dim.make`).
"""
from __future__ import annotations

from typing import Mapping, Union

Monomial = tuple[str, ...]  # sorted symbol names, e.g. ("B", "T"); () is the constant term


class Dim:
    __slots__ = ("terms",)

    def __init__(self, terms: tuple[tuple[Monomial, int], ...]):
        self.terms = terms

    @staticmethod
    def make(terms: Mapping[Monomial, int]) -> "DimLike":
        kept = tuple(sorted((m, c) for m, c in terms.items() if c != 0))
        if not kept:
            return 0
        if len(kept) == 1 and kept[0][0] == ():
            return kept[0][1]
        return Dim(kept)

    @staticmethod
    def sym(name: str) -> "Dim":
        return Dim(((((name,)), 1),))

    def symbols(self) -> set[str]:
        return {s for m, _ in self.terms for s in m}

    def evaluate(self, bindings: Mapping[str, int]) -> int:
        total = 0
        for mono, coeff in self.terms:
            v = coeff
            for s in mono:
                if s not in bindings:
                    raise KeyError(s)
                v *= bindings[s]
            total += v
        return total

    def __eq__(self, other) -> bool:
        return isinstance(other, Dim) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(self.terms)

    def __repr__(self) -> str:
        return f"Dim({self})"

    def __str__(self) -> str:
        parts = []
        for mono, coeff in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            name = "*".join(mono)
            if not mono:
                body = str(abs(coeff))
            elif abs(coeff) == 1:
                body = name
            else:
                body = f"{abs(coeff)}*{name}"
            sign = "-" if coeff < 0 else "+"
            parts.append((sign, body))
        text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, body in parts[1:]:
            text += f" {sign} {body}"
        return text


DimLike = Union[int, Dim]


def _terms(d: DimLike) -> dict[Monomial, int]:
    if isinstance(d, Dim):
        return dict(d.terms)
    return {(): int(d)}


def dim_add(a: DimLike, b: DimLike) -> DimLike:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    t = _terms(a)
    for m, c in _terms(b).items():
        t[m] = t.get(m, 0) + c
    return Dim.make(t)


def dim_neg(a: DimLike) -> DimLike:
    return -a if isinstance(a, int) else Dim.make({m: -c for m, c in a.terms})


def dim_sub(a: DimLike, b: DimLike) -> DimLike:
    return dim_add(a, dim_neg(b))


def dim_mul(a: DimLike, b: DimLike) -> DimLike:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    t: dict[Monomial, int] = {}
    for ma, ca in _terms(a).items():
        for mb, cb in _terms(b).items():
            m = tuple(sorted(ma + mb))
            t[m] = t.get(m, 0) + ca * cb
    return Dim.make(t)


def dim_div(a: DimLike, b: DimLike) -> DimLike | None:
    """Exact division; None when it is not exact (or would divide by a symbol)."""
    if isinstance(b, Dim):
        if isinstance(a, Dim) and a == b:
            return 1
        # divide a monomial-sum by a single monomial, e.g. (B*T) / T
        if len(b.terms) == 1 and b.terms[0][1] == 1 and isinstance(a, Dim):
            (bm, _), = b.terms
            out: dict[Monomial, int] = {}
            for m, c in a.terms:
                rest = list(m)
                for s in bm:
                    if s not in rest:
                        return None
                    rest.remove(s)
                out[tuple(rest)] = c
            return Dim.make(out)
        return None
    if b == 0:
        return None
    if isinstance(a, int):
        return a // b if a % b == 0 else None
    if all(c % b == 0 for _, c in a.terms):
        return Dim.make({m: c // b for m, c in a.terms})
    return None


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def numel(shape) -> DimLike:
    n: DimLike = 1
    for d in shape:
        n = dim_mul(n, d)
    return n


def evaluate(d: DimLike, bindings: Mapping[str, int]) -> int:
    return d if isinstance(d, int) else d.evaluate(bindings)
