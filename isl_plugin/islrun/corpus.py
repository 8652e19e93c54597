"""Measure how much of a folder of ISL scripts islrun reads: how many parse, how many load.

    python -m isl_plugin.islrun.corpus DIR [-v]

A script *parses* when no line is an error (the linter's warnings do not count: a POS loads
scripts whose dead code names what it does not have). It *loads* when the top of the script
runs as a POS runs it when SIM starts: the global declarations and settings, with no check open.
docs/isl.md gives the figure for the public scripts checked and what still fails, and why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from isl_plugin.islrun.errors import IslError
from isl_plugin.islrun.interpreter import Interpreter
from isl_plugin.islrun.link import LinkEvent
from isl_plugin.islrun.nodes import Diagnostic, Script
from isl_plugin.islrun.parser import folder_loader, read_script
from isl_plugin.islrun.station import Station


class _NoLink:
    """A link that is never used: loading a script sends nothing."""

    def __init__(self) -> None:
        self.events: list[LinkEvent] = []

    async def send(self, fields: Sequence[str]) -> None:  # pragma: no cover - never called
        raise RuntimeError("a script being loaded sends nothing")

    async def receive(self, timeout_s: float) -> list[str] | None:  # pragma: no cover
        raise RuntimeError("a script being loaded receives nothing")

    async def close(self) -> None:  # pragma: no cover
        pass


def load_problem(script: Script) -> str | None:
    """Run the top of a parsed script as a POS does when SIM starts; the problem, if any."""
    station = Station(script, _NoLink(), clock=lambda: dt.datetime(2026, 1, 5, 12, 0))
    interpreter: Interpreter = station.interpreter
    try:
        interpreter.init_globals()
    except IslError as error:
        return str(error)
    return None


@dataclass
class Measurement:
    path: Path
    script: Script | None = None
    read_error: str = ""  # the file could not be read at all
    load_error: str = ""
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def parses(self) -> bool:
        return self.script is not None and not self.script.errors

    @property
    def loads(self) -> bool:
        return self.parses and not self.load_error

    @property
    def first_problem(self) -> str:
        if self.read_error:
            return self.read_error
        if self.script is not None and self.script.errors:
            return str(self.script.errors[0])
        return self.load_error


def measure_file(path: Path) -> Measurement:
    result = Measurement(path)
    try:
        text = path.read_text(encoding="cp1252", errors="replace")
    except OSError as error:
        result.read_error = str(error)
        return result
    script = read_script(text, path.name, include=folder_loader(path.parent))
    result.script = script
    result.diagnostics = script.diagnostics
    if not script.errors:
        result.load_error = load_problem(script) or ""
    return result


def isl_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".isl")


def measure(paths: Iterable[Path]) -> list[Measurement]:
    return [measure_file(path) for path in paths]


def summary(results: Sequence[Measurement]) -> str:
    parsed = sum(r.parses for r in results)
    loaded = sum(r.loads for r in results)
    return f"{len(results)} scripts, {parsed} parse, {loaded} load"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m isl_plugin.islrun.corpus",
        description="How many ISL scripts of a folder islrun parses and loads.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="every error of each file")
    args = parser.parse_args(argv)
    results = measure(isl_files(args.folder))
    for result in results:
        status = "loads" if result.loads else "parses" if result.parses else "FAILS"
        name = result.path.relative_to(args.folder).as_posix()
        warnings = len(result.script.warnings) if result.script is not None else 0
        print(f"{status:<7} {name}  ({warnings} warning(s))")
        if not result.loads:
            problems = [str(d) for d in result.script.errors] if result.script else []
            shown = problems if args.verbose else problems[:1]
            for problem in shown or [result.first_problem]:
                print(f"        {problem}")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
