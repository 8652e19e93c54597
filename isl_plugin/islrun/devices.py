"""The workstation around a script, beyond the check and the link: its screen (ISL windows and
the ISL touchscreen), its files, its printers, the DLLs and .NET assemblies scripts call.

Everything is recorded, so a test can say what a script showed, wrote, printed or called. What
a call does is configurable: a DLL function or .NET method is a Python callable a test gives;
files live in a sandbox folder (no sandbox: every FOpen fails, as on a workstation whose folder
is missing). Nothing here touches the real system.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from isl_plugin.islrun.values import KeyValue, Value

DllArg = Value | list[Value]  # a whole array passed `ref arr[]` is a list
DllFunction = Callable[[list[DllArg]], "DllResult | None"]
NetMethod = Callable[[list[Value]], Value | None]


class NetError(Exception):
    """A .NET method threw: the script's Try ... Catch sees it; without one the event fails."""


@dataclass
class DllResult:
    """What a DLL function did: values written to its `ref` arguments (by 1-based position)."""

    refs: dict[int, DllArg] = field(default_factory=dict)


@dataclass
class Dll:
    """A DLL a script may load: its functions by name (case-insensitive). A function not here
    is recorded and does nothing, as a stub would."""

    name: str
    functions: dict[str, DllFunction] = field(default_factory=dict)

    def function(self, name: str) -> DllFunction | None:
        for key, function in self.functions.items():
            if key.lower() == name.lower():
                return function
        return None


@dataclass
class Window:
    """An ISL window: its size, its title, and what Display put where (row, col) -> text."""

    rows: int
    cols: int
    title: str = ""
    cells: dict[tuple[int, int], str] = field(default_factory=dict)
    fields: list[tuple[int, int, str]] = field(default_factory=list)  # input fields: row, col, var

    def text(self) -> list[str]:
        """The window's rows as the cashier reads them."""
        lines = []
        for row in range(1, self.rows + 1):
            line = ""
            for (r, c), text in sorted(self.cells.items()):
                if r == row:
                    line = line.ljust(c - 1) + text
            lines.append(line.rstrip())
        return lines


@dataclass(frozen=True, slots=True)
class TouchKey:
    """A key SetIslTsKeyX put on the ISL touchscreen: the key it sends and its label."""

    row: int
    col: int
    key: KeyValue
    label: str


@dataclass
class PrintJob:
    """StartPrint ... EndPrint: the printer (CHK, RCPT, JNL, VALD or its number) and the lines."""

    printer: str
    lines: list[str] = field(default_factory=list)
    ended: bool = False


_DRIVE = re.compile(r"^[A-Za-z]:")


class Devices:
    def __init__(
        self,
        *,
        sandbox: Path | None = None,
        dlls: Sequence[Dll] = (),
        net: dict[str, NetMethod] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.dlls = {dll.name.lower(): dll for dll in dlls}
        self.net = {name.lower(): method for name, method in (net or {}).items()}
        self.windows: list[Window] = []  # every window opened, the last one current
        self.window_open = False
        self.touchscreens: list[int] = []  # Touchscreen n, in order
        self.isl_keys: list[TouchKey] = []  # the ISL touchscreen being built or shown
        self.printed: list[PrintJob] = []
        self.calls: list[str] = []  # DLL and .NET calls, as "dll.dll Fn(1, 'a')"
        self.files: list[str] = []  # file operations, as "open etc/log.txt append"
        self._handles: dict[int, str] = {}  # DLL handle -> name
        self._open: dict[int, tuple[IO[str], str]] = {}  # file handle -> file, sandbox path
        self._eof: set[int] = set()  # handles whose last read found the end of the file
        self._next = 1

    # ---- the screen ----------------------------------------------------------------------------

    @property
    def window(self) -> Window | None:
        return self.windows[-1] if self.window_open and self.windows else None

    def open_window(self, rows: int, cols: int, title: str) -> None:
        self.windows.append(Window(rows, cols, title))
        self.window_open = True

    def display(self, row: int, col: int, text: str) -> None:
        if self.window is None:
            self.open_window(max(row, 1), max(col + len(text), 1), "")
        assert self.window is not None
        self.window.cells[(row, col)] = text

    def close_window(self) -> None:
        self.window_open = False

    # ---- DLLs and .NET -------------------------------------------------------------------------

    def dll_load(self, name: str) -> int:
        """A handle for the DLL, or 0 when the workstation has no such DLL (none configured)."""
        base = PurePosixPath(name.replace("\\", "/")).name.lower()
        self.calls.append(f"DLLLoad {name}")
        if base not in self.dlls:
            return 0
        handle = self._next
        self._next += 1
        self._handles[handle] = base
        return handle

    def dll_call(self, handle: int, function: str, args: list[DllArg]) -> DllResult:
        name = self._handles.get(handle)
        shown = ", ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
        if name is None:
            raise LookupError(f"DLLCall {function}: handle {handle} is not a loaded DLL")
        self.calls.append(f"{name} {function}({shown})")
        stub = self.dlls[name].function(function)
        result = stub(list(args)) if stub is not None else None
        return result or DllResult()

    def dll_free(self, handle: int) -> None:
        name = self._handles.pop(handle, None)
        self.calls.append(f"DLLFree {name or handle}")

    def net_call(self, name: str, args: list[Value]) -> Value | None:
        shown = ", ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
        self.calls.append(f"{name}({shown})")
        method = self.net.get(name.lower())
        return method(list(args)) if method is not None else None

    # ---- files ---------------------------------------------------------------------------------

    def sandbox_path(self, name: str) -> Path | None:
        """Where a script's file name lands in the sandbox: the drive letter and any `..` go,
        backslashes are folders ("..\\etc\\log.txt" -> SANDBOX/etc/log.txt)."""
        if self.sandbox is None:
            return None
        parts = [
            p
            for p in _DRIVE.sub("", name).replace("\\", "/").split("/")
            if p not in ("", ".", "..")
        ]
        if not parts:
            return None
        return self.sandbox.joinpath(*parts)

    def file_open(self, name: str, mode: str) -> int:
        """A file handle, or 0 when the file cannot be opened (no sandbox, a file to read that is
        not there)."""
        path = self.sandbox_path(name)
        self.files.append(f"open {name} {mode}")
        if path is None:
            return 0
        try:
            if mode == "read":
                handle_file = path.open("r", encoding="cp1252", newline="")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle_file = path.open(
                    "a" if mode == "append" else "w", encoding="cp1252", newline=""
                )
        except OSError:
            return 0
        handle = self._next
        self._next += 1
        assert self.sandbox is not None
        self._open[handle] = (handle_file, path.relative_to(self.sandbox).as_posix())
        return handle

    def _file(self, handle: int) -> tuple[IO[str], str]:
        entry = self._open.get(handle)
        if entry is None:
            raise LookupError(f"file handle {handle} is not open")
        return entry

    def file_write(self, handle: int, text: str) -> None:
        file, path = self._file(handle)
        file.write(text + "\r\n")
        self.files.append(f"write {path} {text!r}")

    def file_read_line(self, handle: int) -> str | None:
        """The next line, without its end; None at the end of the file."""
        file, path = self._file(handle)
        line = file.readline()
        self.files.append(f"read {path}")
        if not line:
            self._eof.add(handle)
            return None
        return line.rstrip("\r\n")

    def file_eof(self, handle: int) -> bool:
        """Feof(handle): the last read found the end of the file (or the handle is not open)."""
        return handle in self._eof or handle not in self._open

    def file_close(self, handle: int) -> None:
        entry = self._open.pop(handle, None)
        if entry is not None:
            entry[0].close()
            self.files.append(f"close {entry[1]}")

    def close_all(self) -> None:
        for handle in list(self._open):
            self.file_close(handle)

    # ---- printing ------------------------------------------------------------------------------

    def start_print(self, printer: str) -> None:
        self.printed.append(PrintJob(printer))

    def print_line(self, text: str) -> None:
        if not self.printed or self.printed[-1].ended:
            self.printed.append(PrintJob("(no StartPrint)"))
        self.printed[-1].lines.append(text)

    def end_print(self) -> None:
        if self.printed:
            self.printed[-1].ended = True
