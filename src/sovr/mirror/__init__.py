"""The Oracle Ledger: a PostgreSQL mirror of the clearing ledger, for people and auditors.

The ledger is the truth; this package only copies it, adds the narrative that does not fit
in a transfer, and proves the copy is faithful:

- `postgres`: which PostgreSQL (`ORACLE_LEDGER_DATABASE_URL`, or a private embedded server
  in the data directory) and how to reach it.
- `migrations`: the schema, managed by Alembic (`sovr db upgrade`).
- `feed`: the sync worker that tails the ledger's change feed into the mirror, with its
  checkpoint in the same database transaction as the rows (exactly-once effect).
- `audit`: the hash-chained audit log, and its verification.

Nothing here writes to the ledger except the journal API, which submits linked chains like
any terminal.
"""
