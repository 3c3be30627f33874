"""Lower an .arch program to the layer graph: the entry point. The lowering itself is
dsl/lowering/, one module per concern (expressions, calls, blocks, statements, the model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ArchError, Span, did_you_mean
from .graph import Graph
from .lowering.model import Lowerer
from .program import load_program


def lower(path: str | Path, model: str | None = None,
          config: dict[str, Any] | None = None) -> Graph:
    """Parse `path` (and its includes) and lower its model to the layer graph; `config`
    overrides config constants by name (`{"n_layer": 2}`)."""
    try:
        return _lower(path, model, config)
    except RecursionError:
        # the explicit bounds (nesting, calls, includes) should make this unreachable
        raise ArchError(f"{path} is nested too deeply for archc to process", None,
                        "split deep expressions and block chains into smaller steps") from None


def _lower(path, model, config) -> Graph:
    prog = load_program(path)
    if model is not None:
        found = [m for m in prog.models if m.name == model]
        if not found:
            raise ArchError(f"no model named `{model}` in {path}", None,
                            did_you_mean(model, [m.name for m in prog.models]))
        target = found[0]
    elif len(prog.models) == 1:
        target = prog.models[0]
    elif not prog.models:
        raise ArchError(f"{path} defines no model", Span(str(path), 1, 1),
                        "add `model name(x: float[T, d]) { ... return y }`")
    else:
        names = ", ".join(f"`{m.name}`" for m in prog.models)
        raise ArchError(f"{path} defines several models ({names})", prog.models[1].span,
                        "choose one with --model NAME")
    return Lowerer(prog, config).lower_model(target)
