"""The reference central: central's API v1 (DESIGN.md section 3), runnable, with faults on demand.

The reference the gateway is built and tested against. `sync/openapi.yaml` is the contract and
`docs/central-api.md` the decisions taken where DESIGN.md is silent. The package, by concern:

- `app`: the contract's routes, the admin API, the guards (faults, token, gateway id);
- `storage`: the storage interface; `ledger`: the contract's rules over it, written once (a
  package, one concept a module); `schema`: the tables, written once for both backends;
  `sqlite` (embedded: demo, tests, benchmarks) and `postgres` (several processes, one database);
- `longpoll`: the change feed long polls wait on; `snapshot`: snapshots for fleets;
- `fleet` (and `fleet_page`): the fleet view and its page, with the chain-wide stop switch;
  `admin_guard`: what keeps web pages away from the admin API;
- `faults`: the fault settings and the TCP proxy in front; `server`: uvicorn and the proxy in
  this process; `cli`: the command line (`python -m sync.central`).

    async with ReferenceServer(ReferenceConfig(...)) as central:
        central.url
"""

from sync.central.app import Central, create_app
from sync.central.cli import main
from sync.central.config import ReferenceConfig, utc_stamp
from sync.central.errors import ApiError
from sync.central.fields import is_rfc3339
from sync.central.server import ReferenceServer

__all__ = [
    "ApiError",
    "Central",
    "ReferenceConfig",
    "ReferenceServer",
    "create_app",
    "is_rfc3339",
    "main",
    "utc_stamp",
]
