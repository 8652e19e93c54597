"""What stores report besides events (catalogs), and the admin API's views of it all (the
heartbeats are the fleet's: `ledger.fleet`)."""

from __future__ import annotations

import json
from typing import Any

from sync.central.errors import ApiError, Invalid
from sync.central.fields import AMOUNT, Fields, dumps
from sync.central.ledger.base import LedgerBase


class Reports(LedgerBase):
    """The ledger's reports: a store's catalog in; stats and checks out."""

    def put_catalog(self, store: str, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        f = Fields(body)
        try:
            if f.required_text("store_id") != store:
                raise ApiError(400, "WRONG_STORE", "store_id is not the path's store")
            generated_at = f.stamp("generated_at")
            content_hash = f.required_text("content_hash")
            products = f.objects("products")
            for product in products:
                product.required_int("object_number")
                if not isinstance(product.data.get("name"), str):
                    raise Invalid(product.prefix + "name", "must be a string")
                for group in ("family_group", "major_group"):
                    if group not in product.data or type(product.data[group]) not in (
                        str,
                        int,
                        type(None),
                    ):
                        raise Invalid(product.prefix + group, "must be a string, integer or null")
                prices = product.data.get("prices")
                if not isinstance(prices, list) or not all(
                    isinstance(p, str) and AMOUNT.fullmatch(p) for p in prices
                ):
                    raise Invalid(product.prefix + "prices", "must be a list of decimal strings")
                product.boolean("active")
        except Invalid as exc:
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        with self.transaction():
            row = self.conn.execute(
                "SELECT content_hash FROM catalogs WHERE store_id = ?", (store,)
            ).fetchone()
            if row is not None and row[0] == content_hash:
                return {"status": "unchanged", "content_hash": content_hash}
            self.conn.execute(
                "INSERT INTO catalogs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store_id) DO UPDATE "
                "SET content_hash = excluded.content_hash, generated_at = excluded.generated_at, "
                "products = excluded.products, received_at = excluded.received_at, "
                "data = excluded.data",
                (store, content_hash, generated_at, len(products), self.stamp(), dumps(body)),
            )
        return {"status": "stored", "content_hash": content_hash}

    # ---- admin views ----

    def stats(self) -> dict[str, Any]:
        t, c = self.tallies, self.conn

        def one(sql: str) -> int:
            return int(c.execute(sql).fetchone()[0])

        heartbeats = {
            gateway: {"store_id": store, "received_at": at, "heartbeat": json.loads(data)}
            for gateway, store, at, data in c.execute("SELECT * FROM heartbeats").fetchall()
        }
        catalogs = {
            store: {"content_hash": h, "generated_at": g, "products": n, "received_at": at}
            for store, h, g, n, at in c.execute(
                "SELECT store_id, content_hash, generated_at, products, received_at FROM catalogs"
            ).fetchall()
        }
        with t.lock:
            events = {
                "received": dict(t.received),
                "accepted": dict(t.accepted),
                "duplicate": dict(t.duplicate),
                "rejected": dict(t.rejected),
            }
            counters = {
                "rejections": dict(t.reasons),
                "replayed_rejections": t.replayed_rejections,
                "batches": t.batches,
                "bad_batches": t.bad_batches,
            }
            unknown_member_checks = t.unknown_member_checks
            identifications = dict(t.identifications)
        return {
            "events": events,
            **counters,
            "checks": one("SELECT COUNT(*) FROM checks"),
            "duplicate_check_keys": one("SELECT COUNT(*) FROM checks WHERE event_count > 1"),
            "unknown_member_checks": unknown_member_checks,
            "identifications": identifications,
            "members": one("SELECT COUNT(*) FROM members"),
            "coupons": one("SELECT COUNT(*) FROM coupons"),
            "change_seq": self.change_seq(),
            "redemptions": one("SELECT COUNT(*) FROM redemptions"),
            "coupon_conflicts": one("SELECT COUNT(*) FROM conflicts"),
            "authorizations": {
                state: int(count)
                for state, count in c.execute(
                    "SELECT state, COUNT(*) FROM authorizations GROUP BY state"
                ).fetchall()
            },
            "heartbeats": heartbeats,
            "catalogs": catalogs,
        }

    def checks(self, store: str | None) -> list[dict[str, Any]]:
        sql = (
            "SELECT store_id, business_date, wsid, check_no, member_id, total, points_earned, "
            "tickets_earned, wallet_delta, earn_mode, event_id, event_count, applied_at FROM checks"
        )
        rows = (
            self.conn.execute(sql + " WHERE store_id = ? ORDER BY 2, 3, 4", (store,))
            if store
            else self.conn.execute(sql + " ORDER BY 1, 2, 3, 4")
        ).fetchall()
        names = (
            *("store_id", "business_date", "wsid", "check", "member_id", "total"),
            *("points_earned", "tickets_earned", "wallet_delta", "earn_mode"),
            *("event_id", "event_ids", "applied_at"),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]
