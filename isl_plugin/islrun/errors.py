"""Errors that name where they happened: a script line (and column), or a scenario step."""

from __future__ import annotations


class IslError(Exception):
    """Something in a script is wrong; `line` is 1-based in the script file (0: unknown), `col`
    1-based in that line (0: unknown)."""

    def __init__(self, source: str, line: int, message: str, col: int = 0) -> None:
        where = source
        if line:
            where += f":{line}" + (f":{col}" if col else "")
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.col = col
        self.message = message


class IslSyntaxError(IslError):
    """The script does not parse: a statement ISL does not have, or one written wrong."""


class IslRuntimeError(IslError):
    """A statement failed while running (an array index out of range, a bad conversion ...)."""


class ScenarioError(Exception):
    """A scenario file or step is wrong; the message names the step."""
