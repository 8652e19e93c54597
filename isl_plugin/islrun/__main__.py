"""`python -m isl_plugin.islrun SCRIPT SCENARIO`: run a scenario against a running gateway and
print what the cashier and the receipt would see. `--check` only parses the script.

Exit status: 0 when every step ran and every expectation held, 1 when an expectation failed,
2 when the script or the scenario is wrong (the message names the line or the step).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from isl_plugin.islrun.errors import IslError, ScenarioError
from isl_plugin.islrun.parser import parse_script
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
    parser.add_argument("--check", action="store_true", help="only parse and check the script")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        script = parse_script(args.script.read_text(encoding="cp1252"), args.script.name)
    except OSError as error:
        print(f"islrun: {error}", file=sys.stderr)
        return 2
    except IslError as error:
        print(f"islrun: {error}", file=sys.stderr)
        return 2
    events = ", ".join(event.title for event in script.events.values())
    if args.check or args.scenario is None:
        print(f"{args.script.name}: OK ({len(script.events)} events: {events})")
        return 0
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
    check = result.station.check
    if check is not None:
        print("== receipt: check information lines")
        for line in check.info_lines or ["(none)"]:
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
