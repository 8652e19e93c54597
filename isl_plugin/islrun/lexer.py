"""Cut an ISL script into logical lines of tokens.

ISL is line oriented: one statement per line, `//` starts a comment, a `\\` at the end of a line
continues it on the next one. Strings are double-quoted with no escapes (a backslash is a
backslash: real scripts write paths such as "..\\Etc\\"). Keywords and names are case-insensitive.
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


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"[^"]*")
  | (?P<spec>\{[^{}]*\})
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<sysvar>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|<=|>=|[=<>+\-*/()\[\],:$])
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


def tokenize_line(text: str, source: str, number: int) -> tuple[Token, ...]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] == '"':
                raise IslSyntaxError(source, number, "string is not closed on its line")
            raise IslSyntaxError(source, number, f"unexpected character {text[pos]!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match[0]
        if kind == "space":
            continue
        if kind == "string":
            tokens.append(Token("STRING", value[1:-1]))
        elif kind == "spec":
            tokens.append(Token("SPEC", value[1:-1]))
        elif kind == "number":
            tokens.append(Token("NUMBER", value))
        elif kind == "sysvar":
            tokens.append(Token("SYSVAR", value))
        elif kind == "name":
            tokens.append(Token("NAME", value))
        else:
            tokens.append(Token("OP", value))
    return tuple(tokens)


def logical_lines(text: str, source: str) -> list[Line]:
    """Non-empty logical lines with their first physical line number."""
    lines: list[Line] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        code = _strip_comment(raw).rstrip()
        if not pending:
            start = number
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        code = pending + code
        pending = ""
        tokens = tokenize_line(code, source, start)
        if tokens:
            lines.append(Line(start, tokens))
    if pending.strip():
        raise IslSyntaxError(source, start, "the script ends inside a continued line")
    return lines
