"""SQLite storage: schema, migrations, cache, ledger, outbox and the single writer."""
