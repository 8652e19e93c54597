"""The words ISL gives a meaning to: directives, functions and their arity, device statements and
the shape of their arguments. The parser reads by them, the linter checks calls against them and
the interpreter checks arity with them; none of them may name a variable, a parameter or a sub.
"""

from __future__ import annotations

DIRECTIVES = {
    "retainglobalvar",
    "discardglobalvar",
    "useisltimeouts",
    "usecompatformat",
    "usestdformat",
    "continueoncancel",
    "exitoncancel",
    "setsignonleft",
    "setsignonright",
}

# function -> (fewest, most) arguments
FUNCTIONS: dict[str, tuple[int, int]] = {
    "len": (1, 1),
    "mid": (3, 3),
    "trim": (1, 1),
    "key": (2, 2),
    "bit": (2, 2),
    "instr": (3, 3),
    "chr": (1, 1),
    "asc": (1, 1),
    "abs": (1, 1),
    "int": (1, 1),
    "arraysize": (1, 1),
    "feof": (1, 1),
}

# Device statements and the shape of their arguments, by kind, in order:
#   E an expression, E? an optional one, T a variable the statement writes, F an input field
#   (`var{spec}`), W a bare word (FOpen's mode) or an expression, A a whole array (`arr` or
#   `arr[]`), * (last) the rest: expressions with an optional {spec} each; T* the rest: variables.
DEVICE_SHAPES: dict[str, tuple[str, ...]] = {
    "window": ("E", "E", "E?"),
    "windowclose": (),
    "windowedit": (),
    "windowinput": (),
    "windoweditwithsave": (),
    "windowinputwithsave": (),
    "windowclear": (),
    "display": ("E", "E", "*"),
    "displayinverse": ("E", "E", "*"),
    "displayinput": ("E", "E", "F", "*"),
    "displaymsinput": ("E", "E", "F", "*"),  # (row, col, field, prompt) again and again
    "waitforenter": ("*",),
    "waitforconfirm": ("*",),
    "waitforclear": ("*",),
    "waitforanykey": ("*",),
    "inputkey": ("T", "T", "*"),
    "touchscreen": ("E",),
    "clearislts": (),
    "setisltskeyx": ("*",),
    "setisltskey": ("*",),
    "displayislts": (),
    "popupislts": ("*",),
    "fopen": ("T", "E", "W", "*"),
    "fclose": ("E",),
    "fwrite": ("E", "*"),
    "fwriteln": ("E", "*"),
    "fread": ("E", "T*"),
    "freadln": ("E", "T*"),
    "fseek": ("E", "E"),
    "flock": ("E",),
    "funlock": ("E",),
    "dllload": ("T", "E"),
    "dllfree": ("E",),
    "startprint": ("E", "*"),
    "printline": ("*",),
    "endprint": (),
    "msleep": ("E",),
    "beep": (),
    "errorbeep": (),
    "cleararray": ("A",),
    "loaddbkybdmacro": ("E",),
    "clearkybdmacro": (),
}
DLL_CALLS = {"dllcall", "dllcall_cdecl", "dllcall_stdcall"}
FILE_MODES = {"read", "write", "append", "local"}

STATEMENT_WORDS = {
    "var", "lvar", "const", "ref", "if", "then", "elseif", "else", "endif", "for", "to", "step",
    "endfor", "forever", "while", "endwhile", "break", "return", "call", "event", "endevent",
    "sub", "endsub", "and", "or", "not", "as", "format", "split", "uppercase", "lowercase",
    "txmsg", "getrxmsg", "waitforrxmsg", "rxmsg", "input", "infomessage", "errormessage",
    "prompt", "exitcancel", "exitcontinue", "exitwitherror", "loadkybdmacro", "savechkinfo",
    "clearchkinfo", "try", "catch", "endtry", "include", "netimport",
}  # fmt: skip
# A name ISL uses for itself may not name a variable, a parameter or a sub.
RESERVED = STATEMENT_WORDS | DIRECTIVES | set(DEVICE_SHAPES) | DLL_CALLS


def call_problem(name: str, count: int) -> str | None:
    """What is wrong with calling function `name` (lower case) with `count` arguments, if
    anything: the linter warns with it, the interpreter fails with it."""
    arity = FUNCTIONS.get(name)
    if arity is None:
        return f"unknown function {name!r}"
    if not arity[0] <= count <= arity[1]:
        return f"{name} takes {arity[0]} argument(s), got {count}"
    return None
