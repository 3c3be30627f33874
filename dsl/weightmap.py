"""Checkpoint name mapping: how a checkpoint's tensors become the model's parameters.

A `weights NAME { ... }` section in an .arch file holds rules, read left to right as
"this checkpoint tensor goes there, through these transforms":

    weights hf {
        config n_layer = "n_layer"                         # config.json key -> constant
        config theta = "rope_parameters.rope_theta"        # nested keys; a second line for
        config theta = "rope_theta"                        # the same constant is a fallback
        "transformer.h.{i}.ln_1.weight" -> layers.{i}.ln_1.weight
        "transformer.h.{i}.attn.c_attn.weight" ->
            split(layers.{i}.attn.q.weight, layers.{i}.attn.k.weight,
                  layers.{i}.attn.v.weight, axis=1)
        "h.{i}.attention.query_key_value.weight" ->         # GPT-NeoX: [q_h, k_h, v_h] per head
            split(transpose(q.weight), transpose(k.weight), transpose(v.weight),
                  axis=0, heads=n_head)
        "transformer.wte.weight" -> wte.weight, lm_head.weight   # one tensor, two params
        "lm_head.weight" -> skip                                  # present but not needed
    }

Conditions and checks, all on config.json's values:

    weights hf {
        config tied = "tie_word_embeddings"
        config window = "sliding_window", null=none     # a JSON null gives `none`, not the
                                                        # default (absent keeps the default)
        prefix "model."                  # names may carry or lack it: task head vs base model
        require "rope_scaling" == none   # another value in config.json is an error naming it
        if tied {                        # rules chosen by config constants (after config.json)
            "model.embed_tokens.weight" -> embed.weight, transpose(lm_head.weight)
            "lm_head.weight" -> skip
        } else {
            "model.embed_tokens.weight" -> embed.weight
            "lm_head.weight" -> transpose(lm_head.weight)
        }
    }

Rules are tried in order; the first whose pattern matches a checkpoint name is used.
Destinations: a parameter path (`{i}`, `{j}` ... bind to the numbers in the checkpoint
name), `transpose(dest)` (reverse the axes: nn.Linear stores (out, in)), or
`split(d1, d2, ..., axis=0, heads=none)`: cut along `axis` into parts sized like the
destinations; with `heads=n` the axis holds n groups, each [part1, part2, ...] of its head.
This module resolves a section against a lowered model (checking every destination names
a real parameter); runtime/checkpoint.py applies it to tensors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from . import ast
from .errors import ArchError, Span, did_you_mean
from .values import describe

TRANSFORMS = ("transpose", "split")
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z_0-9]*)\}")


@dataclass(frozen=True)
class Param:
    pattern: str                  # e.g. "layers.{i}.attn.q.weight"
    span: Span | None = None

    def fill(self, binding: dict[str, str]) -> str:
        return _VAR.sub(lambda m: binding[m.group(1)], self.pattern)


@dataclass(frozen=True)
class Skip:
    span: Span | None = None


@dataclass(frozen=True)
class Transpose:
    inner: "Dest"
    span: Span | None = None


@dataclass(frozen=True)
class Split:
    parts: tuple["Dest", ...]
    axis: int = 0
    heads: int | None = None
    span: Span | None = None


Dest = Union[Param, Skip, Transpose, Split]


_BRACES = re.compile(r"\{[^{}]*\}?|\}")


def check_template(text: str, span: Span, offset: int = 0) -> str:
    """`text` if it is a well-formed name template: each `{...}` a variable name, used once
    (a number in the checkpoint name binds it once). Checked when the file is parsed;
    `offset`: where the text starts in its span (1 after a string's quote)."""
    seen = set()
    for m in _BRACES.finditer(text):
        var = _VAR.fullmatch(m.group())
        col = span.col + offset + m.start() if span.end_line == span.line else span.col
        where = Span(span.file, span.line, col, span.line, col + len(m.group()))
        if var is None:
            raise ArchError(f"`{m.group()}` in `{text}` is not an index pattern", where,
                            "write an index as {i} (a name in braces); braces have no other "
                            "use in a name")
        if var.group(1) in seen:
            raise ArchError(f"`{m.group()}` appears twice in `{text}`", where,
                            "each index binds one number of the name; use another letter "
                            "({i}, {j}) for a second one")
        seen.add(var.group(1))
    return text


def pattern_regex(pattern: str) -> re.Pattern:
    """`h.{i}.attn` -> regex with a named group per variable, each matching a number."""
    out, last = [], 0
    for m in _VAR.finditer(pattern):
        out.append(re.escape(pattern[last:m.start()]))
        out.append(f"(?P<{m.group(1)}>[0-9]+)")
        last = m.end()
    out.append(re.escape(pattern[last:]))
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class Rule:
    key: str
    dests: tuple[Dest, ...]
    span: Span | None = None

    def match(self, name: str) -> dict[str, str] | None:
        m = pattern_regex(self.key).match(name)
        return None if m is None else m.groupdict()


@dataclass(frozen=True)
class WeightMap:
    name: str
    rules: tuple[Rule, ...]
    configs: tuple[tuple[str, str], ...] = ()     # (constant, config.json key)
    span: Span | None = None
    prefixes: tuple[str, ...] = ()                # names may carry or lack these

    def match(self, tensor_name: str) -> tuple[Rule, dict[str, str]] | tuple[None, None]:
        for name in spellings(tensor_name, self.prefixes):
            for rule in self.rules:
                b = rule.match(name)
                if b is not None:
                    return rule, b
        return None, None

    def source_of(self, param: str) -> str | None:
        """The checkpoint name that would fill `param`, for "missing" messages."""
        for rule in self.rules:
            for leaf in leaves(rule.dests):
                m = pattern_regex(leaf.pattern).match(param)
                if m is not None:
                    binding = m.groupdict()
                    if set(_VAR.findall(rule.key)) <= set(binding):
                        return _VAR.sub(lambda v: binding[v.group(1)], rule.key)
        return None


def leaves(dests) -> list[Param]:
    out: list[Param] = []
    for d in dests:
        if isinstance(d, Param):
            out.append(d)
        elif isinstance(d, Transpose):
            out.extend(leaves([d.inner]))
        elif isinstance(d, Split):
            out.extend(leaves(d.parts))
    return out


def spellings(name: str, prefixes) -> list[str]:
    """A checkpoint name as written, then with each prefix added or removed: a base model's
    `h.0.attn` is its task-head model's `transformer.h.0.attn`, and the other way round."""
    out = [name]
    for p in prefixes:
        out.append(name[len(p):] if name.startswith(p) else p + name)
    return out


def all_rules(rules) -> list:
    """Every rule of a section, in every branch of its `if`s (to choose a section)."""
    out = []
    for r in rules:
        if isinstance(r, ast.WeightIf):
            out += all_rules(r.then) + all_rules(r.orelse)
        else:
            out.append(r)
    return out


def prefixes_of(section) -> tuple[str, ...]:
    return tuple(p if isinstance(p, str) else p.prefix for p in section.prefixes)


def key_matches(section, names) -> int:
    """How many checkpoint names a section's rules (parsed or resolved) account for, in any
    branch and with or without its prefixes (to choose a section)."""
    regs = [pattern_regex(r.key) for r in all_rules(section.rules)]
    prefixes = prefixes_of(section)
    return sum(1 for n in names
               if any(r.match(s) for s in spellings(n, prefixes) for r in regs))


def literal(e) -> Any:
    """The value of a literal in a weights section (`null=none`, `require ... == false`):
    read before the model is lowered, so no names."""
    if isinstance(e, ast.Num):
        return e.value
    if isinstance(e, (ast.Str, ast.Bool)):
        return e.value
    if isinstance(e, ast.NoneLit):
        return None
    if isinstance(e, ast.Neg) and isinstance(e.operand, ast.Num):
        return -e.operand.value
    if isinstance(e, ast.ListLit):
        return [literal(x) for x in e.items]
    raise ArchError("expected a literal value here (a number, a string, true, false, none or "
                    "a list of them)", e.span, "config.json is read before config constants "
                    "are known, so no names or arithmetic")


# ---- resolving a parsed section against a lowered model ---------------------------------

def resolve(section: ast.Weights, params: list[str], const: Callable[[Any], Any],
            consts: dict[str, Any], partial: bool = False) -> WeightMap:
    """Check a `weights` section against the model's parameter names; `const` evaluates an
    option expression (`heads=n_head`) with the config constants. A `partial` section (an
    included file's, written for its own model) may map parts this model does not have:
    a rule none of whose destinations is a parameter here drops its tensor."""
    generic = sorted({re.sub(r"\.[0-9]+(?=\.|$)", ".{i}", p) for p in params})
    rules = []
    for r in _chosen(section.rules, const):
        if partial and not any(pattern_regex(path).match(p) for path in _paths(r.dests)
                               for p in params):
            rules.append(Rule(r.key, (Skip(r.span),), r.span))
            continue
        key_vars = set(_VAR.findall(r.key))
        dests = tuple(_dest(d, params, generic, const, key_vars, top=True) for d in r.dests)
        if any(isinstance(d, Skip) for d in dests) and len(dests) > 1:
            raise ArchError("`skip` drops a tensor; it cannot be combined with destinations",
                            r.span)
        rules.append(Rule(r.key, dests, r.span))
    for c in section.configs:
        if c.const not in consts:
            raise ArchError(f"`config {c.const}`: the model has no config constant "
                            f"`{c.const}`", c.span, did_you_mean(c.const, consts))
    return WeightMap(section.name, tuple(rules),
                     tuple((c.const, c.key) for c in section.configs), section.span,
                     prefixes_of(section))


def _paths(dests) -> list[str]:
    """The parameter paths a rule's (parsed) destinations name."""
    out = []
    for d in dests:
        if isinstance(d, ast.WParam):
            out += [] if d.path == "skip" else [d.path]
        else:
            out += _paths(d.args)
    return out


def _chosen(rules, const) -> list[ast.WeightRule]:
    """The rules of the branches the config constants choose, in order; the others are not
    checked against the model (an untied head's parameter does not exist when tied)."""
    out = []
    for r in rules:
        if not isinstance(r, ast.WeightIf):
            out.append(r)
            continue
        taken = const(r.cond)
        if not isinstance(taken, bool):
            raise ArchError(f"`if` needs true or false, got {describe(taken)}", r.cond.span,
                            "compare it to get true or false, e.g. `x == none` or `n > 0`")
        out += _chosen(r.then if taken else r.orelse, const)
    return out


def _dest(d, params, generic, const, key_vars, top=False) -> Dest:
    if isinstance(d, ast.WParam):
        if d.path == "skip" and top:
            return Skip(d.span)
        used = set(_VAR.findall(d.path))
        if used - key_vars:
            v = sorted(used - key_vars)[0]
            raise ArchError(f"`{{{v}}}` in `{d.path}` does not appear in the checkpoint name",
                            d.span, "every {index} in a destination must be bound by the "
                                    "checkpoint name on the left of `->`")
        rx = pattern_regex(d.path)
        if not any(rx.match(p) for p in params):
            raise ArchError(f"no parameter of the model matches `{d.path}`", d.span,
                            did_you_mean(re.sub(r"\{[A-Za-z_0-9]+\}", "{i}", d.path), generic)
                            or "`archc dump` lists the parameter names")
        return Param(d.path, d.span)
    if d.func not in TRANSFORMS:
        raise ArchError(f"unknown weight transform `{d.func}`", d.func_span,
                        did_you_mean(d.func, TRANSFORMS) or "transforms: transpose, split")
    parts = tuple(_dest(a, params, generic, const, key_vars) for a in d.args)
    opts = {}
    for kw in d.kwargs:
        allowed = () if d.func == "transpose" else ("axis", "heads")
        if kw.name not in allowed:
            raise ArchError(f"{d.func}() has no option `{kw.name}`", kw.span,
                            did_you_mean(kw.name, allowed) or
                            (f"usage: {d.func}(dest)" if d.func == "transpose" else
                             "usage: split(dest, dest, ..., axis=0, heads=none)"))
        v = const(kw.value)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ArchError(f"{d.func}(): `{kw.name}` must be a whole number, got {v!r}",
                            kw.value.span)
        opts[kw.name] = v
    if d.func == "transpose":
        if len(parts) != 1:
            raise ArchError(f"transpose() takes one destination, got {len(parts)}", d.span)
        return Transpose(parts[0], d.span)
    if len(parts) < 2:
        raise ArchError("split() needs at least two destinations", d.span)
    heads = opts.get("heads")
    if heads is not None and heads <= 0:
        raise ArchError(f"split(): heads must be positive, got {heads}", d.span)
    return Split(parts, opts.get("axis") or 0, heads, d.span)
