"""Cut an ISL script into logical lines of tokens.

ISL is line oriented: one statement per line, `//` starts a comment, a `\\` at the end of a line
continues it on the next one. Strings are double-quoted with no escapes (a backslash is a
backslash: real scripts write paths such as "..\\Etc\\"). Keywords and names are case-insensitive.
Numbers are decimal (`12`, `2.50`) or hexadecimal (`0x1F`). A dotted name (`Mikos.Fiscal.Send`) is
one token: Simphony scripts call .NET methods by it.

A line that cannot be cut (a character ISL does not use, a string left open) does not stop the
rest of the file: it comes back with its error, so the linter can report it and go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from isl_plugin.islrun.errors import IslSyntaxError

TokenKind = Literal["NAME", "SYSVAR", "NUMBER", "STRING", "OP", "SPEC"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # as written (a STRING without its quotes, a SPEC without its braces)
    col: int = 0  # 1-based column in the physical line it starts on (0: unknown)

    @property
    def lower(self) -> str:
        return self.text.lower()

    def is_op(self, *ops: str) -> bool:
        return self.kind == "OP" and self.text in ops

    def is_word(self, *words: str) -> bool:
        return self.kind == "NAME" and self.text.lower() in words


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # of the first physical line
    tokens: tuple[Token, ...]
    error: IslSyntaxError | None = None  # the line could not be cut into tokens


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"[^"]*")
  | (?P<spec>\{[^{}]*\})
  | (?P<hex>0[xX][0-9A-Fa-f]+)
  | (?P<number>\d+(?:\.\d+)?|\.\d+)
  | (?P<sysvar>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><>|<=|>=|[=<>+\-*/()\[\],:$;])
    """,
    re.VERBOSE,
)


def _strip_comment(text: str) -> str:
    """Drop a `//` comment, ignoring `//` inside a string."""
    in_string = False
    for i, char in enumerate(text):
        if char == '"':
            in_string = not in_string
        elif char == "/" and not in_string and text.startswith("//", i):
            return text[:i]
    return text


def tokenize_line(
    text: str, source: str, number: int, columns: list[int] | None = None
) -> tuple[Token, ...]:
    """The tokens of one logical line; `columns` maps a position in `text` to its column."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        col = columns[pos] if columns is not None and pos < len(columns) else pos + 1
        if match is None:
            if text[pos] == '"':
                raise IslSyntaxError(source, number, "string is not closed on its line", col)
            raise IslSyntaxError(source, number, f"unexpected character {text[pos]!r}", col)
        pos = match.end()
        kind = match.lastgroup
        value = match[0]
        if kind == "space":
            continue
        if kind == "string":
            tokens.append(Token("STRING", value[1:-1], col))
        elif kind == "spec":
            tokens.append(Token("SPEC", value[1:-1], col))
        elif kind == "hex":
            tokens.append(Token("NUMBER", str(int(value, 16)), col))
        elif kind == "number":
            tokens.append(Token("NUMBER", value if not value.startswith(".") else "0" + value, col))
        elif kind == "sysvar":
            tokens.append(Token("SYSVAR", value, col))
        elif kind == "name":
            tokens.append(Token("NAME", value, col))
        else:
            tokens.append(Token("OP", value, col))
    return tuple(tokens)


def logical_lines(text: str, source: str) -> list[Line]:
    """Non-empty logical lines with their first physical line number.

    A line that cannot be tokenised comes back with `error` set and no tokens."""
    lines: list[Line] = []
    pending = ""
    pending_cols: list[int] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        code = _strip_comment(raw).rstrip()
        if not pending:
            start = number
        cols = list(range(1, len(code) + 1))
        if code.endswith("\\"):
            pending += code[:-1] + " "
            pending_cols += [*cols[:-1], len(code)]
            continue
        code, cols = pending + code, pending_cols + cols
        pending, pending_cols = "", []
        try:
            tokens = tokenize_line(code, source, start, cols)
        except IslSyntaxError as error:
            lines.append(Line(start, (), error))
            continue
        if tokens:
            lines.append(Line(start, tokens))
    if pending.strip():
        lines.append(
            Line(
                start, (), IslSyntaxError(source, start, "the script ends inside a continued line")
            )
        )
    return lines
