"""islrun: run ISL scripts against a real gateway, for tests and for store IT.

    python -m isl_plugin.islrun SCRIPT SCENARIO --host H --port P

`parse_script` reads a script (IslSyntaxError names the line of anything outside the subset);
a `Station` runs it for one simulated workstation over a `SimLink`; `run_scenario` plays a
scenario file's steps. docs/isl.md describes the subset and the scenario format.
"""

from isl_plugin.islrun.check import Discount, KeyTypes, MenuItem, PosConfig, PosError, SimCheck
from isl_plugin.islrun.errors import IslError, IslRuntimeError, IslSyntaxError, ScenarioError
from isl_plugin.islrun.link import SimLink
from isl_plugin.islrun.parser import parse_script
from isl_plugin.islrun.scenario import load_scenario, parse_scenario, run_scenario, run_steps
from isl_plugin.islrun.station import EventRun, Register, Station, StationOptions

__all__ = [
    "Discount",
    "EventRun",
    "IslError",
    "IslRuntimeError",
    "IslSyntaxError",
    "KeyTypes",
    "MenuItem",
    "PosConfig",
    "PosError",
    "Register",
    "ScenarioError",
    "SimCheck",
    "SimLink",
    "Station",
    "StationOptions",
    "load_scenario",
    "parse_scenario",
    "parse_script",
    "run_scenario",
    "run_steps",
]
