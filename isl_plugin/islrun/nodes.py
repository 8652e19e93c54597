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
    name: str  # lower case: len, mid, trim, key
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


Expr = Num | Str | VarRef | SysVar | FuncCall | Unary | Binary


@dataclass(frozen=True, slots=True)
class WholeArray:
    """`arr[]`: a whole array, as a Ref argument or the last target of Split."""

    name: str


Target = VarRef | SysVar  # something a statement can assign to (SysVar: only @TRACE)

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
    kind: str  # "info" | "error"
    args: tuple[Expr, ...]


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
    arg: str  # "" | the inquiry number | the reply name in upper case
    body: tuple[Stmt, ...]
    line: int

    @property
    def title(self) -> str:
        return f"{self.kind} : {self.arg}" if self.arg else self.kind


@dataclass
class Script:
    source: str  # file name, for messages
    directives: set[str] = field(default_factory=set)  # lower case
    globals: list[VarStmt] = field(default_factory=list)
    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    subs: dict[str, Sub] = field(default_factory=dict)  # by lower-case name

    def event(self, kind: str, arg: str = "") -> Event | None:
        return self.events.get((kind.lower(), arg.upper()))
