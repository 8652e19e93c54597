"""`python -m isl_plugin.islrun SCRIPT SCENARIO`: run a scenario against a running gateway and
print what the cashier and the receipt would see.

`python -m isl_plugin.islrun SCRIPT --check` is a linter for any ISL script: every line that does
not parse is reported with its line and column (and the check goes on after it), then what may
fail when the code runs (an undeclared name, a sub that is not there ...), as warnings.

Exit status: 0 when every step ran and every expectation held (with --check: no error; with
--check --strict: no warning either), 1 when an expectation failed (--strict: a warning), 2 when
the script or the scenario is wrong (the message names the line or the step).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from isl_plugin.islrun.corpus import load_problem
from isl_plugin.islrun.errors import IslError, ScenarioError
from isl_plugin.islrun.nodes import Script
from isl_plugin.islrun.parser import folder_loader, read_script
from isl_plugin.islrun.scenario import load_scenario, run_scenario
from isl_plugin.islrun.transcript import format_trace


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m isl_plugin.islrun",
        description="Run an ISL script's scenario against a loyalty gateway over the SIM socket.",
    )
    parser.add_argument("script", type=Path, help="the ISL script, e.g. isl_plugin/pms9.isl")
    parser.add_argument("scenario", type=Path, nargs="?", help="a scenario file (YAML or JSON)")
    parser.add_argument("--host", default="127.0.0.1", help="gateway address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=5009, help="gateway SIM port (5009)")
    parser.add_argument("--timeout", type=float, default=None, help="reply timeout, seconds")
    parser.add_argument("--check", action="store_true", help="only check the script (a linter)")
    parser.add_argument("--strict", action="store_true", help="with --check: warnings fail too")
    return parser.parse_args(argv)


def check(script: Script, name: str, *, strict: bool) -> int:
    """Print every diagnostic of a script; the exit status."""
    errors, warnings = script.errors, script.warnings
    problem = None if errors else load_problem(script)
    events = ", ".join(event.title for event in script.events.values())
    if not errors and problem is None:
        print(f"{name}: OK ({len(script.events)} events: {events})")
    elif problem is not None:
        print(f"{name}: parses, but does not load: {problem}")
    else:
        print(f"{name}: {len(errors)} error(s), {len(warnings)} warning(s)")
    for diagnostic in sorted(script.diagnostics, key=lambda d: (d.line, d.col)):
        print(f"   {diagnostic}")
    if errors or problem is not None:
        return 2
    return 1 if strict and warnings else 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        text = args.script.read_text(encoding="cp1252")
    except OSError as error:
        print(f"islrun: {error}", file=sys.stderr)
        return 2
    script = read_script(text, args.script.name, include=folder_loader(args.script.parent))
    if args.check or args.scenario is None:
        return check(script, args.script.name, strict=args.strict)
    if script.errors:
        for diagnostic in script.errors:
            print(f"islrun: {diagnostic}", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except (OSError, ScenarioError) as error:
        print(f"islrun: {error}", file=sys.stderr)
        return 2
    print(f"islrun {args.script.name} {args.scenario.name} -> {args.host}:{args.port}")
    print(f"   register {scenario.register.wsid}, source id {scenario.source_id_bytes()!r}")
    try:
        result = asyncio.run(
            run_scenario(script, scenario, args.host, args.port, timeout_s=args.timeout)
        )
    except (IslError, ScenarioError) as error:
        print(f"islrun: {error}", file=sys.stderr)
        return 2
    for line in format_trace(result.station.trace):
        print(line)
    check_ = result.station.check
    if check_ is not None:
        print("== receipt: check information lines")
        for line in check_.info_lines or ["(none)"]:
            print(f"   {line}")
    for job in result.station.devices.printed:
        print(f"== printed on {job.printer}")
        for line in job.lines or ["(nothing)"]:
            print(f"   {line}")
    if result.problems:
        print(f"== {len(result.problems)} expectation(s) failed:")
        for problem in result.problems:
            print(f"   {problem}")
        return 1
    print("== all steps ran, every expectation held")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
