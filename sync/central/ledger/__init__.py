"""Central's state and the contract's rules over it, written once for both storage backends.

A `Ledger` holds one connection and runs on one thread at a time. The SQL here is what SQLite and
PostgreSQL both speak (`?` parameters, `INSERT ... ON CONFLICT`, `RETURNING`); a backend's
subclass fills in the hooks of `base.LedgerBase` (SQL at its top, methods at its bottom), where the
dialects differ: JSON updates, the change sequence, and how writers that publish changes are put
in one order.

Why that order matters: a delta cursor is a change sequence number, and a reader that saw change
n must already see every change below n. SQLite has one writer, so it holds by itself. With
several writers (PostgreSQL, several processes) a transaction that publishes takes one lock
before it numbers its changes and keeps it to its commit, so numbers commit in order.

The ledger's parts, one concept a module, each a mixin over `base.LedgerBase`:

- `base`: the connection, transactions, the shared clock and tallies, and the hooks;
- `records`: members, coupons and the rules, as the admin API and the seed files set them;
- `changes`: sealed cursors, change pages, snapshot exports and their stored files;
- `events`: batches of events applied exactly once; `coupons`: coupon limits (authorizations
  and redemptions); `reports`: catalogs and the admin views;
- `fleet`: heartbeats, the stores seen, each store's cursor lag, the chain-wide stop switch.
"""

from __future__ import annotations

from sync.central.ledger.base import Change, Outcome, Shared, Tallies
from sync.central.ledger.changes import SNAPSHOT_PAGE, Changes, SnapshotInfo
from sync.central.ledger.events import Batch, Events
from sync.central.ledger.fleet import PROGRAMS, Fleet, FleetRows
from sync.central.ledger.records import Records
from sync.central.ledger.reports import Reports

__all__ = [
    "PROGRAMS",
    "SNAPSHOT_PAGE",
    "Batch",
    "Change",
    "FleetRows",
    "Ledger",
    "Outcome",
    "Shared",
    "SnapshotInfo",
    "Tallies",
]


class Ledger(Fleet, Records, Changes, Events, Reports):
    """Central's state over one connection. Every method runs on that connection's thread."""
