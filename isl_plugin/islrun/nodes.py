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
class _Statement:
    """What every statement carries: the line it starts on."""

    line: int


@dataclass(frozen=True, slots=True)
class Decl:
    name: str
    type: IslType
    size: Expr | None = None  # an array's element count
    init: Expr | None = None


@dataclass(frozen=True, slots=True)
class VarStmt(_Statement):
    decls: tuple[Decl, ...]
    const: bool = False


@dataclass(frozen=True, slots=True)
class Assign(_Statement):
    target: Target
    expr: Expr


@dataclass(frozen=True, slots=True)
class IfStmt(_Statement):
    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...]
    otherwise: tuple[Stmt, ...] = ()


@dataclass(frozen=True, slots=True)
class ForStmt(_Statement):
    var: VarRef
    start: Expr
    end: Expr
    body: tuple[Stmt, ...]
    step: Expr | None = None


@dataclass(frozen=True, slots=True)
class ForeverStmt(_Statement):
    """`Forever` ... `EndFor`: loops until Break or an exit."""

    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class TryStmt(_Statement):
    """Simphony's `Try` ... `Catch` ... `EndTry`: a failure in the body runs the handler."""

    body: tuple[Stmt, ...]
    handler: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class WhileStmt(_Statement):
    cond: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class BreakStmt(_Statement):
    """`Break`: leaves the innermost For, Forever or While."""


@dataclass(frozen=True, slots=True)
class ReturnStmt(_Statement):
    """`Return`: leaves the sub (in an event, ends the event)."""


@dataclass(frozen=True, slots=True)
class CallStmt(_Statement):
    name: str
    args: tuple[Expr | WholeArray, ...]


@dataclass(frozen=True, slots=True)
class FormatItem:
    expr: Expr
    spec: tuple[str, bool, int] | None = None


@dataclass(frozen=True, slots=True)
class FormatStmt(_Statement):
    target: Target
    items: tuple[FormatItem, ...]


@dataclass(frozen=True, slots=True)
class SplitStmt(_Statement):
    source: Expr
    separator: Expr
    targets: tuple[Target | WholeArray, ...]


@dataclass(frozen=True, slots=True)
class CaseStmt(_Statement):
    """`UpperCase var` / `LowerCase var`: change the variable in place."""

    target: Target
    upper: bool


@dataclass(frozen=True, slots=True)
class TxMsgStmt(_Statement):
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class GetRxMsgStmt(_Statement):
    prompt: Expr | None


@dataclass(frozen=True, slots=True)
class WaitForRxMsgStmt(_Statement):
    """`WaitForRxMsg`: runs the reply's `event rxmsg` before the next statement."""


@dataclass(frozen=True, slots=True)
class RxMsgStmt(_Statement):
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class InputStmt(_Statement):
    target: Target
    prompt: Expr


@dataclass(frozen=True, slots=True)
class MessageStmt(_Statement):
    kind: str  # "info" | "error" | "prompt"
    args: tuple[Expr, ...]
    specs: tuple[tuple[str, bool, int] | None, ...] = ()  # a {spec} after an argument


@dataclass(frozen=True, slots=True)
class ExitStmt(_Statement):
    kind: str  # "ExitCancel" | "ExitContinue" | "ExitWithError"
    message: Expr | None = None


@dataclass(frozen=True, slots=True)
class MakeKeys:
    expr: Expr


@dataclass(frozen=True, slots=True)
class MacroStmt(_Statement):
    keys: tuple[Expr | MakeKeys, ...]


@dataclass(frozen=True, slots=True)
class SaveChkInfoStmt(_Statement):
    expr: Expr


@dataclass(frozen=True, slots=True)
class ClearChkInfoStmt(_Statement):
    """`ClearChkInfo`: empties the check's information lines."""


DeviceArg = Expr | WholeArray | FormatItem | FieldArg | Word


@dataclass(frozen=True, slots=True)
class DeviceStmt(_Statement):
    """A statement that talks to the workstation around the script: windows and displays, the
    touchscreen, files, printing, DLL handles, sleeps and beeps. `name` is lower case."""

    name: str
    args: tuple[DeviceArg, ...]


@dataclass(frozen=True, slots=True)
class DllCallStmt(_Statement):
    """`DLLCall[_CDecl|_StdCall] handle, Function(args)`; `ref` arguments may be written back."""

    handle: Target
    function: str
    args: tuple[Expr | RefArg, ...]


@dataclass(frozen=True, slots=True)
class NetCallStmt(_Statement):
    call: NetCall


@dataclass(frozen=True, slots=True)
class NoOpStmt(_Statement):
    """A statement with no effect islrun can show (a directive written inside an event ...)."""

    name: str


@dataclass(frozen=True, slots=True)
class BadStmt(_Statement):
    """A line that did not parse; kept so the rest of the file loads (`--check` goes on after
    it). Running it is an error."""

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
