"""SQLite storage for one store's gateway, one concern per module:

    connections.py  opening the database (start-up checks, migration) and the three connections
    writer.py       the single writer: group commit, riders, the storage-full alarm and probe
    schema.py       versioned migrations
    cache.py        central's records: members and their pending points, coupons, rules
                    documents, the POS menu's products, the sync state
    coupons.py      reservations at the register: reserve within the limits, authorise, release
    checks.py       posted checks and the ledger: a check settled and recorded in one job
    outbox.py       events towards central: batches, central's results, dead letters
    switches.py     members' earn-mode choices and the program switches
    store.py        `Store`: all the parts over one set of connections, and status counts
    datadir.py  importer.py  backup.py   the data directory, `import`, `backup`

The connection model: three connections to one database in WAL mode, each for one kind of work.

- **The writer's connection** (`Writer`, writer.py): a plain `sqlite3` connection, the only one
  that writes. Every change is a job (a function of this connection) queued with
  `Writer.submit`; the jobs queued while a commit runs share the next transaction and one fsync
  (group commit). A register request's job (`small`) runs its statements on the event loop's
  thread and its COMMIT (the fsync) on the writer's own thread; a bulk job (central's pages, an
  import) runs wholly on that thread, so it never holds the loop. A job's caller resumes only
  after the commit. Reads that must see the data as it is in the write transaction run inside
  the job: a coupon's usage when it is reserved, a check's member and coupons when it is settled
  and recorded.
- **The lookup connection** (`StorePart._lookup`): a plain `sqlite3` connection read on the
  event loop's own thread, `query_only`, busy timeout 250 ms. Indexed point lookups only (a
  card, a member, a coupon, a posted check's reply): 8-12 µs from SQLite's page cache, a
  quarter of a hop to another thread and back (bench/lookup.py). WAL means a reader never waits for
  the writer; the short busy timeout bounds how long a rare lock could hold the loop.
- **The reader** (`StorePart._reader`): one aiosqlite connection (its own thread),
  `query_only`, busy timeout 10 s. Scans and counts, which may take milliseconds and would hold
  up the loop: outbox batches, status counts, dead letters, ledger totals.

What follows from it: a method that reads on the lookup connection is a plain `def`; one that
waits for the reader or the writer is `async def`. Only the writer writes. A value read on the
loop and then written is a snapshot, not a lock, so a write that depends on what it reads reads
it inside its own job: a check is settled inside the transaction that records it, by the pure
rule of `gateway/rules/settlement.py`, from what that transaction reads (checks.py); a coupon
reservation's limit is decided inside its job by a pure rule the service passes in (coupons.py
says why).
"""
