"""Syntax-error recovery for the LALR parser, so one run reports several independent mistakes.

Panic mode at statement granularity. After an error the parser drops input up to the next
*sync token*: the first token of a later line, or a `}` (a whole `{ ... }` group is dropped
at once, so braces stay balanced). It then pops its stack back to a *statement boundary*
that accepts that token: a state that could also close a body (`}`) or end the file.
Statements need no separator, so a line start is where the next statement most likely
begins:

    y = relu(x,, 2)      <- error at the second `,`: dropped up to the line's end
    z = gelu(y)          <- sync token `z`: stack popped to the body, parsing resumes

Cascades are kept out: nothing is reported while skipping, at most one error per line, and
an end-of-file error after a skip (the skip may have eaten a `}`) is not reported. At the
MAX_ERRORS-th error the parse stops: the rest of the file is not read.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .errors import MAX_ERRORS
from .literals import MAX_NAME
# deeper than this is not a model, and the recursive transformer and lowering would overflow
MAX_NESTING = 150
# tokens after which an expression must go on (`//` and `**` are anonymous terminals)
OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "EQUAL", "COMMA", "LPAR", "LSQB", "COLON"}
OPERATOR_TEXT = {"//", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or", "not"}
OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
# Lark's contextual lexer reads a keyword as a NAME where no keyword fits (`relu(return`);
# these words start statements or items, so they are never names
RESERVED = {"return", "param", "layer", "repeat", "model", "block", "config", "include", "if",
            "else", "and", "or", "not"}


@dataclass
class SyntaxProblem:
    """An error from Lark plus what the recovery knows about its context."""
    error: UnexpectedInput
    hint: str | None = None


class _TooMany(Exception):
    """MAX_ERRORS reached: stop parsing."""


class NestingTooDeep(Exception):
    def __init__(self, token: Token | None, line: int, column: int):
        super().__init__("nesting too deep")
        self.token, self.line, self.column = token, line, column


class NameTooLong(Exception):
    def __init__(self, token: Token):
        super().__init__("name too long")
        self.token = token


def parse_recovering(lark: Lark, text: str):
    """Parse `text`; returns (tree or None, problems). The tree is None when there are errors."""
    ip = lark.parse_interactive(text)
    ps = ip.parser_state
    lexer = ip.lexer_thread
    states = ps.parse_conf.parse_table.states
    problems: list[SyntaxProblem] = []
    lines_reported: set[int] = set()
    history: deque[Token] = deque(maxlen=3)   # the last tokens, for "line N ends with `+`"
    brackets: list[Token] = []                # open ( and [ of the current statement
    braces: list[tuple[Token, int]] = []      # open { and the parser depth that holds them
    gen = None

    def report(e: UnexpectedInput, tok: Token | None) -> None:
        line = e.line if tok is None else tok.line
        if line in lines_reported or len(problems) >= MAX_ERRORS:
            return
        lines_reported.add(line)
        if tok is not None and tok.type == "$END" and braces:
            b = braces[-1][0]
            hint = f"the `{{` at line {b.line}, column {b.column} is never closed"
        else:
            hint = _hint(tok, history, brackets, getattr(e, "expected", ()))
        problems.append(SyntaxProblem(e, hint))
        if len(problems) >= MAX_ERRORS:
            raise _TooMany()

    def next_token() -> Token | None:
        nonlocal gen
        while True:
            if gen is None:
                gen = lexer.lex(ps)
            try:
                return next(gen)
            except StopIteration:
                return None
            except UnexpectedToken as e:     # a real token, in the wrong place (consumed)
                gen = None
                return e.token
            except UnexpectedCharacters as e:  # not a token at all: report, drop one char
                gen = None
                report(e, None)
                pos = lexer.state.line_ctr.char_pos
                lexer.state.line_ctr.feed(text[pos:pos + 1])

    def pop_to(tok_type: str) -> bool:
        """Pop back to the innermost statement boundary that accepts `tok_type`."""
        stack = ps.state_stack
        for depth in range(len(stack) - 1, -1, -1):
            acts = states[stack[depth]]
            if tok_type in acts and ("RBRACE" in acts or "$END" in acts):
                del stack[depth + 1:]
                del ps.value_stack[depth:]
                brackets.clear()
                while braces and braces[-1][1] > len(stack):
                    braces.pop()
                return True
        return False

    def feed(tok: Token) -> None:
        ip.feed_token(tok)
        if tok.type in OPENERS:
            brackets.append(tok)
        elif brackets and tok.type == OPENERS.get(brackets[-1].type):
            brackets.pop()
        elif tok.type == "LBRACE":
            braces.append((tok, len(ps.state_stack)))
        elif tok.type == "RBRACE" and braces:
            braces.pop()
        if len(ps.state_stack) > 2 * MAX_NESTING:
            raise NestingTooDeep(tok, tok.line, tok.column)

    try:
        skipping, depth, prev = False, 0, None
        while (tok := next_token()) is not None:
            if tok.type in ("NAME", "PATH"):
                if len(tok) > MAX_NAME:
                    raise NameTooLong(tok)
                if tok in RESERVED:
                    tok = Token.new_borrow_pos(tok.upper(), str(tok), tok)
            sync = prev is None or tok.line > prev.end_line or tok.type == "RBRACE"
            prev = tok
            if skipping:
                if tok.type == "LBRACE":
                    depth += 1
                    continue
                if tok.type == "RBRACE" and depth:
                    depth -= 1
                    continue
                if depth or not sync or not pop_to(tok.type):
                    continue
                skipping = False
            try:
                feed(tok)
            except UnexpectedToken as e:
                report(e, tok)
                if sync and pop_to(tok.type):
                    try:
                        feed(tok)
                        history.append(tok)
                        continue
                    except UnexpectedToken:
                        pass
                skipping, depth = True, 1 if tok.type == "LBRACE" else 0
            history.append(tok)

        # the end of file sits just after the last token
        eof = (Token("$END", "", prev.end_pos, prev.end_line, prev.end_column, prev.end_line,
                     prev.end_column, prev.end_pos) if prev is not None
               else Token("$END", "", 0, 1, 1))
        if skipping and not pop_to("$END"):
            return None, problems
        try:
            tree = ip.feed_token(eof)
        except UnexpectedToken as e:
            if not skipping:
                report(e, eof)
            return None, problems
        return (None if problems else tree), problems
    except _TooMany:
        return None, problems


def _hint(tok: Token | None, history: deque, brackets: list[Token], expected) -> str | None:
    """Explain errors whose cause is on an earlier line than where the parser noticed them."""
    if tok is None:
        return None
    # `if = 2`: the keyword began a statement, so the error is at the `=`
    if tok.type == "EQUAL" and history and str(history[-1]) in RESERVED:
        return f"`{history[-1]}` is a keyword and cannot be used as a name"
    if brackets and brackets[-1].line < tok.line:
        b = brackets[-1]
        return f"the `{b}` at line {b.line}, column {b.column} is never closed"
    # `y = x +` NEWLINE `z = ...`: the parser read `x + z` and then tripped over `=`
    if len(history) >= 2:
        before, last = history[-2], history[-1]
        if (before.type in OPERATORS or str(before) in OPERATOR_TEXT) and before.end_line < last.line:
            return (f"line {before.line} ends with `{before}`, so the expression continues "
                    f"onto line {last.line}; finish it there")
    # `y = x x`: the second `x` began a new statement, which then lacks its `=`
    if history and history[-1].type == "NAME" and set(expected) <= {"EQUAL", "COMMA"} \
            and history[-1].line < tok.line:
        last = history[-1]
        return (f"`{last}` at line {last.line}, column {last.column} starts a new statement; "
                f"is an operator missing before it?")
    return None


def tree_depth_error(tree) -> tuple[int, int] | None:
    """(line, column) of the first node nested deeper than MAX_NESTING, or None.

    Iterative, so that a pathological file cannot overflow the stack here."""
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_NESTING:
            meta = node.meta
            return (getattr(meta, "line", 1), getattr(meta, "column", 1))
        for child in getattr(node, "children", ()):
            if hasattr(child, "children"):
                stack.append((child, d + 1))
    return None
