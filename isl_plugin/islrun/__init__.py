"""islrun: run ISL scripts against a real gateway, for tests and for store IT.

    python -m isl_plugin.islrun SCRIPT SCENARIO --host H --port P

`parse_script` reads a script (IslSyntaxError names the line and column of a line that does not
parse; `read_script` returns every problem instead); a `Station` runs it for one simulated
workstation over a `SimLink`, with `Devices` (screen, files, printers, DLLs, .NET) recorded;
`run_scenario` plays a scenario file's steps. docs/isl.md describes what islrun reads, the public
scripts it was measured on, and the scenario format.
"""

from isl_plugin.islrun.check import Discount, KeyTypes, MenuItem, PosConfig, PosError, SimCheck
from isl_plugin.islrun.devices import Devices, Dll, DllResult, NetError, PrintJob
from isl_plugin.islrun.errors import IslError, IslRuntimeError, IslSyntaxError, ScenarioError
from isl_plugin.islrun.link import SimLink
from isl_plugin.islrun.parser import folder_loader, parse_script, read_script
from isl_plugin.islrun.scenario import load_scenario, parse_scenario, run_scenario, run_steps
from isl_plugin.islrun.station import EventRun, Register, Station, StationOptions

__all__ = [
    "Devices",
    "Discount",
    "Dll",
    "DllResult",
    "EventRun",
    "IslError",
    "IslRuntimeError",
    "IslSyntaxError",
    "KeyTypes",
    "MenuItem",
    "NetError",
    "PosConfig",
    "PosError",
    "PrintJob",
    "Register",
    "ScenarioError",
    "SimCheck",
    "SimLink",
    "Station",
    "StationOptions",
    "folder_loader",
    "load_scenario",
    "parse_scenario",
    "parse_script",
    "read_script",
    "run_scenario",
    "run_steps",
]
