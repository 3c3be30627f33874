"""Parse .arch text into the AST: Lark parses (grammar.lark), `ToAst` transforms.

Parsing and transforming are separate steps so that Lark's `meta` (line/column) reaches
every AST node as a `Span`. Syntax errors become `ArchError`s; the LALR parser resumes
after an error at the next statement so independent mistakes are reported together.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
                             VisitError)

from . import ast
from .cache import cached_lark
from .errors import ArchError, ArchErrors, Span
from .files import open_regular
from .recover import MAX_NESTING, NestingTooDeep, parse_recovering, tree_depth_error

GRAMMAR = Path(__file__).with_name("grammar.lark")

# What a person would call each terminal, for "expected ..." messages.
TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "INT": "an integer", "STRING": "a string",
    "DTYPE": "a type (float, int, bool)", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`",
    "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`", "COLON": "`:`",
    "EQUAL": "`=`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "AT": "`@`", "$END": "end of file",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return cached_lark(GRAMMAR.read_text(), propagate_positions=True, maybe_placeholders=True)


def _span(file: str, meta) -> Span:
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body.encode("utf-8").decode("unicode_escape") if "\\" in body else body


@v_args(meta=True)
class ToAst(Transformer):
    """One method per grammar alias; each returns the AST node of that kind."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def s(self, meta) -> Span:
        return _span(self.file, meta)

    # top level
    def start(self, meta, items):
        return list(items)

    def include(self, meta, c):
        return ast.Include(_unquote(c[0]), self.s(meta))

    def config(self, meta, defs):
        return ast.Config(tuple(defs), self.s(meta))

    def const_def(self, meta, c):
        return ast.ConstDef(str(c[0]), c[1], self.s(meta))

    def block(self, meta, c):
        return ast.Block(str(c[0]), tuple(c[1] or ()), tuple(c[2]), self.s(meta))

    def model(self, meta, c):
        return ast.Block(str(c[0]), tuple(c[1] or ()), tuple(c[2]), self.s(meta), is_model=True)

    def weights(self, meta, c):
        items = c[1:]

        def of(*kinds):
            return tuple(i for i in items if isinstance(i, kinds))
        return ast.Weights(str(c[0]), of(ast.WeightRule, ast.WeightIf), of(ast.WeightConfig),
                           self.s(meta), of(ast.WeightPrefix), of(ast.WeightRequire))

    def weight_rule(self, meta, c):
        return ast.WeightRule(_unquote(str(c[0])), tuple(c[1:]), self.s(meta))

    def weight_config(self, meta, c):
        return ast.WeightConfig(str(c[0]), _unquote(str(c[1])), self.s(meta), c[2])

    def weight_prefix(self, meta, c):
        return ast.WeightPrefix(_unquote(str(c[0])), self.s(meta))

    def weight_require(self, meta, c):
        if str(c[1]) != "==":
            raise ArchError(f"`require` takes `==` or `in`, not `{c[1]}`",
                            _tok_span(self.file, c[1]),
                            'e.g. `require "alibi" == false` or `require "act" in ["gelu", '
                            '"relu"]`')
        return ast.WeightRequire(_unquote(str(c[0])), c[2], self.s(meta))

    def weight_require_in(self, meta, c):
        return ast.WeightRequire(_unquote(str(c[0])), c[1], self.s(meta), among=True)

    def weight_if(self, meta, c):
        cond, then, orelse = c[0], c[1:-1], c[-1]
        return ast.WeightIf(cond, tuple(then), _else(orelse), self.s(meta))

    def weight_else(self, meta, c):
        return list(c)

    def wparam(self, meta, c):
        return ast.WParam(str(c[0]), self.s(meta))

    def wcall(self, meta, c):
        func, args = c[0], c[1:]
        return ast.WCall(str(func), tuple(a for a in args if not isinstance(a, ast.KwArg)),
                         tuple(a for a in args if isinstance(a, ast.KwArg)), self.s(meta),
                         _tok_span(self.file, func))

    def formals(self, meta, c):
        return list(c)

    def formal(self, meta, c):
        return ast.Formal(str(c[0]), c[1], c[2], self.s(meta))

    def tensor_type(self, meta, c):
        return ast.TensorType(str(c[0]), tuple(x for x in c[1:] if x is not None), self.s(meta))

    def scalar_type(self, meta, c):
        return ast.ScalarType(str(c[0]), self.s(meta))

    def body(self, meta, stmts):
        return list(stmts)

    # statements
    def assign(self, meta, c):
        return ast.Assign(tuple(c[0]), c[1], self.s(meta))

    def targets(self, meta, names):
        return [str(n) for n in names]

    def return_stmt(self, meta, items):
        return ast.Return(tuple(items), self.s(meta))

    def named_return(self, meta, c):
        return ast.ReturnItem(str(c[0]), c[1], self.s(meta))

    def plain_return(self, meta, c):
        name = c[0].id if isinstance(c[0], ast.Name) else None
        return ast.ReturnItem(name, c[0], self.s(meta))

    def param_decl(self, meta, c):
        return ast.ParamDecl(str(c[0]), c[1], c[2], self.s(meta))

    def layer_scope(self, meta, c):
        return ast.LayerScope(str(c[0]), tuple(c[1]), self.s(meta))

    def repeat(self, meta, c):
        return ast.Repeat(c[0], str(c[1]), tuple(c[2]), self.s(meta))

    def if_stmt(self, meta, c):
        return ast.If(c[0], tuple(c[1]), _else(c[2]), self.s(meta))

    # expressions
    def _binop(self, op, meta, c):
        return ast.BinOp(op, c[0], c[1], self.s(meta))

    def add(self, meta, c):
        return self._binop("+", meta, c)

    def sub(self, meta, c):
        return self._binop("-", meta, c)

    def mul(self, meta, c):
        return self._binop("*", meta, c)

    def div(self, meta, c):
        return self._binop("/", meta, c)

    def floordiv(self, meta, c):
        return self._binop("//", meta, c)

    def matmul(self, meta, c):
        return self._binop("@", meta, c)

    def pow(self, meta, c):
        return self._binop("**", meta, c)

    def neg(self, meta, c):
        return ast.Neg(c[0], self.s(meta))

    def compare(self, meta, c):
        return ast.Compare(str(c[1]), c[0], c[2], self.s(meta))

    def and_(self, meta, c):
        return ast.Logic("and", c[0], c[1], self.s(meta))

    def or_(self, meta, c):
        return ast.Logic("or", c[0], c[1], self.s(meta))

    def not_(self, meta, c):
        return ast.Not(c[0], self.s(meta))

    def number(self, meta, c):
        return ast.Num(_number(str(c[0])), self.s(meta))

    def string(self, meta, c):
        return ast.Str(_unquote(str(c[0])), self.s(meta))

    def true(self, meta, c):
        return ast.Bool(True, self.s(meta))

    def false(self, meta, c):
        return ast.Bool(False, self.s(meta))

    def none(self, meta, c):
        return ast.NoneLit(self.s(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), self.s(meta))

    def list(self, meta, c):
        return ast.ListLit(tuple(x for x in c if x is not None), self.s(meta))

    def call(self, meta, c):
        func, args, as_name = c
        pos = tuple(a for a in (args or ()) if not isinstance(a, ast.KwArg))
        kws = tuple(a for a in (args or ()) if isinstance(a, ast.KwArg))
        return ast.Call(str(func), pos, kws, None if as_name is None else str(as_name),
                        self.s(meta), _tok_span(self.file, func))

    def args(self, meta, c):
        return list(c)

    def kwarg(self, meta, c):
        return ast.KwArg(str(c[0]), c[1], _tok_span(self.file, c[0]))

    def posarg(self, meta, c):
        return c[0]

    def index(self, meta, c):
        return ast.Index(c[0], tuple(c[1:]), self.s(meta))

    def sub_index(self, meta, c):
        return c[0]

    def sub_slice(self, meta, c):
        return ast.SliceSub(c[0], c[1], self.s(meta))


def _else(part) -> tuple:
    """An `else` part: absent, a body (a list), or an `else if` (one nested If)."""
    if part is None:
        return ()
    return tuple(part) if isinstance(part, list) else (part,)


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"`{tok}`"


def _terminal_name(e: str) -> str:
    if e in TOKEN_NAMES:
        return TOKEN_NAMES[e]
    if e.startswith("__"):   # an anonymous terminal such as `->`: show its text
        try:
            return f"`{_lark().get_terminal(e).pattern.value}`"
        except KeyError:
            return e
    return f"`{e.lower()}`" if e.isupper() else e


def _expected(expected) -> str:
    names = sorted({_terminal_name(e) for e in expected})
    if not names or len(names) > 6:
        return ""
    return "expected " + (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1
                          else names[0])


def _syntax_error(e: UnexpectedInput, file: str) -> ArchError:
    if isinstance(e, UnexpectedCharacters):
        ch = e.char
        span = Span(file, e.line, e.column, e.line, e.column + 1)
        hint = None
        if ch == ";":
            hint = "statements need no `;`: put each on its own line"
        elif ch == "'":
            hint = "strings use double quotes"
        return ArchError(f"unexpected character `{ch}`", span, hint)
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            span = Span(file, max(1, e.line or 1), max(1, e.column or 1))
        else:
            span = _tok_span(file, tok)
        exp = _expected(e.expected)
        hint = None
        if tok.type == "NAME" and "EQUAL" in e.expected:
            hint = "a statement is `name = expression`"
        if tok in ("layer", "param", "repeat", "return", "model", "block", "config", "include",
                   "as", "if", "else", "and", "or", "not"):
            hint = f"`{tok}` is a keyword and cannot be used as a name"
        msg = f"unexpected {_describe(tok)}" + (f"; {exp}" if exp else "")
        return ArchError(msg, span, hint)
    if isinstance(e, UnexpectedEOF):
        return ArchError("unexpected end of file", Span(file, 1, 1))
    return ArchError(str(e), Span(file, getattr(e, "line", 1), getattr(e, "column", 1)))


def parse(text: str, file: str = "<string>") -> list:
    """Parse source text into a list of AST items; raises ArchError / ArchErrors.

    The parser recovers after a syntax error (dsl/recover.py), so independent mistakes
    are reported together."""
    try:
        tree, problems = parse_recovering(_lark(), text)
    except NestingTooDeep as e:
        raise _too_deep(file, e.line, e.column) from None
    errors = []
    for p in problems:
        err = _syntax_error(p.error, file)
        if p.hint:   # the recovery knows the context: an unclosed `(`, a dangling `+`
            err.hint = p.hint
        errors.append(err)
    if errors:
        raise errors[0] if len(errors) == 1 else ArchErrors(errors)
    deep = tree_depth_error(tree)
    if deep is not None:
        raise _too_deep(file, *deep)
    try:
        return ToAst(file).transform(tree)
    except VisitError as e:     # a check in a transformer method: its ArchError as it is
        if isinstance(e.orig_exc, ArchError):
            raise e.orig_exc from None
        raise


def _too_deep(file: str, line: int, column: int) -> ArchError:
    return ArchError(f"expression nested too deeply (more than {MAX_NESTING} levels)",
                     Span(file, line, column),
                     "split it into several statements with names for the parts")


def parse_file(path: str | Path) -> list:
    p = Path(path)
    if not p.exists():
        raise ArchError(f"no such file: {p}")
    try:
        with open_regular(p, "model") as f:
            raw = f.read()
    except OSError as e:
        raise ArchError(f"cannot read {p}: {e.strerror}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]                 # a UTF-8 byte-order mark (Windows editors write one)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArchError(f"{p} is not UTF-8 text (byte {e.start}); an .arch file is plain text") \
            from None
    return parse(text, str(path))
