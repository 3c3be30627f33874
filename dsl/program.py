"""Load an .arch file and its includes into one `Program`: the config constants, blocks,
models and weight mappings, each checked for duplicates.

Include paths are relative to the including file and name .arch files only; a cycle, a
missing file or nesting past MAX_INCLUDE_DEPTH is an error at the `include` line. The same
file reached twice (a diamond) is parsed once and contributes its definitions once, and
all the files together hold at most MAX_TOKENS tokens (dsl/parser.py), so includes cannot
multiply the work. An included file's `weights` sections come only with `include "x.arch"
with weights` (and only as far as every include on the way asks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .errors import ArchError, Span
from .files import SOURCE_SUFFIX, check_regular, is_source
from .parser import MAX_TOKENS, count_tokens, parse, read_source

MAX_INCLUDE_DEPTH = 50


@dataclass
class Program:
    """All items of a main file and its includes, checked for duplicates."""
    path: str
    consts: list[ast.ConstDef]
    blocks: dict[str, ast.Block]
    models: list[ast.Block]          # the main file's models
    weights: dict[str, ast.Weights] = field(default_factory=dict)   # checkpoint mappings
    files: list[str] = field(default_factory=list)   # every file read: the main one first


def load_program(path: str | Path) -> Program:
    prog = Program(str(path), [], {}, [])
    _load_into(prog, Path(path), [], _Seen(), is_main=True)
    return prog


@dataclass
class _Seen:
    """What loading has met so far: constants by name, each file's items, tokens read."""
    consts: dict[str, ast.ConstDef] = field(default_factory=dict)
    items: dict[Path, list] = field(default_factory=dict)
    tokens: int = 0
    weighted: set[Path] = field(default_factory=set)   # files whose weights sections are in

    def parse(self, path: Path, key: Path) -> list:
        if key not in self.items:
            text = read_source(path)
            self.tokens += count_tokens(text, str(path), MAX_TOKENS - self.tokens)
            self.items[key] = parse(text, str(path), max_tokens=None)
        return self.items[key]


def _load_into(prog: Program, path: Path, stack: list[Path], seen: _Seen,
               is_main: bool, include_span: Span | None = None, weights: bool = True) -> None:
    key = path.resolve()
    if key in stack:
        chain = " -> ".join(p.name for p in stack[stack.index(key):] + [key])
        raise ArchError(f"include cycle: {chain}", include_span,
                        "an included file must not include (directly or not) the file "
                        "that includes it")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise ArchError(f"includes nested more than {MAX_INCLUDE_DEPTH} deep", include_span)
    if include_span is None and path.exists() and not is_source(path):
        raise ArchError(f"{path} is not an {SOURCE_SUFFIX} file; archc reads only .arch source",
                        hint=f"name the model file {path.stem or 'model'}{SOURCE_SUFFIX}")
    if include_span is not None and not is_source(path):
        # only source is read, so a stray or hostile include cannot show another file
        raise ArchError(f"include takes an {SOURCE_SUFFIX} file, not {path}", include_span,
                        f"an included file's name (and its target's, for a symlink) ends "
                        f"in {SOURCE_SUFFIX}")
    if not path.is_file():
        if include_span is None:
            if path.exists():
                check_regular(path, "model")
            raise ArchError(f"no such file: {path}")
        raise ArchError(f"included file not found: {path}", include_span,
                        "include paths are relative to the including file")
    if key in seen.items:
        # a diamond: its definitions are in already (and walking it again would double the
        # work at every level); its weights may be asked for only on this path
        if weights:
            _add_weights(prog, path, key, seen)
        return
    prog.files.append(str(path))
    seen_consts = seen.consts
    for item in seen.parse(path, key):
        if isinstance(item, ast.Include):
            _load_into(prog, path.parent / item.path, stack + [key], seen, False, item.span,
                       weights and item.weights)
        elif isinstance(item, ast.Config):
            for d in item.defs:
                if d.name in seen_consts:
                    first = seen_consts[d.name]
                    if first.span == d.span:
                        continue   # the same file included twice (a diamond)
                    raise ArchError(f"`{d.name}` is defined twice in config", d.span,
                                    notes=[f"first defined at {first.span}"])
                seen_consts[d.name] = d
                prog.consts.append(d)
        elif isinstance(item, ast.Block):
            _check_formals(item)
            if item.is_model:
                if is_main:
                    twin = next((m for m in prog.models if m.name == item.name), None)
                    if twin is not None:
                        raise ArchError(f"model `{item.name}` is defined twice", item.span,
                                        notes=[f"first defined at {twin.span}"])
                    prog.models.append(item)
                continue
            if item.name in prog.blocks:
                first = prog.blocks[item.name]
                if first.span == item.span:
                    continue   # the same file included twice (a diamond): one definition
                raise ArchError(f"block `{item.name}` is defined twice", item.span,
                                notes=[f"first defined at {first.span}"])
            prog.blocks[item.name] = item
    if weights:
        _add_weights(prog, path, key, seen)


def _add_weights(prog: Program, path: Path, key: Path, seen: _Seen) -> None:
    """A loaded file's weights sections, and those of its includes `with weights`."""
    if key in seen.weighted:
        return
    seen.weighted.add(key)
    for item in seen.items[key]:
        if isinstance(item, ast.Include) and item.weights:
            inner = path.parent / item.path
            _add_weights(prog, inner, inner.resolve(), seen)
        elif isinstance(item, ast.Weights):
            first = prog.weights.get(item.name)
            if first is not None:
                raise ArchError(f"weights section `{item.name}` is defined twice", item.span,
                                notes=[f"first defined at {first.span}"])
            prog.weights[item.name] = item


def _check_formals(block: ast.Block) -> None:
    seen: dict[str, ast.Formal] = {}
    for f in block.formals:
        if f.name in seen:
            raise ArchError(f"`{block.name}` has two parameters named `{f.name}`", f.span,
                            notes=[f"first declared at {seen[f.name].span}"])
        seen[f.name] = f
