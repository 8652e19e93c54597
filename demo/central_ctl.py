"""Demo helper: talk to the reference central's admin API, and read the gateway's queue."""

from __future__ import annotations

import json
import sqlite3
import sys
import time

import httpx


def main() -> int:
    command, *rest = sys.argv[1:]
    if command == "down":  # down ADMIN_URL true|false
        url, value = rest
        httpx.put(f"{url}faults", json={"down": value == "true"}).raise_for_status()
        print(f"central {'is down' if value == 'true' else 'is back'}")
    elif command == "stats":  # stats ADMIN_URL
        stats = httpx.get(f"{rest[0]}stats").json()
        print(
            "central holds",
            stats["checks"],
            "checks;",
            "checks received twice:",
            stats["duplicate_check_keys"],
            "; events",
            json.dumps(stats["events"]["accepted"]),
        )
    elif command == "wait-members":  # wait-members DB
        wait(lambda: count(rest[0], "members") > 0, "the first snapshot from central")
    elif command == "wait-drained":  # wait-drained DB
        wait(lambda: count(rest[0], "outbox") == 0, "the outbox to drain")
    elif command == "outbox":  # outbox DB
        print("events waiting in the gateway's outbox:", count(rest[0], "outbox"))
    return 0


def count(db: str, table: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return -1


def wait(done: object, what: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.2)


if __name__ == "__main__":
    raise SystemExit(main())
