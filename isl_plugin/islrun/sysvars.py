"""The system variables islrun simulates: the ones real scripts use (reference notes section 2.3)
that make sense for a simulated check. Anything else is refused when the script is parsed."""

from __future__ import annotations

from dataclasses import dataclass

from isl_plugin.islrun.values import IslType

A = IslType("A")
N = IslType("N")
MONEY = IslType("$")
KEY = IslType("KEY")


@dataclass(frozen=True, slots=True)
class SysVarSpec:
    type: IslType
    indexed: bool = False  # @DTL_TYPE[i]
    writable: bool = False


SYSTEM_VARIABLES: dict[str, SysVarSpec] = {
    # who and where
    "@WSID": SysVarSpec(N),
    "@RVC": SysVarSpec(N),
    "@RVCNAME": SysVarSpec(A),
    "@CKNUM": SysVarSpec(N),
    "@CKEMP": SysVarSpec(N),
    "@TREMP": SysVarSpec(N),
    "@CKID": SysVarSpec(A),
    "@VERSION": SysVarSpec(A),
    "@WSTYPE": SysVarSpec(N),
    # the clock (@YEAR has two digits: real scripts print it as @YEAR + 2000)
    "@YEAR": SysVarSpec(N),
    "@MONTH": SysVarSpec(N),
    "@DAY": SysVarSpec(N),
    "@HOUR": SysVarSpec(N),
    "@MINUTE": SysVarSpec(N),
    "@SECOND": SysVarSpec(N),
    # totals
    "@TTLDUE": SysVarSpec(MONEY),
    "@TNDTTL": SysVarSpec(MONEY),
    "@CHK_TTL": SysVarSpec(MONEY),
    "@DSC": SysVarSpec(MONEY),
    "@SVC": SysVarSpec(MONEY),
    # check detail
    "@NUMDTLT": SysVarSpec(N),
    "@NUMDTLR": SysVarSpec(N),
    "@DTL_TYPE": SysVarSpec(A, indexed=True),
    "@DTL_OBJECT": SysVarSpec(N, indexed=True),
    "@DTL_NAME": SysVarSpec(A, indexed=True),
    "@DTL_QTY": SysVarSpec(N, indexed=True),
    "@DTL_TTL": SysVarSpec(MONEY, indexed=True),
    "@DTL_IS_VOID": SysVarSpec(N, indexed=True),
    # keys, the link, input
    "@KEY_ENTER": SysVarSpec(KEY),
    "@KEY_CLEAR": SysVarSpec(KEY),
    "@RXMSG": SysVarSpec(A),
    "@INPUTSTATUS": SysVarSpec(N),
    "@TRACE": SysVarSpec(N, writable=True),
}
