"""The system variables islrun simulates: the ones real scripts use (reference notes section 2.3,
and the public scripts docs/isl.md lists). A name not here loads (the linter warns) and fails
only when the code that reads it runs: nobody outside Oracle has the POS's full list, and a real
POS loads scripts that name variables of other versions in code that never runs."""

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
    "@ALPHASCREEN": SysVarSpec(N),  # the touchscreen the workstation shows now
    "@WSNAME": SysVarSpec(A),
    "@SERVERNAME": SysVarSpec(A),
    "@CASHIER": SysVarSpec(N),
    "@ORDERTYPE": SysVarSpec(N),
    "@SRVPRD": SysVarSpec(N),  # the serving period
    "@MLVL": SysVarSpec(N),  # the main menu level in force
    "@GST": SysVarSpec(N),  # guests on the check
    "@EMPLOPT": SysVarSpec(N, indexed=True),  # the employee class's option bits, 1 or 0
    # the clock (@YEAR has two digits: real scripts print it as @YEAR + 2000)
    "@YEAR": SysVarSpec(N),
    "@MONTH": SysVarSpec(N),
    "@DAY": SysVarSpec(N),
    "@HOUR": SysVarSpec(N),
    "@MINUTE": SysVarSpec(N),
    "@SECOND": SysVarSpec(N),
    "@WEEKDAY": SysVarSpec(N),  # 0 Sunday ... 6 Saturday ("if @weekday = 2": Tuesdays)
    "@IDLE_SECONDS": SysVarSpec(N, writable=True),  # when event idle_no_trans fires
    # totals
    "@TTLDUE": SysVarSpec(MONEY),
    "@TNDTTL": SysVarSpec(MONEY),
    "@CHK_TTL": SysVarSpec(MONEY),
    "@DSC": SysVarSpec(MONEY),
    "@SVC": SysVarSpec(MONEY),
    "@TAX": SysVarSpec(MONEY, indexed=True),  # tax of rate n on the check
    "@TAXVAT": SysVarSpec(MONEY, indexed=True),  # VAT of rate n (inclusive tax)
    "@TXBL": SysVarSpec(MONEY, indexed=True),  # taxable amount of rate n
    "@SLVL": SysVarSpec(N),  # the serving (sales) level in force
    # check detail
    "@NUMDTLT": SysVarSpec(N),
    "@NUMDTLR": SysVarSpec(N),
    "@DTL_TYPE": SysVarSpec(A, indexed=True),
    "@DTL_OBJECT": SysVarSpec(N, indexed=True),
    "@DTL_NAME": SysVarSpec(A, indexed=True),
    "@DTL_QTY": SysVarSpec(N, indexed=True),
    "@DTL_TTL": SysVarSpec(MONEY, indexed=True),
    "@DTL_IS_VOID": SysVarSpec(N, indexed=True),
    "@DTL_IS_COND": SysVarSpec(N, indexed=True),  # a condiment
    "@DTL_IS_DEFAULT_COND": SysVarSpec(N, indexed=True),
    "@DTL_IS_COMBO": SysVarSpec(N, indexed=True),
    "@DTL_IS_COMBO_MAIN": SysVarSpec(N, indexed=True),
    "@DTL_SEAT": SysVarSpec(N, indexed=True),
    "@DTL_STATUS": SysVarSpec(A, indexed=True),  # hex digits; Bit(@DTL_STATUS[i], 5): void
    "@DTL_FAMGRP": SysVarSpec(N, indexed=True),
    "@DTL_FAMGRP_OBJNUM": SysVarSpec(N, indexed=True),
    "@DTL_MAJGRP_OBJNUM": SysVarSpec(N, indexed=True),
    "@DTL_SLVL": SysVarSpec(N, indexed=True),
    "@DTL_PLVL": SysVarSpec(N, indexed=True),
    "@DTL_MLVL": SysVarSpec(N, indexed=True),
    "@DTL_NAME_TWO": SysVarSpec(A, indexed=True),
    "@DTL_DSCI": SysVarSpec(N, indexed=True),  # the discount itemizer
    # printers, for StartPrint
    "@CHK": SysVarSpec(N),
    "@RCPT": SysVarSpec(N),
    "@JNL": SysVarSpec(N),
    "@VALD": SysVarSpec(N),
    # what a print_header / print_trailer event fills, and other settings a script writes
    "@HEADER": SysVarSpec(A, indexed=True, writable=True),
    "@TRAILER": SysVarSpec(A, indexed=True, writable=True),
    "@PREFIX_DTL_NAME": SysVarSpec(N, writable=True),
    "@WARNINGS_ARE_FATAL": SysVarSpec(N, writable=True),
    # files
    "@FILE_ERRNO": SysVarSpec(N),
    "@FILE_ERRSTR": SysVarSpec(A),
    # keys, the link, input
    "@KEY_ENTER": SysVarSpec(KEY),
    "@KEY_CLEAR": SysVarSpec(KEY),
    "@RXMSG": SysVarSpec(A),
    "@INPUTSTATUS": SysVarSpec(N),
    "@MAGSTATUS": SysVarSpec(A),  # "Y" when the last DisplayMSInput field was swiped
    "@TRACE": SysVarSpec(N, writable=True),
}

# The printers StartPrint takes, by the number their system variable holds.
PRINTERS = {"@CHK": 1, "@RCPT": 2, "@JNL": 3, "@VALD": 4}
PRINTER_NAMES = {number: name[1:] for name, number in PRINTERS.items()}


def sysvar_spec(name: str) -> SysVarSpec | None:
    """The spec of a system variable (upper case, with its @); every @KEY_... is a named key."""
    spec = SYSTEM_VARIABLES.get(name)
    if spec is None and name.startswith("@KEY_") and len(name) > 5:
        return SysVarSpec(KEY)
    return spec
