"""The linter: what a script names that may not be there when its code runs.

A POS loads a script whose dead code names a variable, a sub or a system variable it does not
have (public scripts do: docs/isl.md), so none of this refuses a script: each finding is a
warning with its line, and the interpreter fails only if that code runs. `--check` prints them;
a script meant to be clean (the plugin) is tested to have none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from isl_plugin.islrun import nodes
from isl_plugin.islrun.sysvars import sysvar_spec
from isl_plugin.islrun.vocabulary import call_problem

# name -> "scalar" | "array" | "const" | "ref" (a Ref parameter: scalar or array, known at run time)
Scope = dict[str, str]


def _declared(stmts: Iterable[nodes.Stmt], into: Scope) -> None:
    for stmt in stmts:
        if isinstance(stmt, nodes.VarStmt):
            for decl in stmt.decls:
                kind = "const" if stmt.const else "array" if decl.size is not None else "scalar"
                into[decl.name.lower()] = kind
        elif isinstance(stmt, nodes.IfStmt):
            for _, body in stmt.branches:
                _declared(body, into)
            _declared(stmt.otherwise, into)
        elif isinstance(stmt, nodes.ForStmt | nodes.WhileStmt | nodes.ForeverStmt):
            _declared(stmt.body, into)
        elif isinstance(stmt, nodes.TryStmt):
            _declared(stmt.body, into)
            _declared(stmt.handler, into)


@dataclass
class _Linter:
    script: nodes.Script
    globals: Scope
    callers: Scope = field(default_factory=dict)  # every event's and sub's own variables
    found: list[nodes.Diagnostic] = field(default_factory=list)
    _seen: set[tuple[int, str]] = field(default_factory=set)

    def warn(self, line: int, message: str) -> None:
        if (line, message) not in self._seen:
            self._seen.add((line, message))
            self.found.append(nodes.Diagnostic(self.script.source, line, 0, "warning", message))

    def run(self) -> list[nodes.Diagnostic]:
        # A sub sees the variables of the event (or sub) that called it: a name declared in
        # any of them may be there when the sub runs.
        for event in self.script.events.values():
            _declared(event.body, self.callers)
        for sub in self.script.subs.values():
            _declared(sub.body, self.callers)
            for param in sub.params:
                self.callers.setdefault(param.name.lower(), "ref" if param.by_ref else "scalar")
        for stmt in self.script.globals:
            if isinstance(stmt, nodes.Assign):
                self.stmt(stmt, self.globals, loops=0, in_sub=True)
                continue
            for decl in stmt.decls:
                for expr in (decl.size, decl.init):
                    if expr is not None:
                        self.expr(expr, stmt.line, self.globals)
        for event in self.script.events.values():
            scope: Scope = dict(self.globals)
            _declared(event.body, scope)
            self.block(event.body, scope, loops=0, in_sub=False)
        for sub in self.script.subs.values():
            scope = {**self.callers, **self.globals}
            _declared(sub.body, scope)
            for param in sub.params:
                scope[param.name.lower()] = "ref" if param.by_ref else "scalar"
            self.block(sub.body, scope, loops=0, in_sub=True)
        return sorted(self.found, key=lambda d: d.line)

    def kind(self, name: str, line: int, scope: Scope) -> str | None:
        kind = scope.get(name.lower())
        if kind is None:
            self.warn(line, f"{name} is not declared (fails if this line runs)")
        return kind

    def expr(self, expr: nodes.Expr, line: int, scope: Scope) -> None:
        if isinstance(expr, nodes.VarRef):
            kind = self.kind(expr.name, line, scope)
            if expr.index is not None:
                if kind in ("scalar", "const"):
                    self.warn(line, f"{expr.name} is not an array")
                self.expr(expr.index, line, scope)
            elif kind == "array":
                self.warn(line, f"{expr.name} is an array: write {expr.name}[i]")
        elif isinstance(expr, nodes.SysVar):
            spec = sysvar_spec(expr.name)
            if spec is None:
                self.warn(line, f"system variable {expr.name} is not simulated by islrun")
            elif spec.indexed and expr.index is None:
                self.warn(line, f"{expr.name} needs an index, as in {expr.name}[i]")
            elif not spec.indexed and expr.index is not None:
                self.warn(line, f"{expr.name} takes no index (islrun ignores it)")
            if expr.index is not None:
                self.expr(expr.index, line, scope)
        elif isinstance(expr, nodes.FuncCall):
            problem = call_problem(expr.name, len(expr.args))
            if problem is not None:
                self.warn(line, problem)
            if expr.name == "arraysize" and len(expr.args) == 1:
                arg = expr.args[0]
                if isinstance(arg, nodes.VarRef) and arg.index is None:
                    self.kind(arg.name, line, scope)
                    return
            for arg in expr.args:
                self.expr(arg, line, scope)
        elif isinstance(expr, nodes.NetCall):
            if not self.script.imports:
                self.warn(line, f"{expr.name}: a .NET call with no NetImport")
            for arg in expr.args:
                self.expr(arg, line, scope)
        elif isinstance(expr, nodes.Unary):
            self.expr(expr.operand, line, scope)
        elif isinstance(expr, nodes.Binary):
            self.expr(expr.left, line, scope)
            self.expr(expr.right, line, scope)

    def target(self, target: nodes.Target, line: int, scope: Scope) -> None:
        if isinstance(target, nodes.SysVar):
            spec = sysvar_spec(target.name)
            if spec is not None and not spec.writable:
                self.warn(line, f"{target.name} cannot be assigned")
        elif self.kind(target.name, line, scope) == "const":
            self.warn(line, f"{target.name} is a const")
            return
        self.expr(target, line, scope)

    def whole(self, array: nodes.WholeArray, line: int, scope: Scope) -> None:
        kind = self.kind(array.name, line, scope)
        if kind is not None and kind not in ("array", "ref"):
            self.warn(line, f"{array.name} is not an array")

    def block(self, stmts: Iterable[nodes.Stmt], scope: Scope, *, loops: int, in_sub: bool) -> None:
        for stmt in stmts:
            self.stmt(stmt, scope, loops=loops, in_sub=in_sub)

    def stmt(self, stmt: nodes.Stmt, scope: Scope, *, loops: int, in_sub: bool) -> None:
        line = stmt.line
        if isinstance(stmt, nodes.VarStmt):
            for decl in stmt.decls:
                for part in (decl.size, decl.init):
                    if part is not None:
                        self.expr(part, line, scope)
        elif isinstance(stmt, nodes.Assign):
            self.target(stmt.target, line, scope)
            self.expr(stmt.expr, line, scope)
        elif isinstance(stmt, nodes.IfStmt):
            for cond, body in stmt.branches:
                self.expr(cond, line, scope)
                self.block(body, scope, loops=loops, in_sub=in_sub)
            self.block(stmt.otherwise, scope, loops=loops, in_sub=in_sub)
        elif isinstance(stmt, nodes.ForStmt):
            self.target(stmt.var, line, scope)
            for part in (stmt.start, stmt.end, stmt.step):
                if part is not None:
                    self.expr(part, line, scope)
            self.block(stmt.body, scope, loops=loops + 1, in_sub=in_sub)
        elif isinstance(stmt, nodes.WhileStmt):
            self.expr(stmt.cond, line, scope)
            self.block(stmt.body, scope, loops=loops + 1, in_sub=in_sub)
        elif isinstance(stmt, nodes.ForeverStmt):
            self.block(stmt.body, scope, loops=loops + 1, in_sub=in_sub)
        elif isinstance(stmt, nodes.TryStmt):
            self.block(stmt.body, scope, loops=loops, in_sub=in_sub)
            self.block(stmt.handler, scope, loops=loops, in_sub=in_sub)
        elif isinstance(stmt, nodes.BreakStmt):
            if not loops:
                self.warn(line, "Break outside a For, Forever or While")
        elif isinstance(stmt, nodes.ReturnStmt):
            if not in_sub:
                self.warn(line, "Return in an event ends the event (an Exit says how)")
        elif isinstance(stmt, nodes.CallStmt):
            self.call(stmt, scope)
        elif isinstance(stmt, nodes.FormatStmt):
            self.target(stmt.target, line, scope)
            for item in stmt.items:
                self.expr(item.expr, line, scope)
        elif isinstance(stmt, nodes.SplitStmt):
            self.expr(stmt.source, line, scope)
            self.expr(stmt.separator, line, scope)
            for target in stmt.targets:
                if isinstance(target, nodes.WholeArray):
                    self.whole(target, line, scope)
                else:
                    self.target(target, line, scope)
        elif isinstance(stmt, nodes.CaseStmt | nodes.InputStmt):
            self.target(stmt.target, line, scope)
            if isinstance(stmt, nodes.InputStmt):
                self.expr(stmt.prompt, line, scope)
        elif isinstance(stmt, nodes.RxMsgStmt):
            for target in stmt.targets:
                self.target(target, line, scope)
        elif isinstance(stmt, nodes.TxMsgStmt | nodes.MessageStmt):
            for arg in stmt.args:
                self.expr(arg, line, scope)
        elif isinstance(stmt, nodes.GetRxMsgStmt | nodes.ExitStmt):
            part = stmt.prompt if isinstance(stmt, nodes.GetRxMsgStmt) else stmt.message
            if part is not None:
                self.expr(part, line, scope)
        elif isinstance(stmt, nodes.MacroStmt):
            for key in stmt.keys:
                self.expr(key.expr if isinstance(key, nodes.MakeKeys) else key, line, scope)
        elif isinstance(stmt, nodes.SaveChkInfoStmt):
            self.expr(stmt.expr, line, scope)
        elif isinstance(stmt, nodes.DeviceStmt):
            self.device(stmt, scope)
        elif isinstance(stmt, nodes.DllCallStmt):
            self.target(stmt.handle, line, scope)
            for dll_arg in stmt.args:
                if isinstance(dll_arg, nodes.RefArg):
                    if isinstance(dll_arg.target, nodes.WholeArray):
                        self.whole(dll_arg.target, line, scope)
                    else:
                        self.target(dll_arg.target, line, scope)
                else:
                    self.expr(dll_arg, line, scope)
        elif isinstance(stmt, nodes.NetCallStmt):
            self.expr(stmt.call, line, scope)
        elif isinstance(stmt, nodes.BadStmt):
            pass  # the parser reported it

    def device(self, stmt: nodes.DeviceStmt, scope: Scope) -> None:
        line = stmt.line
        for number, arg in enumerate(stmt.args):
            if isinstance(arg, nodes.WholeArray):
                self.whole(arg, line, scope)
            elif isinstance(arg, nodes.FieldArg):
                self.target(arg.target, line, scope)
            elif isinstance(arg, nodes.FormatItem):
                self.expr(arg.expr, line, scope)
            elif isinstance(arg, nodes.Word):
                pass
            elif (
                (stmt.name in ("dllload", "fopen", "inputkey") and number == 0)
                or (stmt.name == "inputkey" and number == 1)
                or (stmt.name in ("fread", "freadln") and number > 0)
            ):
                self.target(arg, line, scope)  # type: ignore[arg-type]
            else:
                self.expr(arg, line, scope)

    def call(self, stmt: nodes.CallStmt, scope: Scope) -> None:
        sub = self.script.subs.get(stmt.name.lower())
        if sub is None:
            self.warn(stmt.line, f"no sub named {stmt.name} (fails if this line runs)")
            for arg in stmt.args:
                if not isinstance(arg, nodes.WholeArray):
                    self.expr(arg, stmt.line, scope)
            return
        if len(stmt.args) != len(sub.params):
            self.warn(
                stmt.line, f"{sub.name} takes {len(sub.params)} argument(s), got {len(stmt.args)}"
            )
        for number, (arg, param) in enumerate(zip(stmt.args, sub.params, strict=False), 1):
            if isinstance(arg, nodes.WholeArray):
                if not param.by_ref:
                    self.warn(stmt.line, f"argument {number}: an array needs a Ref parameter")
                self.whole(arg, stmt.line, scope)
                continue
            if param.by_ref:
                if not isinstance(arg, nodes.VarRef):
                    self.warn(stmt.line, f"argument {number} of {sub.name} is Ref: pass a variable")
                    self.expr(arg, stmt.line, scope)
                else:
                    self.target(arg, stmt.line, scope)
            else:
                self.expr(arg, stmt.line, scope)


def lint_script(script: nodes.Script) -> list[nodes.Diagnostic]:
    scope: Scope = {}
    found: list[nodes.Diagnostic] = []
    for stmt in script.globals:
        if isinstance(stmt, nodes.Assign):
            continue
        for decl in stmt.decls:
            if decl.name.lower() in scope:
                found.append(
                    nodes.Diagnostic(
                        script.source, stmt.line, 0, "warning", f"{decl.name} is declared twice"
                    )
                )
            kind = "const" if stmt.const else "array" if decl.size is not None else "scalar"
            scope[decl.name.lower()] = kind
    return found + _Linter(script, scope).run()
