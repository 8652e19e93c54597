"""Read the tokens of one logical line: names, expressions, the variables a statement writes,
types and format items. `Cursor` is what the statement parser (statements.py) reads each line
with; an expression that does not parse is an IslSyntaxError with its line and column.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.lexer import Line, Token
from isl_plugin.islrun.nodes import (
    Binary,
    Expr,
    FormatItem,
    FuncCall,
    NetCall,
    Num,
    Str,
    SysVar,
    Target,
    Unary,
    VarRef,
    WholeArray,
)
from isl_plugin.islrun.values import IslType, parse_spec
from isl_plugin.islrun.vocabulary import RESERVED

Item = TypeVar("Item")


class Cursor:
    """The tokens of one logical line, consumed left to right."""

    def __init__(self, line: Line, source: str) -> None:
        self.tokens = line.tokens
        self.line = line.number
        self.source = source
        self.pos = 0

    def col(self) -> int:
        token = self.peek()
        if token is not None:
            return token.col
        return self.tokens[-1].col + len(self.tokens[-1].text) if self.tokens else 0

    def error(self, message: str) -> IslSyntaxError:
        return IslSyntaxError(self.source, self.line, message, self.col())

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self, what: str = "more") -> Token:
        token = self.peek()
        if token is None:
            raise self.error(f"expected {what} at the end of the line")
        self.pos += 1
        return token

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token.text!r}")

    def _found(self) -> str:
        """What stands next, for an error message."""
        token = self.peek()
        return "the end of the line" if token is None else repr(token.text)

    def _accept(self, matches: Callable[[Token], bool]) -> bool:
        token = self.peek()
        if token is not None and matches(token):
            self.pos += 1
            return True
        return False

    def accept_op(self, *ops: str) -> bool:
        return self._accept(lambda token: token.is_op(*ops))

    def accept_word(self, *words: str) -> bool:
        return self._accept(lambda token: token.is_word(*words))

    def expect_op(self, op: str) -> None:
        if not self.accept_op(op):
            raise self.error(f"expected {op!r}, found {self._found()}")

    def expect_word(self, word: str) -> None:
        if not self.accept_word(word):
            raise self.error(f"expected {word!r}, found {self._found()}")

    def separated(self, item: Callable[[], Item]) -> tuple[Item, ...]:
        """One item, then one more after each ','."""
        items = [item()]
        while self.accept_op(","):
            items.append(item())
        return tuple(items)

    def listed(self, item: Callable[[], Item]) -> tuple[Item, ...]:
        """The items of a list whose '(' was just read, up to its ')': `a, b)` or `)`."""
        if self.accept_op(")"):
            return ()
        items: list[Item] = []
        while True:
            items.append(item())
            if self.accept_op(")"):
                return tuple(items)
            self.expect_op(",")

    def name(self, what: str = "a name", *, keyword_ok: bool = False) -> str:
        token = self.peek()
        if token is None or token.kind != "NAME" or "." in token.text:
            raise self.error(f"expected {what}, found {self._found()}")
        if token.lower in RESERVED and not keyword_ok:
            raise self.error(f"{token.text!r} is an ISL keyword, not {what}")
        self.pos += 1
        return token.text

    # ---- expressions ---------------------------------------------------------------------------

    def expr(self) -> Expr:
        left = self._and()
        while self.accept_word("or"):
            left = Binary("or", left, self._and())
        return left

    def _and(self) -> Expr:
        left = self._not()
        while self.accept_word("and"):
            left = Binary("and", left, self._not())
        return left

    def _not(self) -> Expr:
        if self.accept_word("not"):
            return Unary("not", self._not())
        return self._compare()

    def _compare(self) -> Expr:
        left = self._add()
        token = self.peek()
        if token is not None and token.is_op("=", "<>", "<", ">", "<=", ">="):
            self.pos += 1
            left = Binary(token.text, left, self._add())
            after = self.peek()
            if after is not None and after.is_op("=", "<>", "<", ">", "<=", ">="):
                raise self.error("comparisons do not chain; use And")
        return left

    def _add(self) -> Expr:
        return self._left_to_right(("+", "-"), self._mul)

    def _mul(self) -> Expr:
        return self._left_to_right(("*", "/"), self._unary)

    def _left_to_right(self, ops: tuple[str, ...], operand: Callable[[], Expr]) -> Expr:
        """`a - b + c` is `(a - b) + c`: operators of one precedence group to the left."""
        left = operand()
        while True:
            token = self.peek()
            if token is None or not token.is_op(*ops):
                return left
            self.pos += 1
            left = Binary(token.text, left, operand())

    def _unary(self) -> Expr:
        if self.accept_op("-"):
            return Unary("-", self._unary())
        return self._primary()

    def _primary(self) -> Expr:
        token = self.next("an expression")
        if token.kind == "NUMBER":
            return Num(Decimal(token.text) if "." in token.text else int(token.text))
        if token.kind == "STRING":
            return Str(token.text)
        if token.is_op("("):
            inner = self.expr()
            self.expect_op(")")
            return inner
        if token.kind == "SYSVAR":
            return self._sysvar(token)
        if token.kind == "NAME":
            if token.lower in ("and", "or", "not", "to", "as", "then", "step"):
                self.pos -= 1
                raise self.error(f"expected an expression, found {token.text!r}")
            nxt = self.peek()
            if "." in token.text:
                args = self._call_args() if nxt is not None and nxt.is_op("(") else ()
                return NetCall(token.text, args)
            if nxt is not None and nxt.is_op("("):
                return FuncCall(token.lower, self._call_args())
            return VarRef(token.text, self._index())
        self.pos -= 1
        raise self.error(f"expected an expression, found {token.text!r}")

    def _call_args(self) -> tuple[Expr, ...]:
        self.expect_op("(")
        if self.accept_op(")"):
            return ()
        args = self.separated(self.expr)
        self.expect_op(")")
        return args

    def _index(self) -> Expr | None:
        if not self.accept_op("["):
            return None
        if self.accept_op("]"):
            raise self.error("'[]' (a whole array) is allowed only as a Ref argument or in Split")
        index = self.expr()
        if self.accept_op(","):
            raise self.error("arrays of more than one dimension are not supported by islrun")
        self.expect_op("]")
        return index

    def _sysvar(self, token: Token) -> SysVar:
        return SysVar(token.text.upper(), self._index())

    def target(self) -> Target:
        token = self.peek()
        if token is None:
            raise self.error("expected a variable at the end of the line")
        if token.kind == "SYSVAR":
            self.pos += 1
            return self._sysvar(token)
        if token.kind != "NAME" or token.lower in ("and", "or", "not") or "." in token.text:
            raise self.error(f"expected a variable, found {token.text!r}")
        self.pos += 1
        return VarRef(token.text, self._index())

    def whole_array(self) -> WholeArray | None:
        """`name[]` if that is what comes next (consumed), else None (nothing consumed)."""
        token, after, closing = self.peek(), self.peek(1), self.peek(2)
        if (
            token is not None
            and token.kind == "NAME"
            and after is not None
            and after.is_op("[")
            and closing is not None
            and closing.is_op("]")
        ):
            self.pos += 3
            return WholeArray(token.text)
        return None

    def target_or_array(self) -> Target | WholeArray:
        return self.whole_array() or self.target()

    def type_spec(self) -> IslType:
        token = self.next("a type (A20, N9, $12, Key)")
        if token.is_op("$"):
            width = self.peek()
            if width is not None and width.kind == "NUMBER" and width.text.isdigit():
                self.pos += 1
                return IslType("$", int(width.text))
            return IslType("$")
        if token.kind == "NAME":
            lower = token.lower
            if lower == "key":
                return IslType("KEY")
            kind, digits = lower[:1], lower[1:]
            if kind in ("a", "n") and (digits == "" or digits.isdigit()):
                size = int(digits) if digits else None
                return IslType("A" if kind == "a" else "N", size)
        self.pos -= 1
        raise self.error(f"unknown type {token.text!r} (A20, N9, $12 or Key)")

    def format_item(self, *, strict: bool) -> FormatItem:
        expr = self.expr()
        token = self.peek()
        if token is not None and token.kind == "SPEC":
            spec = parse_spec(token.text)
            if spec is None and strict:
                raise self.error(f"format spec {{{token.text}}} is not one islrun knows")
            self.pos += 1
            return FormatItem(expr, spec)
        return FormatItem(expr)
