"""Parse .arch text into the AST: Lark parses (grammar.lark), `ToAst` transforms.

Parsing and transforming are separate steps so that Lark's `meta` (line/column) reaches
every AST node as a `Span`. Syntax errors become `ArchError`s; the LALR parser resumes
after an error at the next statement so independent mistakes are reported together.
Literals are checked as they become AST nodes (dsl/literals.py), weights templates too.

Work is bounded before it starts: a source file is read up to MAX_SOURCE_BYTES, and a
scan at C speed counts its tokens against MAX_TOKENS (shared by a model and its
includes), so a 10 MB file is refused at once, at the line where it passes the bound,
instead of being parsed for minutes.
"""
from __future__ import annotations

import re
from functools import lru_cache
from itertools import islice
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast, literals
from .cache import cached_lark
from .errors import MAX_ERRORS, ArchError, ArchErrors, Span
from .files import open_regular
from .recover import (MAX_NESTING, NameTooLong, NestingTooDeep, parse_recovering,
                      tree_depth_error)
from .weightmap import check_template

# The largest example is under 700 tokens and 8 KB; these bounds are far above any model
# and keep the parse of the worst file allowed to a few seconds.
MAX_SOURCE_BYTES = 1 << 20
MAX_TOKENS = 50_000
# one match per token, with the comments and blanks before it: counts without parsing (the
# patterns are unrolled, so a long run of one kind needs no backtracking state per char)
_BLANKS = re.compile(r"\s*(?:#[^\n]*\s*)*")
_TOKEN_SCAN = re.compile(
    r'\s*(?:#[^\n]*\s*)*(?:"[^"\\\n]*(?:\\.[^"\\\n]*)*"?|[A-Za-z_0-9.]+|\*\*|//|->|\S)')

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


class ToAst:
    """One method per grammar alias; each returns the AST node of that kind, from the rule's
    `meta` and its children (already transformed). A bad literal is recorded in `errors`
    (its node gets a stand-in value) so that several are reported together."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[ArchError] = []

    def transform(self, tree: Tree):
        # depth is bounded by MAX_NESTING (checked before), so recursion is safe here
        children = [self.transform(c) if isinstance(c, Tree) else c for c in tree.children]
        return getattr(self, tree.data)(tree.meta, children)

    def s(self, meta) -> Span:
        return _span(self.file, meta)

    def checked(self, check, value, token: Token, stand_in):
        try:
            return check(value, _tok_span(self.file, token))
        except ArchError as e:
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(e)
            return stand_in

    def text(self, token: Token) -> str:
        return self.checked(literals.string, str(token), token, "")

    # top level
    def start(self, meta, items):
        return list(items)

    def include(self, meta, c):
        return ast.Include(self.text(c[0]), self.s(meta), weights=c[1] is not None)

    def with_weights(self, meta, c):
        return True

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
        key = self.checked(lambda k, span: check_template(k, span, 1), self.text(c[0]), c[0], "")
        return ast.WeightRule(key, tuple(c[1:]), self.s(meta))

    def weight_config(self, meta, c):
        return ast.WeightConfig(str(c[0]), self.text(c[1]), self.s(meta), c[2])

    def weight_prefix(self, meta, c):
        return ast.WeightPrefix(self.text(c[0]), self.s(meta))

    def weight_require(self, meta, c):
        if str(c[1]) != "==":
            raise ArchError(f"`require` takes `==` or `in`, not `{c[1]}`",
                            _tok_span(self.file, c[1]),
                            'e.g. `require "alibi" == false` or `require "act" in ["gelu", '
                            '"relu"]`')
        return ast.WeightRequire(self.text(c[0]), c[2], self.s(meta))

    def weight_require_in(self, meta, c):
        return ast.WeightRequire(self.text(c[0]), c[1], self.s(meta), among=True)

    def weight_if(self, meta, c):
        cond, then, orelse = c[0], c[1:-1], c[-1]
        return ast.WeightIf(cond, tuple(then), _else(orelse), self.s(meta))

    def weight_else(self, meta, c):
        return list(c)

    def wparam(self, meta, c):
        return ast.WParam(self.checked(check_template, str(c[0]), c[0], ""), self.s(meta))

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
        return ast.Num(self.checked(literals.number, str(c[0]), c[0], 0), self.s(meta))

    def string(self, meta, c):
        return ast.Str(self.text(c[0]), self.s(meta))

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


def parse(text: str, file: str = "<string>", max_tokens: int | None = MAX_TOKENS) -> list:
    """Parse source text into a list of AST items; raises ArchError / ArchErrors.

    The parser recovers after a syntax error (dsl/recover.py), so independent mistakes
    are reported together. Text of more than `max_tokens` tokens is refused first (None:
    the caller counted them)."""
    if max_tokens is not None:
        count_tokens(text, file, max_tokens)
    try:
        tree, problems = parse_recovering(_lark(), text)
    except NestingTooDeep as e:
        raise _too_deep(file, e.line, e.column) from None
    except NameTooLong as e:
        span = _tok_span(file, e.token)
        raise ArchError(f"a name of {len(e.token):,} characters; names are at most "
                        f"{literals.MAX_NAME}", Span(file, span.line, span.col, span.line,
                                                     span.col + 1)) from None
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
    builder = ToAst(file)
    items = builder.transform(tree)
    if builder.errors:
        errs = builder.errors
        raise errs[0] if len(errs) == 1 else ArchErrors(errs)
    return items


def count_tokens(text: str, file: str, max_tokens: int = MAX_TOKENS) -> int:
    """How many tokens `text` holds (roughly as the lexer splits it), at C speed; more
    than `max_tokens` is an error at the first token past the bound."""
    n = 0
    for m in islice(_TOKEN_SCAN.finditer(text), max(max_tokens, 0) + 1):
        n += 1
        if n > max_tokens:
            token = _BLANKS.match(text, m.start()).end()
            raise ArchError(f"more than {MAX_TOKENS:,} tokens; archc reads models of at most "
                            f"{MAX_TOKENS:,} (a large model is a few thousand)",
                            _position(text, token, file),
                            "large weights belong in a .safetensors file (--weights), not "
                            "in the source")
    return n


def _position(text: str, pos: int, file: str) -> Span:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return Span(file, line, col, line, col + 1)


def _too_deep(file: str, line: int, column: int) -> ArchError:
    return ArchError(f"expression nested too deeply (more than {MAX_NESTING} levels)",
                     Span(file, line, column),
                     "split it into several statements with names for the parts")


def read_source(path: str | Path) -> str:
    """The text of an .arch file: a regular file of at most MAX_SOURCE_BYTES of UTF-8
    (a leading byte-order mark is dropped). Only that much is ever read."""
    p = Path(path)
    if not p.exists():
        raise ArchError(f"no such file: {p}")
    try:
        with open_regular(p, "model") as f:
            raw = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as e:
        raise ArchError(f"cannot read {p}: {e.strerror}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]                 # a UTF-8 byte-order mark (Windows editors write one)
    if len(raw) > MAX_SOURCE_BYTES:
        head = raw[:MAX_SOURCE_BYTES].decode("utf-8", errors="replace")
        raise ArchError(f"{p} is larger than {MAX_SOURCE_BYTES >> 20} MiB; an .arch file is "
                        "a model's source (a large one is tens of KB)",
                        _position(head, len(head), str(path)),
                        "large weights belong in a .safetensors file (--weights), not in "
                        "the source")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArchError(f"{p} is not UTF-8 text (byte {e.start}); an .arch file is plain text") \
            from None


def parse_file(path: str | Path, max_tokens: int = MAX_TOKENS) -> list:
    return parse(read_source(path), str(path), max_tokens)
