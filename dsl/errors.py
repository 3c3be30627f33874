"""User-facing errors: one `ArchError(message, span, hint)`, rendered like a compiler.

    examples/bad.arch:3:9: error: unknown op `rmsnrom`
        x = rmsnrom(x)
            ^^^^^^^
    hint: did you mean `rmsnorm`?

Every stage raises `ArchError` for anything the user can fix; the CLI renders it and exits 2.
A Python traceback that reaches a user is a bug.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, `end_col` is exclusive."""
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class ArchError(Exception):
    """An error in the user's model, inputs or weights. `span` is None for errors about files."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: Iterable[str] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = list(notes)

    def render(self, sources: dict[str, str] | None = None) -> str:
        return render_error(self, sources)

    def __str__(self) -> str:
        return self.render()


# Each stage reports at most this many errors at once, and stops looking at the first one
# past it: 10^5 undefined names cost the time of twenty.
MAX_ERRORS = 20


class ArchErrors(ArchError):
    """Several independent errors, reported together."""

    def __init__(self, errors: list[ArchError]):
        super().__init__(errors[0].message, errors[0].span, errors[0].hint)
        self.errors = errors

    def render(self, sources: dict[str, str] | None = None) -> str:
        body = "\n".join(render_error(e, sources) for e in self.errors)
        more = " (archc stops there; fix these first)" if len(self.errors) >= MAX_ERRORS else ""
        return f"{body}\n{len(self.errors)} errors{more}"


SOURCE_SUFFIX = ".arch"


def is_source(path: str | os.PathLike) -> bool:
    """An .arch file by name, and by the name it resolves to (a symlink named `x.arch`
    pointing at /proc/self/environ is not source)."""
    p = Path(path)
    try:
        real = p.resolve()
    except (OSError, RuntimeError):
        return False
    return p.name.endswith(SOURCE_SUFFIX) and real.name.endswith(SOURCE_SUFFIX)


def _source_line(span: Span, sources: dict[str, str] | None) -> str | None:
    text = (sources or {}).get(span.file)
    if text is None:
        if not is_source(span.file):
            return None    # quote source only: never a line of a file that is not .arch
        try:
            text = Path(span.file).read_text(encoding="utf-8-sig", errors="replace")
        except OSError:
            return None
    lines = text.splitlines()
    return lines[span.line - 1] if 0 < span.line <= len(lines) else None


MAX_SHOWN = 100   # a generated one-line file must not print megabytes of source


def _window(line: str, col: int) -> tuple[str, int]:
    """The part of a long source line around column `col`, and `col` within it."""
    if len(line) <= MAX_SHOWN:
        return line, col
    start = max(0, min(col - 1 - MAX_SHOWN // 2, len(line) - MAX_SHOWN))
    part = line[start:start + MAX_SHOWN]
    prefix = "..." if start > 0 else ""
    suffix = "..." if start + MAX_SHOWN < len(line) else ""
    return prefix + part + suffix, col - start + len(prefix)


def render_error(err: ArchError, sources: dict[str, str] | None = None) -> str:
    """`file:line:col: error: msg`, the source line, a caret under the span, then the hint."""
    out = []
    if err.span is None:
        out.append(f"error: {err.message}")
    else:
        out.append(f"{err.span}: error: {err.message}")
        line = _source_line(err.span, sources)
        if line is not None:
            width = 1
            if err.span.end_line in (None, err.span.line) and err.span.end_col:
                width = max(1, err.span.end_col - err.span.col)
            width = min(width, max(1, len(line) - err.span.col + 1))
            line, col = _window(line, err.span.col)
            width = min(width, MAX_SHOWN, max(1, len(line) - col + 1))
            # keep tabs so the caret lines up under the same glyphs
            pad = "".join(c if c == "\t" else " " for c in line[: col - 1])
            out.append(f"    {line}")
            out.append(f"    {pad}{'^' * width}")
    out.extend(f"note: {n}" for n in err.notes)
    if err.hint:
        out.append(f"hint: {err.hint}")
    return "\n".join(out)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to `name` (case aside), or None when nothing is close."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A hint naming the closest known name, or None when nothing is close."""
    close = closest(name, known)
    return f"did you mean `{close}`?" if close else None
