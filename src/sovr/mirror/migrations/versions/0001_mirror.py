"""The mirror's tables: ledger copy, narrative, rejections, audit log, reports.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# u128 ledger values are NUMERIC(39) (2**128 - 1 has 39 digits); ledger timestamps are
# nanoseconds since the epoch (BIGINT), with a timestamptz beside them for people.
U128 = "NUMERIC(39, 0)"

UPGRADE = f"""
CREATE TABLE accounts (
    id {U128} PRIMARY KEY,
    name TEXT,
    kind TEXT NOT NULL,
    ledger BIGINT NOT NULL,
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    user_data_128 {U128} NOT NULL,
    user_data_64 NUMERIC(20, 0) NOT NULL,
    user_data_32 BIGINT NOT NULL,
    debits_pending {U128} NOT NULL,
    debits_posted {U128} NOT NULL,
    credits_pending {U128} NOT NULL,
    credits_posted {U128} NOT NULL,
    created_timestamp BIGINT NOT NULL,
    updated_timestamp BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX accounts_user_data_128 ON accounts (user_data_128);

-- One row per ledger transfer: its debit and its credit, i.e. the double entry itself.
CREATE TABLE double_entry (
    transfer_id {U128} PRIMARY KEY,
    debit_account_id {U128} NOT NULL,
    credit_account_id {U128} NOT NULL,
    amount {U128} NOT NULL,
    ledger BIGINT NOT NULL,
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    kind TEXT NOT NULL,
    flags INTEGER NOT NULL,
    pending_id {U128} NOT NULL,
    user_data_128 {U128} NOT NULL,
    user_data_64 NUMERIC(20, 0) NOT NULL,
    user_data_32 BIGINT NOT NULL,
    timeout_seconds BIGINT NOT NULL,
    timestamp BIGINT NOT NULL UNIQUE,
    cleared_at TIMESTAMPTZ NOT NULL GENERATED ALWAYS AS (to_timestamp(timestamp / 1e9::float8))
        STORED,
    phase TEXT NOT NULL CHECK (phase IN ('single', 'pending', 'post', 'void')),
    status TEXT NOT NULL CHECK (status IN ('posted', 'pending', 'voided', 'expired')),
    status_timestamp BIGINT NOT NULL
);
-- An obligation's legs, charges, captures and voids share user_data_128 (its id). An
-- account's history is `transactions` by account (indexed there, not twice).
CREATE INDEX double_entry_user_data_128 ON double_entry (user_data_128);

-- One row per leg: each change event moves (or holds, or releases) money on two accounts.
-- The balances are the account's as the ledger reported them right after the event.
CREATE TABLE transactions (
    event_timestamp BIGINT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
    event_type TEXT NOT NULL,
    transfer_id {U128} NOT NULL,
    account_id {U128} NOT NULL,
    amount {U128} NOT NULL,
    ledger BIGINT NOT NULL,
    currency TEXT NOT NULL,
    debits_pending {U128} NOT NULL,
    debits_posted {U128} NOT NULL,
    credits_pending {U128} NOT NULL,
    credits_posted {U128} NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL
        GENERATED ALWAYS AS (to_timestamp(event_timestamp / 1e9::float8)) STORED,
    PRIMARY KEY (event_timestamp, side)
);
CREATE INDEX transactions_account ON transactions (account_id, event_timestamp);

-- What the terminals were told, beyond what fits in a transfer; keyed by the obligation
-- (leg 0's id) and the fingerprint leg 0 carries, so a retry with other words is another row.
CREATE TABLE narratives (
    obligation_id {U128} NOT NULL,
    fingerprint NUMERIC(20, 0) NOT NULL,
    kind TEXT NOT NULL,
    caller TEXT NOT NULL,
    intent_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    said TEXT NOT NULL,
    user_key TEXT,
    wallet TEXT,
    purpose TEXT,
    amount_cents {U128},
    reference TEXT,
    attestation_signer TEXT,
    attestation_signature TEXT,
    attestation_digest TEXT,
    attestation_timestamp BIGINT,
    details JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    narrative_sha256 TEXT NOT NULL,
    source_id TEXT NOT NULL,
    source_seq BIGINT NOT NULL,
    PRIMARY KEY (obligation_id, fingerprint)
);

CREATE TABLE rejections (
    source_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    terminal_id TEXT NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL,
    caller TEXT NOT NULL,
    intent_id TEXT NOT NULL,
    obligation_id {U128},
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    field TEXT,
    ledger_status TEXT,
    intent JSONB NOT NULL,
    PRIMARY KEY (source_id, seq)
);
CREATE INDEX rejections_at ON rejections (rejected_at);

-- An obligation as people read it: the ledger's leg 0 with the narrative that matches it.
CREATE VIEW journal_entries AS
SELECT d.transfer_id AS obligation_id,
       d.kind, d.amount, d.currency, d.debit_account_id, d.credit_account_id,
       d.timestamp, d.cleared_at, d.phase, d.status, d.user_data_64 AS fingerprint,
       n.caller, n.intent_id, n.terminal_id, n.user_key, n.wallet, n.purpose, n.reference,
       n.attestation_signer, n.attestation_signature, n.attestation_digest,
       n.narrative_sha256, n.recorded_at AS narrative_recorded_at,
       (n.obligation_id IS NOT NULL) AS has_narrative
FROM double_entry d
LEFT JOIN narratives n
  ON n.obligation_id = d.transfer_id AND n.fingerprint = d.user_data_64
WHERE d.transfer_id = d.user_data_128 OR d.code = 2;  -- leg 0 of a chain, or a deposit

CREATE TABLE sync_checkpoints (
    name TEXT PRIMARY KEY,
    position {U128} NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    detail JSONB NOT NULL DEFAULT '{{}}'
);

-- Append-only and hash-chained: row_hash = sha256(prev_hash || canonical row).
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    recorded_at_ns BIGINT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details JSONB NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);

CREATE TABLE balance_snapshots (
    id BIGSERIAL PRIMARY KEY,
    taken_at TIMESTAMPTZ NOT NULL,
    ledger_timestamp BIGINT NOT NULL,
    accounts INTEGER NOT NULL,
    csv_path TEXT
);
CREATE TABLE balance_snapshot_rows (
    snapshot_id BIGINT NOT NULL REFERENCES balance_snapshots (id),
    account_id {U128} NOT NULL,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    debits_pending {U128} NOT NULL,
    debits_posted {U128} NOT NULL,
    credits_pending {U128} NOT NULL,
    credits_posted {U128} NOT NULL,
    PRIMARY KEY (snapshot_id, account_id)
);

CREATE TABLE compliance_reports (
    id BIGSERIAL PRIMARY KEY,
    report_type TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    period_end TIMESTAMPTZ NOT NULL,
    generated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    status TEXT NOT NULL,
    csv_path TEXT,
    html_path TEXT,
    content_sha256 TEXT,
    summary JSONB NOT NULL DEFAULT '{{}}'
);
"""

DOWNGRADE = """
DROP TABLE compliance_reports;
DROP TABLE balance_snapshot_rows;
DROP TABLE balance_snapshots;
DROP TABLE audit_log;
DROP TABLE sync_checkpoints;
DROP VIEW journal_entries;
DROP TABLE rejections;
DROP TABLE narratives;
DROP TABLE transactions;
DROP TABLE double_entry;
DROP TABLE accounts;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
