"""Balance snapshots and compliance reports, computed from the mirror and signed into its audit log.

The mirror is derived from the ledger, so a report states which ledger moment it covers:
the `ledger_feed` checkpoint (the timestamp of the last change event mirrored). Both
`take_snapshot` and `compliance_report` hold that checkpoint row `FOR SHARE` while they read,
so no sync transaction can commit between their queries (the sync worker takes it `FOR
UPDATE`): every figure is of one consistent mirror state. Each writes its files, records a
row (`balance_snapshots`, `compliance_reports`) and appends an audit row with the files'
sha256, all in one transaction.

What the compliance report counts, over the period [start, end) of the ledger's timestamp
of each transfer (`double_entry.timestamp`, shown as `cleared_at`) and of `rejected_at`:

- *cleared*: transfers that moved money on ledger 1 (USD cents): single-phase transfers and
  the posts of pending ones, each counted at its own timestamp. Ledger 1001 holds limit
  headroom, not money, and is never summed with it. Holds (`phase = 'pending'`) are listed
  apart, by their status now (pending, posted, voided, expired).
- *by kind*: those by transfer code; *by SKU*: obligation legs (code 1) by `user_data_32`
  (a bundle clears as one leg per SKU); *by account*: debits and credits per account;
  *unique users*: distinct accounts debited by code 1; *corrections*: code 5 transfers.
- *rejections* by reason code; *sync*: every checkpoint and its age; *audit*: rows.

And the checks of seed 003 §8.2, each with the offending rows:

- **mechanical truth**: every transfer of the period has a phase and status the ledger can
  produce (single/post: posted; void: voided; pending: pending, posted, voided or expired,
  posted and voided only with their post or void mirrored); every post or void has its
  pending transfer; every transfer has its two legs in `transactions`.
- **balance integrity**: every mirrored account's four balances are the sums of its
  mirrored transfers (all time: posted = single + post, pending = still-pending holds).
- **no reversals**: a *reversal* is a transfer of the period, other than a void, whose
  (debit, credit) is the swap of an earlier obligation leg's (code 1, single or pending), with
  the same amount and the same obligation id (`user_data_128`). A correction is a new forward
  transfer (code 5) under its own id, and is never one.
- **no overrides**: an *override* is an obligation (leg 0, code 1) cleared in the period
  after a rejection of the same (caller, intent id): the rejection names its obligation id,
  or a narrative of that caller and intent id does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from jinja2 import Environment, FileSystemLoader, select_autoescape

from sovr.clearing.codes import LedgerId, Sku, TransferCode
from sovr.mirror import audit
from sovr.mirror.feed import FEED_CHECKPOINT

ACTION_SNAPSHOT = "snapshot"
ACTION_REPORT = "compliance_report"
TEMPLATES = Path(__file__).parent / "templates"
USD = int(LedgerId.USD)
MOVED = "phase IN ('single', 'post')"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["usd"] = usd
    return env


def usd(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _feed_position(conn: psycopg.Connection, *, lock: bool) -> tuple[int, datetime | None]:
    """The ledger timestamp (ns) the mirror has reached and when it got there."""
    row = conn.execute(
        "SELECT position, updated_at FROM sync_checkpoints WHERE name = %s"
        + (" FOR SHARE" if lock else ""), (FEED_CHECKPOINT,)).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def ledger_time(timestamp_ns: int) -> datetime | None:
    return datetime.fromtimestamp(timestamp_ns / 1e9, UTC) if timestamp_ns else None


def _ns(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def _write(path: Path, content: bytes) -> str:
    """Write atomically; the content's sha256."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return hashlib.sha256(content).hexdigest()


# Snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    id: int
    taken_at: datetime
    ledger_timestamp: int  # ns: the feed checkpoint the balances are as of
    accounts: int
    csv_path: Path
    csv_sha256: str
    audit_seq: int


SNAPSHOT_COLUMNS = ("account_id", "name", "kind", "ledger", "currency", "code",
                    "debits_pending", "debits_posted", "credits_pending", "credits_posted",
                    "posted_balance")


def take_snapshot(conn: psycopg.Connection, out_dir: Path) -> Snapshot:
    """Copy every mirrored account's balances into a snapshot and a CSV file.

    `posted_balance` is credits_posted - debits_posted, in the account's ledger unit (cents
    on ledger 1, cents of limit headroom on ledger 1001).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with conn.transaction():
        position, _ = _feed_position(conn, lock=True)
        snapshot_id, taken_at = conn.execute(
            "INSERT INTO balance_snapshots (taken_at, ledger_timestamp, accounts) "
            "VALUES (now(), %s, 0) RETURNING id, taken_at", (position,)).fetchone()
        accounts = conn.execute(
            "INSERT INTO balance_snapshot_rows (snapshot_id, account_id, ledger, code, "
            "debits_pending, debits_posted, credits_pending, credits_posted) "
            "SELECT %s, id, ledger, code, debits_pending, debits_posted, credits_pending, "
            "credits_posted FROM accounts", (snapshot_id,)).rowcount
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SNAPSHOT_COLUMNS)
        rows = conn.execute(
            "SELECT r.account_id, a.name, a.kind, r.ledger, a.currency, r.code, "
            "r.debits_pending, r.debits_posted, r.credits_pending, r.credits_posted, "
            "r.credits_posted - r.debits_posted FROM balance_snapshot_rows r "
            "JOIN accounts a ON a.id = r.account_id WHERE r.snapshot_id = %s "
            "ORDER BY r.ledger, r.account_id", (snapshot_id,))
        writer.writerows(rows)
        path = (out_dir / f"snapshot-{snapshot_id:06d}.csv").absolute()
        csv_sha256 = _write(path, buffer.getvalue().encode())
        conn.execute("UPDATE balance_snapshots SET accounts = %s, csv_path = %s WHERE id = %s",
                     (accounts, str(path), snapshot_id))
        seq = audit.append(conn, ACTION_SNAPSHOT, f"snapshot {snapshot_id}", {
            "snapshot_id": snapshot_id, "ledger_timestamp": position, "accounts": accounts,
            "csv_path": str(path), "csv_sha256": csv_sha256})
    return Snapshot(snapshot_id, taken_at, position, accounts, path, csv_sha256, seq)


# Balances for the HTTP API --------------------------------------------------------------


@dataclass(frozen=True)
class MirrorBalance:
    account_id: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    updated_timestamp: int  # ns: the ledger event that last changed the account
    as_of_timestamp: int  # ns: the feed checkpoint (the mirror knows the ledger up to here)
    synced_at: datetime | None  # when the checkpoint last moved

    @property
    def posted_cents(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def pending_cents(self) -> int:
        return self.credits_pending - self.debits_pending

    @property
    def available_cents(self) -> int:
        """What the ledger would let the account spend now: holds count against it."""
        return self.posted_cents - self.debits_pending


def journal_balance(conn: psycopg.Connection, user_account_id: int) -> MirrorBalance | None:
    """An account's balances as the mirror holds them, or None if it has none."""
    row = conn.execute(
        "SELECT debits_pending, debits_posted, credits_pending, credits_posted, "
        "updated_timestamp FROM accounts WHERE id = %s", (user_account_id,)).fetchone()
    if row is None:
        return None
    position, synced_at = _feed_position(conn, lock=False)
    return MirrorBalance(user_account_id, *(int(v) for v in row), position, synced_at)


# Compliance reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    id: int
    status: str  # "compliant" or "violations"
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    csv_path: Path
    html_path: Path
    content_sha256: str  # of the CSV file
    summary: dict[str, Any]
    audit_seq: int


def _sku_name(value: int) -> str:
    if value == 0:
        return "none"
    try:
        return Sku(value).name.lower()
    except ValueError:
        return f"sku_{value}"


def _figures(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    p = {"start": start, "end": end, "start_ns": _ns(start), "end_ns": _ns(end), "usd": USD}
    q = conn.execute
    usd_moved = f"ledger = %(usd)s AND {MOVED} AND {_period()}"
    by_kind = [{"code": code, "kind": kind, "count": n, "amount_cents": int(cents)}
               for code, kind, n, cents in q(
                   f"SELECT code, kind, count(*), sum(amount) FROM double_entry "
                   f"WHERE {usd_moved} GROUP BY code, kind ORDER BY code", p)]
    legs, obligations, users, cents = q(
        f"SELECT count(*), count(DISTINCT user_data_128), count(DISTINCT debit_account_id), "
        f"coalesce(sum(amount), 0) FROM double_entry WHERE code = 1 AND {usd_moved}",
        p).fetchone()
    by_sku = [{"sku": _sku_name(sku), "count": n, "amount_cents": int(c)} for sku, n, c in q(
        f"SELECT user_data_32, count(*), sum(amount) FROM double_entry "
        f"WHERE code = 1 AND {usd_moved} GROUP BY user_data_32 ORDER BY user_data_32", p)]
    accounts = [{"account_id": str(a), "name": name or kind or "unknown",
                 "count": n, "debits_cents": int(d), "credits_cents": int(c)}
                for a, name, kind, n, d, c in q(f"""
        WITH moved AS (SELECT debit_account_id, credit_account_id, amount FROM double_entry
                       WHERE {usd_moved}),
             sides AS (SELECT debit_account_id AS id, amount AS debit, 0 AS credit FROM moved
                       UNION ALL
                       SELECT credit_account_id, 0, amount FROM moved)
        SELECT s.id, a.name, a.kind, count(*), sum(s.debit), sum(s.credit)
        FROM sides s LEFT JOIN accounts a ON a.id = s.id
        GROUP BY s.id, a.name, a.kind ORDER BY s.id""", p)]
    corrections = [{"transfer_id": str(t), "debit_account_id": str(d),
                    "credit_account_id": str(c), "amount_cents": int(a),
                    "cleared_at": at.isoformat()} for t, d, c, a, at in q(
        f"SELECT transfer_id, debit_account_id, credit_account_id, amount, cleared_at "
        f"FROM double_entry WHERE code = {int(TransferCode.CORRECTION)} AND {usd_moved} "
        f"ORDER BY timestamp", p)]
    holds = [{"status": s, "count": n, "amount_cents": int(c)} for s, n, c in q(
        f"SELECT status, count(*), sum(amount) FROM double_entry WHERE ledger = %(usd)s "
        f"AND phase = 'pending' AND {_period()} GROUP BY status ORDER BY status", p)]
    rejections = [{"code": code, "count": n} for code, n in q(
        "SELECT code, count(*) FROM rejections WHERE rejected_at >= %(start)s "
        "AND rejected_at < %(end)s GROUP BY code ORDER BY code", p)]
    total_count = sum(k["count"] for k in by_kind)
    total_cents = sum(k["amount_cents"] for k in by_kind)
    return {
        "cleared": {"count": total_count, "amount_cents": total_cents},
        "by_kind": by_kind,
        "obligations": {"legs": legs, "obligations": obligations, "unique_users": users,
                        "amount_cents": int(cents)},
        "by_sku": by_sku, "accounts": accounts, "holds": holds,
        "corrections": {"count": len(corrections),
                        "amount_cents": sum(c["amount_cents"] for c in corrections),
                        "transfers": corrections},
        "rejections": {"count": sum(r["count"] for r in rejections), "by_reason": rejections},
    }


def _sync_health(conn: psycopg.Connection, start: datetime, end: datetime,
                 position: int) -> dict[str, Any]:
    checkpoints = [{"name": name, "position": str(pos), "updated_at": at.isoformat(),
                    "age_seconds": round(age, 3)} for name, pos, at, age in conn.execute(
        "SELECT name, position, updated_at, extract(epoch FROM now() - updated_at)::float8 "
        "FROM sync_checkpoints ORDER BY name")]
    covered = ledger_time(position)
    total, last_seq, in_period = conn.execute(
        "SELECT count(*), max(seq), count(*) FILTER (WHERE recorded_at_ns >= %s "
        "AND recorded_at_ns < %s) FROM audit_log",
        (_ns(start), _ns(end))).fetchone()
    return {
        "ledger_feed_position": str(position),
        "ledger_feed_covers_until": covered.isoformat() if covered else None,
        "ledger_feed_age_seconds": round((datetime.now(UTC) - covered).total_seconds(), 3)
        if covered else None,
        "covers_period_end": bool(covered and covered >= end),
        "checkpoints": checkpoints,
        "audit_rows": total, "audit_rows_in_period": in_period, "audit_last_seq": last_seq,
    }


def _period(alias: str = "") -> str:
    """The period on the ledger's timestamp (ns), which the UNIQUE index serves."""
    column = f"{alias}.timestamp" if alias else "timestamp"
    return f"{column} >= %(start_ns)s AND {column} < %(end_ns)s"


_MECHANICAL_TRUTH = f"""
WITH period AS (SELECT * FROM double_entry WHERE {_period()}),
-- A post or void follows its pending transfer, so those of the period's holds are here.
settled AS (SELECT pending_id, phase FROM double_entry
            WHERE timestamp >= %(start_ns)s AND phase IN ('post', 'void'))
SELECT transfer_id, 'phase ' || phase || ' cannot have status ' || status FROM period
WHERE NOT ((phase IN ('single', 'post') AND status = 'posted') OR (phase = 'void'
       AND status = 'voided') OR (phase = 'pending'
       AND status IN ('pending', 'posted', 'voided', 'expired')))
UNION ALL
SELECT d.transfer_id, 'pending transfer ' || d.status || ' without its ' || want.phase
FROM period d
JOIN (VALUES ('posted', 'post'), ('voided', 'void')) AS want (status, phase)
  ON want.status = d.status
LEFT JOIN settled s ON s.pending_id = d.transfer_id AND s.phase = want.phase
WHERE d.phase = 'pending' AND s.pending_id IS NULL
UNION ALL
SELECT d.transfer_id, d.phase || ' of a pending transfer the mirror does not hold'
FROM period d LEFT JOIN double_entry p ON p.transfer_id = d.pending_id AND p.phase = 'pending'
WHERE d.phase IN ('post', 'void') AND p.transfer_id IS NULL
UNION ALL
SELECT d.transfer_id, 'has ' || count(t.side) || ' legs in transactions, not 2'
FROM period d LEFT JOIN transactions t
  ON t.event_timestamp = d.timestamp AND t.transfer_id = d.transfer_id
GROUP BY d.transfer_id HAVING count(t.side) <> 2
"""

_BALANCE_INTEGRITY = """
WITH sides AS (
    SELECT debit_account_id AS id, amount AS debit, 0 AS credit, phase, status
    FROM double_entry WHERE phase <> 'void'
    UNION ALL
    SELECT credit_account_id, 0, amount, phase, status FROM double_entry WHERE phase <> 'void'),
sums AS (
    SELECT id,
           coalesce(sum(debit) FILTER (WHERE phase IN ('single', 'post')), 0) AS dp,
           coalesce(sum(credit) FILTER (WHERE phase IN ('single', 'post')), 0) AS cp,
           coalesce(sum(debit) FILTER (WHERE phase = 'pending' AND status = 'pending'), 0)
               AS dn,
           coalesce(sum(credit) FILTER (WHERE phase = 'pending' AND status = 'pending'), 0)
               AS cn
    FROM sides GROUP BY id)
SELECT a.id, format('balances %%s/%%s posted, %%s/%%s pending (debits/credits) but its '
                    'transfers add up to %%s/%%s, %%s/%%s', a.debits_posted, a.credits_posted,
                    a.debits_pending, a.credits_pending, coalesce(s.dp, 0), coalesce(s.cp, 0),
                    coalesce(s.dn, 0), coalesce(s.cn, 0))
FROM accounts a LEFT JOIN sums s ON s.id = a.id
WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
   IS DISTINCT FROM (coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dn, 0), coalesce(s.cn, 0))
"""

_REVERSALS = f"""
SELECT r.transfer_id, 'reverses obligation leg ' || o.transfer_id || ' (' || r.amount
       || ' back from ' || r.debit_account_id || ' to ' || r.credit_account_id || ')'
FROM double_entry r JOIN double_entry o
  ON o.user_data_128 = r.user_data_128 AND o.code = 1 AND o.phase IN ('single', 'pending')
 AND o.debit_account_id = r.credit_account_id AND o.credit_account_id = r.debit_account_id
 AND o.amount = r.amount AND o.timestamp < r.timestamp
WHERE {_period("r")} AND r.phase <> 'void' AND r.user_data_128 <> 0
"""

_OVERRIDES = f"""
WITH cleared AS (
    SELECT transfer_id, cleared_at FROM double_entry
    WHERE {_period()} AND code = 1 AND transfer_id = user_data_128
      AND phase IN ('single', 'pending')),
refused AS (  -- (obligation, rejection) pairs: by the rejection's id, or by a narrative
    SELECT c.transfer_id, c.cleared_at, r.source_id, r.seq, r.code, r.caller, r.intent_id,
           r.rejected_at FROM cleared c
    JOIN rejections r ON r.obligation_id = c.transfer_id
    UNION
    SELECT c.transfer_id, c.cleared_at, r.source_id, r.seq, r.code, r.caller, r.intent_id,
           r.rejected_at FROM cleared c
    JOIN narratives n ON n.obligation_id = c.transfer_id
    JOIN rejections r ON r.caller = n.caller AND r.intent_id = n.intent_id)
SELECT DISTINCT transfer_id, 'cleared after rejection ' || source_id || '#' || seq
       || ' (' || code || ') of ' || caller || ' / ' || intent_id
FROM refused WHERE cleared_at > rejected_at
"""

CHECKS = {
    "mechanical_truth": _MECHANICAL_TRUTH,
    "balance_integrity": _BALANCE_INTEGRITY,
    "no_reversals": _REVERSALS,
    "no_overrides": _OVERRIDES,
}
VIOLATIONS_LISTED_MAX = 1000


def _checks(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    checks = {}
    for name, query in CHECKS.items():
        rows = conn.execute(query, {"start_ns": _ns(start), "end_ns": _ns(end)}).fetchall()
        checks[name] = {
            "compliant": not rows, "violations": len(rows),
            "details": [{"transfer_id": str(t), "problem": problem}
                        for t, problem in sorted(rows)[:VIOLATIONS_LISTED_MAX]]}
    return checks


def _csv(report: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(("section", "key", "name", "count", "amount_cents", "debits_cents",
                "credits_cents", "value"))
    for key in ("id", "period_start", "period_end", "generated_at", "status"):
        w.writerow(("report", key, "", "", "", "", "", report[key]))
    w.writerow(("cleared", "usd", "", report["cleared"]["count"],
                report["cleared"]["amount_cents"], "", "", ""))
    for k in report["by_kind"]:
        w.writerow(("by_kind", k["code"], k["kind"], k["count"], k["amount_cents"], "", "", ""))
    ob = report["obligations"]
    w.writerow(("obligations", "legs", "", ob["legs"], ob["amount_cents"], "", "", ""))
    w.writerow(("obligations", "obligations", "", ob["obligations"], "", "", "", ""))
    w.writerow(("obligations", "unique_users", "", ob["unique_users"], "", "", "", ""))
    for s in report["by_sku"]:
        w.writerow(("by_sku", s["sku"], "", s["count"], s["amount_cents"], "", "", ""))
    for a in report["accounts"]:
        w.writerow(("account", a["account_id"], a["name"], a["count"], "", a["debits_cents"],
                    a["credits_cents"], ""))
    for h in report["holds"]:
        w.writerow(("holds", h["status"], "", h["count"], h["amount_cents"], "", "", ""))
    corrections = report["corrections"]
    w.writerow(("corrections", "total", "", corrections["count"],
                corrections["amount_cents"], "", "", ""))
    for c in corrections["transfers"]:
        w.writerow(("correction", c["transfer_id"], f"{c['debit_account_id']} -> "
                    f"{c['credit_account_id']}", 1, c["amount_cents"], "", "", c["cleared_at"]))
    w.writerow(("rejections", "total", "", report["rejections"]["count"], "", "", "", ""))
    for r in report["rejections"]["by_reason"]:
        w.writerow(("rejections", r["code"], "", r["count"], "", "", "", ""))
    sync = report["sync"]
    for key in ("ledger_feed_position", "ledger_feed_covers_until", "ledger_feed_age_seconds",
                "covers_period_end", "audit_rows", "audit_rows_in_period", "audit_last_seq"):
        w.writerow(("sync", key, "", "", "", "", "", sync[key]))
    for c in sync["checkpoints"]:
        w.writerow(("checkpoint", c["name"], c["updated_at"], "", "", "", "", c["position"]))
    for name, check in report["checks"].items():
        w.writerow(("check", name, "compliant" if check["compliant"] else "violated",
                    check["violations"], "", "", "", ""))
        for d in check["details"]:
            w.writerow(("violation", name, d["transfer_id"], "", "", "", "", d["problem"]))
    return buffer.getvalue().encode()


def compliance_report(conn: psycopg.Connection, period_start: datetime, period_end: datetime,
                      out_dir: Path) -> Report:
    """Report on [period_start, period_end): figures, checks, CSV and HTML files, a row in
    `compliance_reports` and an audit row, in one transaction."""
    if period_start.utcoffset() is None or period_end.utcoffset() is None:
        raise ValueError("period_start and period_end must be timezone-aware")
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    out_dir.mkdir(parents=True, exist_ok=True)
    start, end = period_start.astimezone(UTC), period_end.astimezone(UTC)
    with conn.transaction():
        position, _ = _feed_position(conn, lock=True)
        report: dict[str, Any] = {"period_start": start.isoformat(),
                                  "period_end": end.isoformat(), **_figures(conn, start, end)}
        report["sync"] = _sync_health(conn, start, end, position)
        report["checks"] = _checks(conn, start, end)
        compliant = all(c["compliant"] for c in report["checks"].values())
        report["status"] = status = "compliant" if compliant else "violations"
        report_id, generated_at = conn.execute(
            "INSERT INTO compliance_reports (report_type, period_start, period_end, status) "
            "VALUES ('compliance', %s, %s, %s) RETURNING id, generated_at",
            (start, end, status)).fetchone()
        report.update(id=report_id, generated_at=generated_at.isoformat())
        stem = f"compliance-{start:%Y%m%d}-{end:%Y%m%d}-{report_id:06d}"
        csv_path = (out_dir / f"{stem}.csv").absolute()
        html_path = (out_dir / f"{stem}.html").absolute()
        content_sha256 = _write(csv_path, _csv(report))
        html = _environment().get_template("compliance_report.html").render(
            report=report, csv_name=csv_path.name, content_sha256=content_sha256)
        html_sha256 = _write(html_path, html.encode())
        summary = {k: v for k, v in report.items() if k not in ("accounts", "corrections")}
        summary["accounts"] = len(report["accounts"])
        summary["corrections"] = {k: v for k, v in report["corrections"].items()
                                  if k != "transfers"}
        summary["html_sha256"] = html_sha256
        conn.execute(
            "UPDATE compliance_reports SET csv_path = %s, html_path = %s, content_sha256 = %s, "
            "summary = %s WHERE id = %s",
            (str(csv_path), str(html_path), content_sha256,
             orjson.dumps(summary).decode(), report_id))
        seq = audit.append(conn, ACTION_REPORT, f"compliance report {report_id}", {
            "report_id": report_id, "period_start": start.isoformat(),
            "period_end": end.isoformat(), "status": status, "ledger_timestamp": position,
            "csv_path": str(csv_path), "csv_sha256": content_sha256,
            "html_path": str(html_path), "html_sha256": html_sha256})
    return Report(report_id, status, start, end, generated_at, csv_path, html_path,
                  content_sha256, summary, seq)
