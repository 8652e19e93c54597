"""The parsed form of an ISL script: expressions, statements, events and subs.

Names are kept as written (for messages) and looked up lower-cased, as ISL is case-insensitive.
Every statement carries the line it starts on, so a runtime error can say where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from isl_plugin.islrun.values import IslType

# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    value: int | Decimal


@dataclass(frozen=True, slots=True)
class Str:
    value: str


@dataclass(frozen=True, slots=True)
class VarRef:
    name: str
    index: Expr | None = None  # arr[i]


@dataclass(frozen=True, slots=True)
class SysVar:
    name: str  # upper case, with its @
    index: Expr | None = None  # @DTL_TYPE[i]


@dataclass(frozen=True, slots=True)
class FuncCall:
    name: str  # lower case: len, mid, trim, key, bit ...; a name ISL does not know fails when run
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class NetCall:
    """`Namespace.Class.Method(args)`: a Simphony .NET call (NetImport), as written."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" | "not"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # + - * / = <> < > <= >= and or
    left: Expr
    right: Expr


Expr = Num | Str | VarRef | SysVar | FuncCall | NetCall | Unary | Binary


@dataclass(frozen=True, slots=True)
class WholeArray:
    """`arr[]`: a whole array, as a Ref argument or the last target of Split."""

    name: str


Target = VarRef | SysVar  # something a statement can assign to (SysVar: the writable ones)


@dataclass(frozen=True, slots=True)
class RefArg:
    """`ref x` (or `ref arr[]`) in a DLL call: the DLL may write the variable back."""

    target: Target | WholeArray


@dataclass(frozen=True, slots=True)
class FieldArg:
    """`var{spec}` in DisplayInput / DisplayMSInput: an input field bound to a variable."""

    target: Target
    spec: str = ""


@dataclass(frozen=True, slots=True)
class Word:
    """A bare word a statement takes as a keyword, such as FOpen's `read`, `write`, `append`."""

    text: str


# ---- statements --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decl:
    name: str
    type: IslType
    size: Expr | None = None  # an array's element count
    init: Expr | None = None


@dataclass(frozen=True, slots=True)
class VarStmt:
    line: int
    decls: tuple[Decl, ...]
    const: bool = False


@dataclass(frozen=True, slots=True)
class Assign:
    line: int
    target: Target
    expr: Expr


@dataclass(frozen=True, slots=True)
class IfStmt:
    line: int
    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...]
    otherwise: tuple[Stmt, ...] = ()


@dataclass(frozen=True, slots=True)
class ForStmt:
    line: int
    var: VarRef
    start: Expr
    end: Expr
    body: tuple[Stmt, ...]
    step: Expr | None = None


@dataclass(frozen=True, slots=True)
class ForeverStmt:
    """`Forever` ... `EndFor`: loops until Break or an exit."""

    line: int
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class TryStmt:
    """Simphony's `Try` ... `Catch` ... `EndTry`: a failure in the body runs the handler."""

    line: int
    body: tuple[Stmt, ...]
    handler: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class WhileStmt:
    line: int
    cond: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class BreakStmt:
    line: int


@dataclass(frozen=True, slots=True)
class ReturnStmt:
    line: int


@dataclass(frozen=True, slots=True)
class CallStmt:
    line: int
    name: str
    args: tuple[Expr | WholeArray, ...]


@dataclass(frozen=True, slots=True)
class FormatItem:
    expr: Expr
    spec: tuple[str, bool, int] | None = None


@dataclass(frozen=True, slots=True)
class FormatStmt:
    line: int
    target: Target
    items: tuple[FormatItem, ...]


@dataclass(frozen=True, slots=True)
class SplitStmt:
    line: int
    source: Expr
    separator: Expr
    targets: tuple[Target | WholeArray, ...]


@dataclass(frozen=True, slots=True)
class CaseStmt:
    """`UpperCase var` / `LowerCase var`: change the variable in place."""

    line: int
    target: Target
    upper: bool


@dataclass(frozen=True, slots=True)
class TxMsgStmt:
    line: int
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class GetRxMsgStmt:
    line: int
    prompt: Expr | None


@dataclass(frozen=True, slots=True)
class WaitForRxMsgStmt:
    line: int


@dataclass(frozen=True, slots=True)
class RxMsgStmt:
    line: int
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class InputStmt:
    line: int
    target: Target
    prompt: Expr


@dataclass(frozen=True, slots=True)
class MessageStmt:
    line: int
    kind: str  # "info" | "error" | "prompt"
    args: tuple[Expr, ...]
    specs: tuple[tuple[str, bool, int] | None, ...] = ()  # a {spec} after an argument


@dataclass(frozen=True, slots=True)
class ExitStmt:
    line: int
    kind: str  # "ExitCancel" | "ExitContinue" | "ExitWithError"
    message: Expr | None = None


@dataclass(frozen=True, slots=True)
class MakeKeys:
    expr: Expr


@dataclass(frozen=True, slots=True)
class MacroStmt:
    line: int
    keys: tuple[Expr | MakeKeys, ...]


@dataclass(frozen=True, slots=True)
class SaveChkInfoStmt:
    line: int
    expr: Expr


@dataclass(frozen=True, slots=True)
class ClearChkInfoStmt:
    line: int


DeviceArg = Expr | WholeArray | FormatItem | FieldArg | Word


@dataclass(frozen=True, slots=True)
class DeviceStmt:
    """A statement that talks to the workstation around the script: windows and displays, the
    touchscreen, files, printing, DLL handles, sleeps and beeps. `name` is lower case."""

    line: int
    name: str
    args: tuple[DeviceArg, ...]


@dataclass(frozen=True, slots=True)
class DllCallStmt:
    """`DLLCall[_CDecl|_StdCall] handle, Function(args)`; `ref` arguments may be written back."""

    line: int
    handle: Target
    function: str
    args: tuple[Expr | RefArg, ...]


@dataclass(frozen=True, slots=True)
class NetCallStmt:
    line: int
    call: NetCall


@dataclass(frozen=True, slots=True)
class NoOpStmt:
    """A statement with no effect islrun can show (a directive written inside an event ...)."""

    line: int
    name: str


@dataclass(frozen=True, slots=True)
class BadStmt:
    """A line that did not parse; kept so the rest of the file loads (`--check` goes on after
    it). Running it is an error."""

    line: int
    col: int
    message: str


Stmt = (
    VarStmt
    | Assign
    | IfStmt
    | ForStmt
    | WhileStmt
    | BreakStmt
    | ReturnStmt
    | CallStmt
    | FormatStmt
    | SplitStmt
    | CaseStmt
    | TxMsgStmt
    | GetRxMsgStmt
    | WaitForRxMsgStmt
    | RxMsgStmt
    | InputStmt
    | MessageStmt
    | ExitStmt
    | MacroStmt
    | SaveChkInfoStmt
    | ClearChkInfoStmt
    | ForeverStmt
    | TryStmt
    | DeviceStmt
    | DllCallStmt
    | NetCallStmt
    | NoOpStmt
    | BadStmt
)

# ---- the program -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    by_ref: bool
    type: IslType | None  # None for `Ref x`: it takes the type of what is passed


@dataclass(frozen=True, slots=True)
class Sub:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # lower case: inq, final_tender, rxmsg, init, ...
    arg: str  # "" | the inquiry number | a name in upper case (a reply, a const, `*`)
    body: tuple[Stmt, ...]
    line: int

    @property
    def title(self) -> str:
        return f"{self.kind} : {self.arg}" if self.arg else self.kind


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """Something the parser or the linter has to say about a line: `error` (the line does not
    parse: the script is refused) or `warning` (it loads, but may fail when that code runs)."""

    source: str
    line: int
    col: int
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" + (f":{self.col}" if self.col else "")
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class Script:
    source: str  # file name, for messages
    directives: set[str] = field(default_factory=set)  # lower case
    globals: list[VarStmt | Assign] = field(default_factory=list)  # run in order at load
    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    subs: dict[str, Sub] = field(default_factory=dict)  # by lower-case name
    imports: list[str] = field(default_factory=list)  # NetImport assemblies
    includes: list[str] = field(default_factory=list)  # files Include brought in
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def event(self, kind: str, arg: str = "") -> Event | None:
        return self.events.get((kind.lower(), arg.upper()))
