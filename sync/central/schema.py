"""Central's tables, written once for both backends: the ledger's SQL reads and writes them alike.

A backend renders them in its dialect (`schema(...)`): the integer and byte types, how keys are
ordered, and SQLite's `WITHOUT ROWID`. Only the change sequence is its own, as the two number
changes differently (SQLite: its one writer's `AUTOINCREMENT`; PostgreSQL: a sequence).
"""

from __future__ import annotations

# The columns that name a check (the key of `checks`), for each table that keeps them side by side.
_CHECK = """store_id TEXT NOT NULL,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no {big} NOT NULL"""

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL){rowid};
CREATE TABLE IF NOT EXISTS members (
    member_id TEXT{bytewise} PRIMARY KEY,
    data TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS coupons (
    code TEXT{bytewise} PRIMARY KEY,
    data TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS rules (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
-- One row per record, at the sequence number of its latest change (latest wins).
{changes}
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    store_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    message TEXT,
    applied_at TEXT,
    received_at TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS checks (
    {check},
    event_id TEXT NOT NULL,
    member_id TEXT,
    total TEXT NOT NULL,
    points_earned {big} NOT NULL,
    tickets_earned {big} NOT NULL,
    wallet_delta {big} NOT NULL,
    earn_mode TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (store_id, business_date, wsid, check_no)
){rowid};
CREATE TABLE IF NOT EXISTS tickets (
    member_id TEXT PRIMARY KEY,
    tickets {big} NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS redemptions (
    code TEXT NOT NULL,
    {check},
    event_id TEXT NOT NULL,
    member_id TEXT,
    authorization_id TEXT,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (code, store_id, business_date, wsid, check_no)
){rowid};
CREATE TABLE IF NOT EXISTS conflicts (
    event_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    {check},
    at TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS authorizations (
    idempotency_key TEXT PRIMARY KEY,
    authorization_id TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    store_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    member_id TEXT,
    business_date TEXT NOT NULL,
    wsid INTEGER NOT NULL,
    check_no {big} NOT NULL,
    state TEXT NOT NULL,  -- pending | consumed | cancelled
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
){rowid};
CREATE INDEX IF NOT EXISTS authorizations_code ON authorizations (code, state);
CREATE TABLE IF NOT EXISTS catalogs (
    store_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    products INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    data TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS heartbeats (
    gateway_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    data TEXT NOT NULL
){rowid};
-- The fleet view: every store that made a request (to within `SEEN_EVERY_S`), and where each
-- gateway's cache cursor stood against central's changes when its last heartbeat arrived.
CREATE TABLE IF NOT EXISTS stores (
    store_id TEXT PRIMARY KEY,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    gateway_id TEXT NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS heartbeat_cursors (
    gateway_id TEXT PRIMARY KEY,
    cursor_mode TEXT NOT NULL,  -- delta | snapshot | none | unknown
    cursor_seq {big},
    central_seq {big} NOT NULL,
    lag {big},
    behind_since TEXT
){rowid};
CREATE TABLE IF NOT EXISTS snapshots (
    etag TEXT PRIMARY KEY,
    built_at TEXT NOT NULL,
    change_seq {big} NOT NULL,
    cursor TEXT NOT NULL,
    records {big} NOT NULL,
    size {big} NOT NULL,
    chunk_size INTEGER NOT NULL
){rowid};
CREATE TABLE IF NOT EXISTS snapshot_chunks (
    etag TEXT NOT NULL,
    n INTEGER NOT NULL,
    data {blob} NOT NULL,
    PRIMARY KEY (etag, n)
);
"""


def schema(*, changes: str, big: str, blob: str, bytewise: str = "", rowid: str = "") -> str:
    """The tables in one dialect, as one script of `CREATE ... IF NOT EXISTS` statements.

    `changes`: the changes table and what numbers its rows; `big`: a 64-bit integer type; `blob`:
    a bytes type; `bytewise`: a collation that orders record keys byte by byte (SQLite's default
    does already); `rowid`: an option for the tables keyed by text whose rows are small
    (not the snapshot chunks, a MiB each).
    """
    check = _CHECK.format(big=big)
    return _TABLES.format(
        changes=changes, check=check, big=big, blob=blob, bytewise=bytewise, rowid=rowid
    )
