"""Errors that name where they happened: a script line, or a scenario step."""

from __future__ import annotations


class IslError(Exception):
    """Something in a script is wrong; `line` is 1-based in the script file (0: unknown)."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line
        self.message = message


class IslSyntaxError(IslError):
    """The script does not parse, or uses ISL outside the subset islrun runs."""


class IslRuntimeError(IslError):
    """A statement failed while running (an array index out of range, a bad conversion ...)."""


class ScenarioError(Exception):
    """A scenario file or step is wrong; the message names the step."""
