"""The AST of an .arch file. Every node carries the `Span` it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Span


# ---- expressions ------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True)
class Str:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class NoneLit:
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class ListLit:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str                      # "+", "-", "*", "/", "//", "@", "**"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class KwArg:
    name: str
    value: "Expr"
    span: Span                   # the keyword's own span, for "unexpected keyword" errors


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]
    as_name: str | None          # `Attention(x) as attn` names the layer scope
    span: Span
    func_span: Span


@dataclass(frozen=True)
class SliceSub:
    start: "Expr | None"
    stop: "Expr | None"
    span: Span


@dataclass(frozen=True)
class Index:
    value: "Expr"
    subs: tuple["Expr | SliceSub", ...]
    span: Span


@dataclass(frozen=True)
class Compare:
    """`a == b`, `!=`, `<`, `<=`, `>`, `>=`: on compile-time values only."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Logic:
    """`a and b`, `a or b` on bools (compile time)."""
    op: str                      # "and" | "or"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span


Expr = Union[Num, Str, Bool, NoneLit, Name, ListLit, BinOp, Neg, Call, Index, Compare, Logic,
             Not]


# ---- types ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorType:
    dtype: str                   # "float" | "int" | "bool"
    dims: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class ScalarType:
    dtype: str
    span: Span


TypeExpr = Union[TensorType, ScalarType]


# ---- statements -------------------------------------------------------------------------

@dataclass(frozen=True)
class Assign:
    targets: tuple[str, ...]
    value: Expr
    span: Span


@dataclass(frozen=True)
class ReturnItem:
    name: str | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Return:
    items: tuple[ReturnItem, ...]
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    name: str
    type: TypeExpr | None
    value: Expr | None
    span: Span


@dataclass(frozen=True)
class LayerScope:
    name: str
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Repeat:
    count: Expr
    name: str
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class If:
    """`if cond { body } else { orelse }`, chosen while lowering (`else if` nests an If)."""
    cond: Expr
    body: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]
    span: Span


Stmt = Union[Assign, Return, ParamDecl, LayerScope, Repeat, If]


# ---- top level --------------------------------------------------------------------------

@dataclass(frozen=True)
class Formal:
    name: str
    type: TypeExpr | None
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Include:
    path: str
    span: Span
    weights: bool = False        # `with weights`: its weights sections come too


@dataclass(frozen=True)
class ConstDef:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Config:
    defs: tuple[ConstDef, ...]
    span: Span


@dataclass(frozen=True)
class Block:
    name: str
    formals: tuple[Formal, ...]
    body: tuple[Stmt, ...]
    span: Span
    is_model: bool = False


# ---- weights sections: checkpoint names -> parameters ------------------------------------

@dataclass(frozen=True)
class WParam:
    """A destination parameter path, possibly with `{i}` patterns; `skip` drops a tensor."""
    path: str
    span: Span


@dataclass(frozen=True)
class WCall:
    """A transform on the way to its destinations: `transpose(p)`, `split(a, b, axis=1)`."""
    func: str
    args: tuple["WDest", ...]
    kwargs: tuple[KwArg, ...]
    span: Span
    func_span: Span


WDest = Union[WParam, WCall]


@dataclass(frozen=True)
class WeightRule:
    key: str                     # checkpoint tensor name pattern, e.g. "h.{i}.ln_1.weight"
    dests: tuple[WDest, ...]     # several = the same tensor feeds each (tied weights)
    span: Span


@dataclass(frozen=True)
class WeightIf:
    """Rules chosen by a condition on config constants: `if tied { ... } else { ... }`."""
    cond: Expr
    then: tuple["WeightRule | WeightIf", ...]
    orelse: tuple["WeightRule | WeightIf", ...]
    span: Span


@dataclass(frozen=True)
class WeightConfig:
    const: str                   # config constant to override ...
    key: str                     # ... from this (dotted) key of the checkpoint's config.json
    span: Span
    null: Expr | None = None     # `, null=none`: the value a JSON null gives (else: default)


@dataclass(frozen=True)
class WeightPrefix:
    """`prefix "bert."`: checkpoint names may carry or lack it (task head vs base model)."""
    prefix: str
    span: Span


@dataclass(frozen=True)
class WeightRequire:
    """`require "alibi" == false` (or `in [a, b]`): any other value in config.json is an
    error naming the key."""
    key: str
    value: Expr
    span: Span
    among: bool = False          # `in`: the value is a list of the allowed ones


@dataclass(frozen=True)
class Weights:
    name: str
    rules: tuple["WeightRule | WeightIf", ...]
    configs: tuple[WeightConfig, ...]
    span: Span
    prefixes: tuple[WeightPrefix, ...] = ()
    requires: tuple[WeightRequire, ...] = ()


Item = Union[Include, Config, Block, Weights]


@dataclass
class Program:
    path: str
    items: list[Item] = field(default_factory=list)
