"""Static checks after parsing: every name resolves, calls match their subs, loops own their
Breaks. A typo in a branch no test runs is caught here, with its line, before any event runs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from isl_plugin.islrun.errors import IslSyntaxError
from isl_plugin.islrun.nodes import (
    Assign,
    Binary,
    BreakStmt,
    CallStmt,
    CaseStmt,
    ExitStmt,
    Expr,
    FormatStmt,
    ForStmt,
    FuncCall,
    GetRxMsgStmt,
    IfStmt,
    InputStmt,
    MacroStmt,
    MakeKeys,
    MessageStmt,
    ReturnStmt,
    RxMsgStmt,
    SaveChkInfoStmt,
    Script,
    SplitStmt,
    Stmt,
    SysVar,
    Target,
    TxMsgStmt,
    Unary,
    VarRef,
    VarStmt,
    WhileStmt,
    WholeArray,
)

# name -> "scalar" | "array" | "const" | "ref" (a Ref parameter: scalar or array, known at run time)
Scope = dict[str, str]


def _declared(stmts: Iterable[Stmt], into: Scope) -> None:
    for stmt in stmts:
        if isinstance(stmt, VarStmt):
            for decl in stmt.decls:
                kind = "const" if stmt.const else "array" if decl.size is not None else "scalar"
                into[decl.name.lower()] = kind
        elif isinstance(stmt, IfStmt):
            for _, body in stmt.branches:
                _declared(body, into)
            _declared(stmt.otherwise, into)
        elif isinstance(stmt, ForStmt | WhileStmt):
            _declared(stmt.body, into)


@dataclass
class _Checker:
    script: Script
    globals: Scope

    def error(self, line: int, message: str) -> IslSyntaxError:
        return IslSyntaxError(self.script.source, line, message)

    def run(self) -> None:
        for stmt in self.script.globals:
            for decl in stmt.decls:
                for expr in (decl.size, decl.init):
                    if expr is not None:
                        self.expr(expr, stmt.line, self.globals)
        for event in self.script.events.values():
            scope: Scope = dict(self.globals)
            _declared(event.body, scope)
            self.block(event.body, scope, loops=0, in_sub=False)
        for sub in self.script.subs.values():
            scope = dict(self.globals)
            _declared(sub.body, scope)
            for param in sub.params:
                scope[param.name.lower()] = "ref" if param.by_ref else "scalar"
            self.block(sub.body, scope, loops=0, in_sub=True)

    def kind(self, name: str, line: int, scope: Scope) -> str:
        kind = scope.get(name.lower())
        if kind is None:
            raise self.error(line, f"{name} is not declared")
        return kind

    def expr(self, expr: Expr, line: int, scope: Scope) -> None:
        if isinstance(expr, VarRef):
            kind = self.kind(expr.name, line, scope)
            if expr.index is not None:
                if kind in ("scalar", "const"):
                    raise self.error(line, f"{expr.name} is not an array")
                self.expr(expr.index, line, scope)
            elif kind == "array":
                raise self.error(line, f"{expr.name} is an array: write {expr.name}[i]")
        elif isinstance(expr, SysVar):
            if expr.index is not None:
                self.expr(expr.index, line, scope)
        elif isinstance(expr, FuncCall):
            for arg in expr.args:
                self.expr(arg, line, scope)
        elif isinstance(expr, Unary):
            self.expr(expr.operand, line, scope)
        elif isinstance(expr, Binary):
            self.expr(expr.left, line, scope)
            self.expr(expr.right, line, scope)

    def target(self, target: Target, line: int, scope: Scope) -> None:
        if isinstance(target, VarRef) and self.kind(target.name, line, scope) == "const":
            raise self.error(line, f"{target.name} is a const")
        self.expr(target, line, scope)

    def whole(self, array: WholeArray, line: int, scope: Scope) -> None:
        if self.kind(array.name, line, scope) not in ("array", "ref"):
            raise self.error(line, f"{array.name} is not an array")

    def block(self, stmts: Iterable[Stmt], scope: Scope, *, loops: int, in_sub: bool) -> None:
        for stmt in stmts:
            self.stmt(stmt, scope, loops=loops, in_sub=in_sub)

    def stmt(self, stmt: Stmt, scope: Scope, *, loops: int, in_sub: bool) -> None:
        line = stmt.line
        if isinstance(stmt, VarStmt):
            for decl in stmt.decls:
                for part in (decl.size, decl.init):
                    if part is not None:
                        self.expr(part, line, scope)
        elif isinstance(stmt, Assign):
            self.target(stmt.target, line, scope)
            self.expr(stmt.expr, line, scope)
        elif isinstance(stmt, IfStmt):
            for cond, body in stmt.branches:
                self.expr(cond, line, scope)
                self.block(body, scope, loops=loops, in_sub=in_sub)
            self.block(stmt.otherwise, scope, loops=loops, in_sub=in_sub)
        elif isinstance(stmt, ForStmt):
            self.target(stmt.var, line, scope)
            self.expr(stmt.start, line, scope)
            self.expr(stmt.end, line, scope)
            self.block(stmt.body, scope, loops=loops + 1, in_sub=in_sub)
        elif isinstance(stmt, WhileStmt):
            self.expr(stmt.cond, line, scope)
            self.block(stmt.body, scope, loops=loops + 1, in_sub=in_sub)
        elif isinstance(stmt, BreakStmt):
            if not loops:
                raise self.error(line, "Break outside a For or While")
        elif isinstance(stmt, ReturnStmt):
            if not in_sub:
                raise self.error(line, "Return outside a sub (end an event with an Exit)")
        elif isinstance(stmt, CallStmt):
            self.call(stmt, scope)
        elif isinstance(stmt, FormatStmt):
            self.target(stmt.target, line, scope)
            for item in stmt.items:
                self.expr(item.expr, line, scope)
        elif isinstance(stmt, SplitStmt):
            self.expr(stmt.source, line, scope)
            self.expr(stmt.separator, line, scope)
            for target in stmt.targets:
                if isinstance(target, WholeArray):
                    self.whole(target, line, scope)
                else:
                    self.target(target, line, scope)
        elif isinstance(stmt, CaseStmt | InputStmt):
            self.target(stmt.target, line, scope)
            if isinstance(stmt, InputStmt):
                self.expr(stmt.prompt, line, scope)
        elif isinstance(stmt, RxMsgStmt):
            for target in stmt.targets:
                self.target(target, line, scope)
        elif isinstance(stmt, TxMsgStmt | MessageStmt):
            for arg in stmt.args:
                self.expr(arg, line, scope)
        elif isinstance(stmt, GetRxMsgStmt | ExitStmt):
            part = stmt.prompt if isinstance(stmt, GetRxMsgStmt) else stmt.message
            if part is not None:
                self.expr(part, line, scope)
        elif isinstance(stmt, MacroStmt):
            for key in stmt.keys:
                self.expr(key.expr if isinstance(key, MakeKeys) else key, line, scope)
        elif isinstance(stmt, SaveChkInfoStmt):
            self.expr(stmt.expr, line, scope)

    def call(self, stmt: CallStmt, scope: Scope) -> None:
        sub = self.script.subs.get(stmt.name.lower())
        if sub is None:
            raise self.error(stmt.line, f"no sub named {stmt.name}")
        if len(stmt.args) != len(sub.params):
            raise self.error(
                stmt.line, f"{sub.name} takes {len(sub.params)} argument(s), got {len(stmt.args)}"
            )
        for number, (arg, param) in enumerate(zip(stmt.args, sub.params, strict=True), 1):
            if isinstance(arg, WholeArray):
                if not param.by_ref:
                    raise self.error(
                        stmt.line, f"argument {number}: an array needs a Ref parameter"
                    )
                self.whole(arg, stmt.line, scope)
                continue
            if param.by_ref:
                if not isinstance(arg, VarRef):
                    raise self.error(
                        stmt.line, f"argument {number} of {sub.name} is Ref: pass a variable"
                    )
                self.target(arg, stmt.line, scope)
            else:
                self.expr(arg, stmt.line, scope)


def check_script(script: Script) -> None:
    scope: Scope = {}
    for stmt in script.globals:
        for decl in stmt.decls:
            if decl.name.lower() in scope:
                raise IslSyntaxError(script.source, stmt.line, f"{decl.name} is declared twice")
            kind = "const" if stmt.const else "array" if decl.size is not None else "scalar"
            scope[decl.name.lower()] = kind
    _Checker(script, scope).run()
