"""Versioned schema migrations; `PRAGMA user_version` records how far a database has come."""

from __future__ import annotations

import sqlite3

# Append only: a released migration is never edited, a change is a new entry.
MIGRATIONS: list[str] = [
    # 1: the foundation
    """
    CREATE TABLE members (
        member_id       TEXT PRIMARY KEY,
        display_name    TEXT NOT NULL DEFAULT '',
        tier            TEXT NOT NULL DEFAULT '',
        birthday        TEXT,
        flags           TEXT NOT NULL DEFAULT '[]',
        earn_mode       TEXT NOT NULL DEFAULT 'points',
        lottery_consent INTEGER NOT NULL DEFAULT 0,
        points_balance  INTEGER NOT NULL DEFAULT 0,
        wallet_points   INTEGER NOT NULL DEFAULT 0,
        balance_as_of   TEXT,
        record          TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE member_identifiers (
        identifier TEXT PRIMARY KEY,
        member_id  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX member_identifiers_member ON member_identifiers(member_id);

    CREATE TABLE coupons (
        code       TEXT PRIMARY KEY,
        record     TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE coupon_reservations (
        ref         TEXT PRIMARY KEY,
        code        TEXT NOT NULL,
        wsid        INTEGER NOT NULL,
        check_no    INTEGER NOT NULL,
        member_id   TEXT,
        status      TEXT NOT NULL CHECK (status IN ('reserved', 'redeemed', 'released')),
        reserved_at TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        finished_at TEXT,
        posted_key  TEXT
    ) WITHOUT ROWID;
    CREATE INDEX coupon_reservations_code ON coupon_reservations(code, status);
    CREATE INDEX coupon_reservations_live ON coupon_reservations(status, expires_at);

    CREATE TABLE posted_checks (
        business_date TEXT NOT NULL,
        wsid          INTEGER NOT NULL,
        check_no      INTEGER NOT NULL,
        member_id     TEXT,
        total         INTEGER NOT NULL,
        reply         TEXT NOT NULL,
        posted_at     TEXT NOT NULL,
        PRIMARY KEY (business_date, wsid, check_no)
    ) WITHOUT ROWID;

    CREATE TABLE ledger (
        entry_id      INTEGER PRIMARY KEY,
        member_id     TEXT NOT NULL,
        event_id      TEXT NOT NULL,
        business_date TEXT NOT NULL,
        points        INTEGER NOT NULL,
        wallet        INTEGER NOT NULL,
        tickets       INTEGER NOT NULL,
        created_at    TEXT NOT NULL,
        applied_at    TEXT
    );
    CREATE INDEX ledger_member ON ledger(member_id);

    -- Per member, the sum of the ledger entries central's balance does not include yet, kept
    -- up to date on every write so a lookup never sums a long ledger.
    CREATE TABLE member_pending (
        member_id TEXT PRIMARY KEY,
        points    INTEGER NOT NULL,
        wallet    INTEGER NOT NULL,
        tickets   INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id    TEXT NOT NULL UNIQUE,
        type        TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        payload     TEXT NOT NULL,
        batch_id    TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE dead_letters (
        event_id    TEXT PRIMARY KEY,
        type        TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        payload     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        failed_at   TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE sync_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE program_switches (
        program    TEXT PRIMARY KEY,
        paused     INTEGER NOT NULL,
        changed_at TEXT NOT NULL,
        changed_by TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: sync with central
    """
    -- A coupon redeemed here while central could not be asked, that central later found used
    -- elsewhere: kept for the loyalty team, shown in status.
    CREATE TABLE offline_conflicts (
        event_id      TEXT PRIMARY KEY,
        code          TEXT NOT NULL,
        coupon_ref    TEXT,
        business_date TEXT,
        wsid          INTEGER,
        check_no      INTEGER,
        member_id     TEXT,
        reason        TEXT NOT NULL,
        detected_at   TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX outbox_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
    CREATE INDEX ledger_event ON ledger(event_id);
    ALTER TABLE coupon_reservations ADD COLUMN authorization TEXT;
    ALTER TABLE coupon_reservations ADD COLUMN authorization_id TEXT;
    -- void (the register took it off the check), expired, declined, offline_policy
    ALTER TABLE coupon_reservations ADD COLUMN released_by TEXT;
    """,
    # 3: rules documents and the POS menu's products (for category rules)
    """
    CREATE TABLE rules_documents (
        version        TEXT PRIMARY KEY,
        effective_from TEXT NOT NULL,  -- '' for "always"; else RFC 3339 UTC
        document       TEXT NOT NULL,
        source         TEXT NOT NULL,  -- central | config
        received_at    TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX rules_documents_effective ON rules_documents(effective_from);

    CREATE TABLE products (
        object_number INTEGER PRIMARY KEY,
        name          TEXT NOT NULL,
        family_group  TEXT NOT NULL,
        major_group   TEXT NOT NULL,
        active        INTEGER NOT NULL
    );
    """,
    # 4: coupon usage without counting rows
    """
    -- A coupon's usage and a check's repeat are found without reading every reservation of a
    -- popular bearer coupon.
    CREATE INDEX IF NOT EXISTS coupon_reservations_check
        ON coupon_reservations(code, wsid, check_no);
    CREATE INDEX IF NOT EXISTS coupon_reservations_member
        ON coupon_reservations(code, member_id);

    -- Per coupon, how many uses are redeemed and how many reservations are open (expired ones
    -- included until the sweeper releases them): an upper bound that spares counting rows.
    CREATE TABLE coupon_usage (
        code     TEXT PRIMARY KEY,
        redeemed INTEGER NOT NULL DEFAULT 0,
        reserved INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO coupon_usage
        SELECT code, SUM(status = 'redeemed'), SUM(status = 'reserved')
        FROM coupon_reservations GROUP BY code;
    """,
    # 5: room for the storage probe: while the disk-full alarm is up, the writer stores and
    # removes a blob larger than a check here to learn whether a check would fit again.
    """
    CREATE TABLE storage_probe (b BLOB NOT NULL);
    """,
    # 6: the outbox's order without AUTOINCREMENT: a plain rowid alias is one more than the
    # largest left, so it still orders events as they were written (only ORDER BY uses it),
    # and an insert no longer updates sqlite_sequence (one write less per event).
    """
    CREATE TABLE outbox_new (
        seq         INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL UNIQUE,
        type        TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        payload     TEXT NOT NULL,
        batch_id    TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO outbox_new SELECT seq, event_id, type, occurred_at, payload, batch_id, attempts
        FROM outbox ORDER BY seq;
    DROP TABLE outbox;
    ALTER TABLE outbox_new RENAME TO outbox;
    CREATE INDEX outbox_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer gateway; refusing to run on it protects its data."""


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema up to date, each step in its own transaction. Returns (from, to)."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this gateway's {SCHEMA_VERSION}"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return current, SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a script into statements (a `;` inside a comment or a string does not split).

    executescript() would commit on its own; running statements one by one keeps a step in
    one transaction."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        raise ValueError(f"incomplete statement in migration: {current.strip()[:80]}")
    return statements
