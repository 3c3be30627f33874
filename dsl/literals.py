"""Literals as the grammar reads them: numbers and strings, checked where they are written.

The lexer accepts any run of digits and any backslash in a string; what they mean is
decided here, with the literal's span, so a bad literal is a located error rather than a
crash deep in the lowering:

    y = x * 99999999999999999999999      number too large (whole numbers are int64)
    y = x * 1e400                        number too large (it is infinite as a float)
    include "layers\\x.arch"             unknown escape `\\x`
    include "a\\u0000.arch"              a string cannot hold a NUL character

Escapes are those of JSON strings: \\" \\\\ \\/ \\n \\t \\r \\b \\f and \\uXXXX.
"""
from __future__ import annotations

import math

from .errors import ArchError, Span

MAX_INT = 2 ** 63 - 1
# a name is shown in messages; a checkpoint's longest tensor names are about 100 characters
MAX_NAME = 256
# a string is a file name, a checkpoint key or an option (`act="gelu"`): far below this
MAX_STRING = 4096
ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b",
           "f": "\f"}
_MAX_DIGITS = len(str(MAX_INT))


def number(text: str, span: Span) -> int | float:
    """An INT or NUMBER token's value: an int within int64, or a finite float."""
    if not any(c in text for c in ".eE"):
        digits = text.lstrip("0")
        if len(digits) > _MAX_DIGITS or (digits and int(digits) > MAX_INT):
            shown = text if len(text) <= 30 else f"a {len(text)}-digit number"
            raise ArchError(f"number too large: {shown} exceeds {MAX_INT} (int64)", span,
                            "whole numbers are int64; write a float (e.g. 1e30) for a larger "
                            "value")
        return int(text)
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 30 else f"{text[:27]}..."
        raise ArchError(f"number too large: {shown} is beyond the range of a float", span,
                        "floats go up to about 1.8e308")
    return value


def string(text: str, span: Span) -> str:
    """A STRING token (with its quotes) -> its value; escapes are checked one by one."""
    body = text[1:-1]
    if len(body) > MAX_STRING:
        raise ArchError(f"string of {len(body):,} characters; a string may hold at most "
                        f"{MAX_STRING:,}", _inner(span, 1, min(len(text), 40)),
                        "strings name files, checkpoint tensors and options")
    if "\\" not in body and "\x00" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = body[i + 1]          # the lexer guarantees a character after a backslash
        if esc in ESCAPES:
            out.append(ESCAPES[esc])
            i += 2
            continue
        if esc == "u":
            hexa = body[i + 2:i + 6]
            if len(hexa) == 4 and all(h in "0123456789abcdefABCDEF" for h in hexa):
                out.append(chr(int(hexa, 16)))
                i += 6
                continue
            raise ArchError("`\\u` needs four hex digits, e.g. \\u00e9",
                            _inner(span, i + 1, 2 + len(hexa)))
        raise ArchError(f"unknown escape `\\{esc}` in a string", _inner(span, i + 1, 2),
                        'escapes: \\" \\\\ \\n \\t \\r and \\uXXXX; write a backslash as \\\\')
    value = "".join(out)
    if "\x00" in value:
        raise ArchError("a string cannot hold a NUL character", span)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ArchError("a string cannot hold half of a surrogate pair (\\uD800-\\uDFFF)", span)
    return value


def outside_value(value) -> str | None:
    """Why a config value from outside the source (`--set`, a checkpoint's config.json, the
    API's `config=`) cannot be used where a literal could be, or None when it can: the
    same bounds as literals (int64, finite floats, strings without NUL of MAX_STRING)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) <= MAX_INT:
            return None
        digits = len(str(abs(value))) if value.bit_length() < 10_000 else "over 3,000"
        return f"a whole number of {digits} digits exceeds {MAX_INT} (int64)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        if "\x00" in value:
            return "a string cannot hold a NUL character"
        return None if len(value) <= MAX_STRING else \
            f"a string of {len(value):,} characters (at most {MAX_STRING:,})"
    return f"a {type(value).__name__} is not a number, bool or string"


def shown(value) -> str:
    """A value in a message, cut short."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 100 else "..."
    return text if len(text) <= 40 else text[:37] + "..."


def _inner(span: Span, offset: int, width: int) -> Span:
    """The part of a one-line literal's span starting `offset` characters in."""
    col = span.col + offset
    return Span(span.file, span.line, col, span.line, col + width)
