"""The model: config constants (with overrides from outside), the model's inputs, its body,
its outputs, and its `weights` sections resolved against the parameters it made.
"""
from __future__ import annotations

from typing import Any

from .. import ast
from ..errors import ArchError, did_you_mean
from ..literals import outside_value, shown
from ..graph import Graph
from ..ops import TT
from ..values import Tensor, describe
from ..weightmap import resolve as resolve_weights
from .builder import DTYPES, POISON
from .statements import Statements

# how the runtime may store matrix-product weights: the config constant `weights_dtype`
# (or --weights-dtype, or archc.load's weights_dtype=) chooses; runtime/packed.py packs
WEIGHTS_DTYPES = ("float32", "int8", "bf16")


class Lowerer(Statements):
    """Lowers one model of a `Program` to a `Graph`: `Lowerer(prog, config).lower_model(m)`."""

    def lower_model(self, model: ast.Block) -> Graph:
        self.g.name = model.name
        self.g.meta["source"] = self.prog.path
        self.g.meta["files"] = list(self.prog.files)      # the main file and its includes
        names = [d.name for d in self.prog.consts]
        for k, v in self.overrides.items():
            if k not in names:
                raise ArchError(f"cannot set `{k}`: {self.prog.path} has no config constant "
                                f"`{k}`", None, did_you_mean(k, names))
            problem = outside_value(v)
            if problem is not None:
                raise ArchError(f"cannot set `{k}` to {shown(v)}: {problem}", None,
                                "the value comes from --set, the API's config= or the "
                                "checkpoint's config.json")
        for d in self.prog.consts:
            # an override replaces only this definition; constants derived from it follow
            try:
                self.consts[d.name] = self.override(d) if d.name in self.overrides \
                    else self.eval(d.value, {}, const_only=True)
            except ArchError as e:
                self.record(e)
                self.consts[d.name] = POISON
            if d.name == "weights_dtype" and self.consts[d.name] not in (POISON, *WEIGHTS_DTYPES):
                self.record(ArchError(
                    f"weights_dtype must be one of {', '.join(map(repr, WEIGHTS_DTYPES))}, got "
                    f"{self.consts[d.name]!r}", d.span,
                    "the config constant `weights_dtype` says how matrix weights are stored"))
        self.g.meta["config"] = {k: v for k, v in self.consts.items()
                                 if isinstance(v, (int, float, bool, str))}
        env: dict[str, Any] = {}
        for f in model.formals:
            try:
                self.model_input(f, env)
            except ArchError as e:
                self.record(e)
                env[f.name] = POISON
        try:
            result = self.run_body(model.body, env, model)
        except ArchError as e:   # raised between statements, e.g. code after `return`
            self.record(e)
        self.raise_recorded()
        return self.finish_model(model, result)

    def override(self, d: ast.ConstDef):
        """A constant set from outside (--set, config.json): of its default's kind (a
        number, a string, a bool), or none ("off")."""
        value = self.overrides[d.name]
        try:
            default = self.eval(d.value, {}, const_only=True)
        except ArchError:
            return value        # a default that fails reports itself when it is used
        kinds = [_kind(v) for v in (value, default)]
        if None not in kinds and kinds[0] != kinds[1]:
            raise ArchError(f"cannot set `{d.name}` to {describe(value)}: it is {kinds[1]} "
                            f"(its default is {_written(default)})", None,
                            f"give {kinds[1]}, e.g. --set {d.name}={_written(default)}",
                            notes=[f"`{d.name}` is defined at {d.span}"])
        return value

    def model_input(self, f: ast.Formal, env: dict) -> None:
        if not isinstance(f.type, ast.TensorType):
            raise ArchError(f"model input `{f.name}` needs a tensor type", f.span,
                            f"e.g. `{f.name}: float[B, T, d_model]` or `ids: int[B, T]`")
        if f.default is not None:
            raise ArchError("model inputs take no default value", f.default.span)
        shape = tuple(self.eval_dim(d, env, symbolic=True) for d in f.type.dims)
        dtype = DTYPES[f.type.dtype]
        nid = self.g.add("input", [], shape=shape, dtype=dtype, attrs={"name": f.name},
                         span=f.span, name=f"input.{f.name}" if f.name in self.g else f.name)
        self.g.inputs.append(nid)
        env[f.name] = Tensor(nid, TT(shape, dtype), f.span)

    def finish_model(self, model: ast.Block, result) -> Graph:
        if result is None:
            raise ArchError(f"model `{model.name}` returns nothing", model.span,
                            "end the model with `return name` (its outputs)")
        for name, value, span in result:
            if not isinstance(value, Tensor):
                raise ArchError(f"a model output must be a tensor, got {describe(value)}", span)
            if name in self.g.outputs:
                raise ArchError(f"output `{name}` is returned twice", span)
            self.g.outputs[name] = value.node
        params = [n.attrs["name"] for n in self.g.params()]
        self.g.meta["weight_maps"] = {
            name: resolve_weights(w, params, lambda e: self.eval(e, {}, const_only=True),
                                  self.consts, partial=w.span.file != self.prog.path)
            for name, w in self.prog.weights.items()}
        return self.g


def _kind(v) -> str | None:
    """What kind of value a config constant holds; None for none or a symbolic size."""
    if isinstance(v, bool):
        return "true or false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return None


def _written(v) -> str:
    """A value as --set takes it: `true`, `none`, `gelu`, `1e-05`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return "none" if v is None else str(v)
