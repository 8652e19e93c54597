"""Parse ISL as the field writes it (docs/isl.md lists the public scripts this was measured on).

The parser knows every statement real scripts use: directives, `var`/`lvar`/`const`, events and
subs, If/ElseIf/Else, For (with Step), Forever, While, Try/Catch, Call, Format, Split, the link
statements (TxMsg, GetRxMsg, WaitForRxMsg, RxMsg), Input and InputKey, messages, exits,
LoadKybdMacro, check information lines, windows and displays, the ISL touchscreen, files,
printing, DLL calls, Include, NetImport and .NET calls. This module reads the top of a script
(directives, globals, events, subs, Include, NetImport); statements.py the blocks inside events
and subs, expressions.py the tokens of one line, vocabulary.py the words ISL keeps for itself.

It does not stop at the first bad line: a line it cannot read becomes a `Diagnostic` (line and
column) and a `BadStmt` that fails only if it runs, and parsing goes on. `parse_script` refuses a
script with any error; `read_script` returns it with its diagnostics (`--check`, the corpus).
Names are not resolved here: the linter (checker.py) warns, and the interpreter resolves them
when the code runs, as a POS loads scripts whose dead code names things it does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from isl_plugin.islrun.checker import lint_script
from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.expressions import Cursor
from isl_plugin.islrun.lexer import Line
from isl_plugin.islrun.nodes import (
    Assign,
    Diagnostic,
    Event,
    Expr,
    Num,
    Param,
    Script,
    Sub,
    SysVar,
    Unary,
    VarStmt,
)
from isl_plugin.islrun.statements import BLOCK_ENDS, StatementParser, first_word
from isl_plugin.islrun.vocabulary import DIRECTIVES

IncludeLoader = Callable[[str], tuple[str, str]]  # name as written -> (text, source name)


class Parser(StatementParser):
    def __init__(
        self,
        text: str,
        source: str,
        *,
        include: IncludeLoader | None = None,
        seen: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(text, source)
        self.include = include
        self.seen = seen | {source.lower()}

    def parse(self) -> Script:
        script = Script(self.source)
        while self.index < len(self.lines):
            line = self.lines[self.index]
            self.index += 1
            if line.error is not None:
                self.report(line.error)
                continue
            try:
                self._top(line, script)
            except IslSyntaxError as error:
                self.report(error)
        script.diagnostics = self.diagnostics + script.diagnostics
        _resolve_named_inquiries(script)
        return script

    def _top(self, line: Line, script: Script) -> None:
        cursor = Cursor(line, self.source)
        word = first_word(line)
        if word in DIRECTIVES:
            cursor.next()
            cursor.end()
            script.directives.add(word)
        elif line.tokens[0].kind == "SYSVAR":
            statement = self._statement(cursor)
            assert isinstance(statement, Assign)
            if isinstance(statement.target, SysVar) and statement.target.name == "@TRACE":
                script.directives.add("trace")
            script.globals.append(statement)
        elif word in ("var", "lvar", "const"):
            statement = self._statement(cursor)
            assert isinstance(statement, VarStmt)
            script.globals.append(statement)
        elif word == "event":
            event = self._event(cursor)
            key = (event.kind, event.arg)
            if key in script.events:
                self.error_at(line, f"event {event.title} is defined twice")
            else:
                script.events[key] = event
        elif word == "sub":
            sub = self._sub(cursor)
            if sub.name.lower() in script.subs:
                self.error_at(line, f"sub {sub.name} is defined twice")
            else:
                script.subs[sub.name.lower()] = sub
        elif word == "include":
            self._include(cursor, script)
        elif word == "netimport":
            cursor.next()
            cursor.accept_word("from")
            token = cursor.next("the assembly's path")
            if token.kind != "STRING":
                raise cursor.error('NetImport from "path\\to\\assembly.dll"')
            cursor.end()
            script.imports.append(token.text)
        elif word in BLOCK_ENDS:
            self.error_at(line, f"{line.tokens[0].text!r} without its block")
        else:
            self.error_at(
                line,
                f"{line.tokens[0].text!r}: only directives, var/const, Event, Sub, Include and "
                "NetImport may stand outside an event or a sub",
            )

    def _include(self, cursor: Cursor, script: Script) -> None:
        cursor.next()
        token = cursor.next("the file to include")
        if token.kind != "STRING":
            raise cursor.error('Include "file.isl"')
        cursor.end()
        name = token.text
        if self.include is None:
            raise cursor.error(f"Include {name!r}: no folder to include from")
        try:
            text, source = self.include(name)
        except OSError as error:
            raise cursor.error(f"Include {name!r}: {error.strerror or error}") from None
        if source.lower() in self.seen:
            raise cursor.error(f"Include {name!r} includes itself")
        inner = Parser(text, source, include=self.include, seen=self.seen).parse()
        script.includes += [source, *inner.includes]
        script.diagnostics += inner.diagnostics
        script.directives |= inner.directives
        script.globals += inner.globals
        script.imports += inner.imports
        for event_key, event in inner.events.items():
            if event_key in script.events:
                self.report(cursor.error(f"event {event.title} is defined twice (in {source})"))
            script.events.setdefault(event_key, event)
        for key, sub in inner.subs.items():
            if key in script.subs:
                self.report(cursor.error(f"sub {sub.name} is defined twice (in {source})"))
            script.subs.setdefault(key, sub)

    def _event(self, cursor: Cursor) -> Event:
        cursor.expect_word("event")
        kind = cursor.name("an event name", keyword_ok=True).lower()
        arg, body = self._headed_block(
            lambda: _event_arg(cursor, kind), {"endevent"}, cursor.line, "Event"
        )
        return Event(kind, arg, body, cursor.line)

    def _sub(self, cursor: Cursor) -> Sub:
        cursor.expect_word("sub")
        name = cursor.name("a sub name")
        params, body = self._headed_block(lambda: _params(cursor), {"endsub"}, cursor.line, "Sub")
        return Sub(name, params, body, cursor.line)


def _event_arg(cursor: Cursor, kind: str) -> str:
    """What follows `Event kind`: `: 7`, `: NAME` or `: *`, or nothing."""
    arg = ""
    if cursor.accept_op(":"):
        token = cursor.next("the event's argument")
        if token.kind == "NUMBER" and token.text.isdigit():
            arg = str(int(token.text))
        elif token.kind == "NAME" or token.is_op("*"):
            arg = token.text.upper()
        else:
            raise cursor.error(f"unexpected event argument {token.text!r}")
    cursor.end()
    if kind == "inq" and not arg:
        raise cursor.error("Event Inq needs a number or a name: Event Inq : 1")
    if kind == "rxmsg" and not arg:
        raise cursor.error("Event RxMsg needs a reply name: Event RxMsg : IDENT_OK")
    return arg


def _params(cursor: Cursor) -> tuple[Param, ...]:
    """What follows `Sub name`: `(Var a : N9, Ref b)`, `()` or nothing."""
    params: tuple[Param, ...] = ()
    if cursor.accept_op("("):
        params = cursor.listed(lambda: _param(cursor))
    cursor.end()
    seen = set()
    for param in params:
        if param.name.lower() in seen:
            raise cursor.error(f"parameter {param.name} appears twice")
        seen.add(param.name.lower())
    return params


def _param(cursor: Cursor) -> Param:
    if cursor.accept_word("ref"):
        name = cursor.name("a parameter name")
        if cursor.accept_op("["):
            cursor.expect_op("]")
        return Param(name, True, None)
    if cursor.accept_word("var"):
        name = cursor.name("a parameter name")
        cursor.expect_op(":")
        return Param(name, False, cursor.type_spec())
    raise cursor.error("a parameter is 'Var name : type' or 'Ref name'")


def _literal(expr: Expr | None) -> int | None:
    if isinstance(expr, Num) and isinstance(expr.value, int):
        return expr.value
    if isinstance(expr, Unary) and expr.op == "-":
        inner = _literal(expr.operand)
        return None if inner is None else -inner
    return None


def _resolve_named_inquiries(script: Script) -> None:
    """`Event Inq : INQ_PRINT` with `const INQ_PRINT : N3 = 7` (or a var with a whole-number
    value) is inquiry 7; another name (Simphony's `Event Inq : GetTaxTotals`) stays a name."""
    values: dict[str, int] = {}
    for stmt in script.globals:
        if isinstance(stmt, VarStmt):
            for decl in stmt.decls:
                value = _literal(decl.init)
                if value is not None and decl.size is None:
                    values[decl.name.upper()] = value
    for key, event in list(script.events.items()):
        if event.kind == "inq" and event.arg in values:
            number = str(values[event.arg])
            del script.events[key]
            if ("inq", number) in script.events:
                script.diagnostics.append(
                    Diagnostic(
                        script.source,
                        event.line,
                        0,
                        "error",
                        f"event inq : {number} is defined twice",
                    )
                )
                continue
            script.events[("inq", number)] = Event(event.kind, number, event.body, event.line)


def folder_loader(folder: Path) -> IncludeLoader:
    """Include files from `folder` (the script's own), by name, whatever their case."""

    def load(name: str) -> tuple[str, str]:
        relative = name.replace("\\", "/").split("/")[-1]
        path = folder / relative
        if not path.exists() and folder.is_dir():
            matches = [p for p in folder.iterdir() if p.name.lower() == relative.lower()]
            if matches:
                path = matches[0]
        return path.read_text(encoding="cp1252"), path.name

    return load


def read_script(
    text: str, source: str = "<script>", *, include: IncludeLoader | None = None
) -> Script:
    """Parse and lint a script, whatever it holds: every problem is in `script.diagnostics`."""
    script = Parser(text, source, include=include).parse()
    script.diagnostics += lint_script(script)
    return script


def parse_script(
    text: str, source: str = "<script>", *, include: IncludeLoader | None = None
) -> Script:
    """Parse a script; IslSyntaxError names the first line that does not parse. The linter's
    warnings are in `script.warnings`."""
    script = read_script(text, source, include=include)
    errors = script.errors
    if errors:
        first = errors[0]
        raise IslSyntaxError(first.source, first.line, first.message, first.col)
    return script
