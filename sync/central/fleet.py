"""The fleet view on central: every store central knows, its last heartbeat, outbox, version and
cursor lag, offline stores first; as JSON (`GET /_admin/fleet`) and as a page
(`GET /_admin/fleet/page`) that also carries the chain-wide stop switch.

A store is OFFLINE when its latest sign of life is older than `fleet_offline_after_s` (180 s by
default: three of a gateway's default 60 s heartbeat intervals): its last heartbeat, or, for a
store that never sent one, its last request. Every age is on central's clock (the heartbeat's
`received_at`, not the store's `sent_at`). The ordering: OFFLINE stores first, then by cursor
lag, largest first (a store whose lag is not known, as it is still bootstrapping, has no cursor
of this database, or sent no heartbeat, counts as the furthest behind), then by store id.

The page is one HTML document (its own markup, CSS and JavaScript from `fleet_page`), served as
the store's dashboard is (`gateway.web.page`: the shared frame, style and script, under a
per-response nonce and never framed: the chain-wide stop switch is one click, so no other site
may overlay it, clickjacking). Everything from central goes into it through `textContent`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from gateway.web.page import AdminPage, Rendered
from sync.central import fleet_page
from sync.central.config import utc_stamp
from sync.central.ledger import PROGRAMS, FleetRows
from sync.central.ledger.fleet import parse_stamp

SEEN_EVERY_S = 30.0  # a store's requests are written down at most this often (per process)
STATES = ("OFFLINE", "ONLINE")


def _age(now: dt.datetime, stamp: str | None) -> float | None:
    if not stamp:
        return None
    return round(max(0.0, (now - parse_stamp(stamp)).total_seconds()), 3)


def fleet_view(rows: FleetRows, now: dt.datetime, offline_after_s: float) -> dict[str, Any]:
    """The fleet as `GET /_admin/fleet` answers it."""
    seen = {store: (first, last, gateway) for store, first, last, gateway in rows.stores}
    beats: dict[str, list[tuple[Any, ...]]] = {}
    for beat in rows.heartbeats:
        beats.setdefault(beat[1], []).append(beat)
    stores = []
    for store_id in sorted(set(seen) | set(beats)):
        mine = sorted(beats.get(store_id, []), key=lambda b: b[2], reverse=True)
        first_seen, last_seen, seen_gateway = seen.get(store_id, (None, None, None))
        row: dict[str, Any] = {
            "store_id": store_id,
            "state": "ONLINE",
            "gateway_id": seen_gateway,
            "gateways": [b[0] for b in mine],
            "last_heartbeat_at": None,
            "heartbeat_age_s": None,
            "sent_at": None,
            "version": None,
            "queue_depth": None,
            "oldest_event_age_s": None,
            "dead_letters": None,
            "adapters": {},
            "cursor_mode": None,
            "cursor_lag": None,
            "behind_since": None,
            "behind_s": None,
            "first_seen_at": first_seen,
            "last_seen_at": last_seen,
            "last_seen_age_s": _age(now, last_seen),
        }
        if mine:
            gateway, _, received_at, body, mode, _, _, lag, behind_since = mine[0]
            row.update(
                gateway_id=gateway,
                last_heartbeat_at=received_at,
                heartbeat_age_s=_age(now, received_at),
                sent_at=body.get("sent_at"),
                version=body.get("version"),
                queue_depth=body.get("queue_depth"),
                oldest_event_age_s=body.get("oldest_event_age_s"),
                dead_letters=body.get("dead_letters"),
                adapters=body.get("adapters") or {},
                cursor_mode=mode,
                cursor_lag=None if lag is None else int(lag),
                behind_since=behind_since,
                behind_s=_age(now, behind_since),
            )
            if first_seen is None or received_at < first_seen:
                row["first_seen_at"] = received_at
        life = row["heartbeat_age_s"] if mine else row["last_seen_age_s"]
        if life is None or life > offline_after_s:
            row["state"] = "OFFLINE"
        stores.append(row)

    def order(row: dict[str, Any]) -> tuple[int, float, str]:
        lag = row["cursor_lag"]
        behind = math.inf if lag is None else float(lag)  # not known: the furthest behind
        return STATES.index(row["state"]), -behind, row["store_id"]

    stores.sort(key=order)
    rules = rules_summary(rows.rules)
    return {
        "now": utc_stamp(now),
        "offline_after_s": offline_after_s,
        "change_seq": rows.change_seq,
        "rules": rules,
        "programs": programs_of(rows.rules),
        "summary": {
            "stores": len(stores),
            "offline": sum(row["state"] == "OFFLINE" for row in stores),
            "behind": sum(bool(row["cursor_lag"]) for row in stores),
        },
        "stores": stores,
    }


def rules_summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {"version": document.get("version"), "effective_from": document.get("effective_from")}


def programs_of(document: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each program the switch knows: paused or not for the chain, by whom and when."""
    programs = (document or {}).get("programs")
    programs = programs if isinstance(programs, dict) else {}
    out = {}
    for name in PROGRAMS:
        switch = programs.get(name)
        switch = switch if isinstance(switch, dict) else {}
        out[name] = {
            "paused": bool(switch.get("paused", False)),
            "by": switch.get("by"),
            "at": switch.get("at"),
        }
    return out


# ---- the page ----------------------------------------------------------------------------

PAGE = AdminPage(
    title="Loyalty central: fleet",
    subject="central",
    path="/_admin/fleet/page",
    token_key="centralAdminToken",
    token_needed="Central's admin token is needed.",
    open_label="Open the fleet",
    refused_title="Loyalty central: token needed",
)


def render_page(*, refresh_s: float, offline_after_s: float) -> Rendered:
    """The fleet page and the headers it must be served with."""
    return PAGE.render(
        body=fleet_page.PAGE,
        css=fleet_page.CSS,
        js=fleet_page.SCRIPT,
        refresh_s=refresh_s,
        config={"programs": list(PROGRAMS), "offlineAfterS": offline_after_s},
    )
