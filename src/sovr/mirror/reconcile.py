"""Reconciliation: is the mirror what the ledger says, value for value?

`audit.verify` proves the mirror was not changed after it was written; this proves it was
right, by asking the ledger (the only truth) again:

- accounts: every ledger account's four balances against its `accounts` row (an account the
  mirror has never seen is fine only while its balances are zero), and no mirror account
  the ledger does not have;
- transfers: every `double_entry` row looked up in the ledger field by field, and every
  change event up to the mirror's checkpoint present in `double_entry` and `transactions`
  with the balances the ledger reported;
- narratives: every journal entry's narrative checked against its leg 0
  (`sovr.mirror.narrative.problems`).

The mirror trails the ledger by design. Events after the checkpoint are *lag*: counted, and
an error only once the oldest is older than `lag_window_seconds`. Accounts those events
moved are compared with their balance as of the checkpoint (from the ledger's own change
events), not with today's.

Consistency: the mirror is read in one snapshot; the ledger's accounts are read *before* the
events after the checkpoint, so every change that could have reached an account read is in
the lag that excuses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import tigerbeetle as tb

from sovr.ledger import (
    BATCH_EVENTS_MAX,
    CHANGE_EVENTS_LIMIT_MAX,
    ChangeEvent,
    ChangeEventType,
    Ledger,
)
from sovr.mirror import feed

LAG_WINDOW_SECONDS = 60.0  # seeds 000/001: sync lag under one minute
DIFFERENCES_LISTED_MAX = 1000
TIMESTAMP_MAX = (1 << 63) - 1
ROWS_PER_FETCH = 10_000

BALANCES = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
ZERO_BALANCES = (0, 0, 0, 0)
# double_entry column -> tb.Transfer attribute
TRANSFER_FIELDS = {
    "debit_account_id": "debit_account_id", "credit_account_id": "credit_account_id",
    "amount": "amount", "code": "code", "ledger": "ledger", "flags": "flags",
    "user_data_128": "user_data_128", "user_data_64": "user_data_64",
    "user_data_32": "user_data_32", "pending_id": "pending_id", "timestamp": "timestamp",
    "timeout_seconds": "timeout"}


@dataclass(frozen=True)
class Difference:
    kind: str  # account, transfer, leg, narrative, lag
    id: str
    what: str
    ledger: Any = None
    mirror: Any = None

    def __str__(self) -> str:
        values = "" if self.ledger is None and self.mirror is None else \
            f" (ledger: {_show(self.ledger)}; mirror: {_show(self.mirror)})"
        return f"{self.kind} {self.id}: {self.what}{values}"


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


@dataclass
class ReconcileReport:
    checkpoint_timestamp: int = 0
    accounts_checked: int = 0
    transfers_checked: int = 0  # mirror double_entry rows looked up in the ledger
    events_checked: int = 0  # ledger change events up to the checkpoint
    journal_entries_checked: int = 0
    journal_entries_without_narrative: int = 0
    narratives_checked: bool = True
    lag_events: int = 0
    lag_age_seconds: float = 0.0
    lag_window_seconds: float = LAG_WINDOW_SECONDS
    differences: list[Difference] = field(default_factory=list)
    differences_not_listed: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences and not self.differences_not_listed

    def add(self, difference: Difference) -> None:
        if len(self.differences) < DIFFERENCES_LISTED_MAX:
            self.differences.append(difference)
        else:
            self.differences_not_listed += 1


def render(report: ReconcileReport) -> str:
    lines = [
        f"mirror checkpoint: ledger timestamp {report.checkpoint_timestamp}",
        f"accounts checked: {report.accounts_checked}",
        f"transfers checked: {report.transfers_checked}",
        f"ledger events checked: {report.events_checked}",
        "journal entries checked: " + (
            f"{report.journal_entries_checked} ({report.journal_entries_without_narrative} "
            "without a narrative yet)" if report.narratives_checked
            else "not checked (sovr.mirror.narrative is not available)"),
        f"lag: {report.lag_events} events after the checkpoint" + (
            f", oldest {report.lag_age_seconds:.1f} s old "
            f"(window {report.lag_window_seconds:g} s)" if report.lag_events else ""),
    ]
    total = len(report.differences) + report.differences_not_listed
    if report.ok:
        lines.append("OK: the mirror agrees with the ledger")
    else:
        lines.append(f"{total} DIFFERENCES:")
        lines += [f"  {d}" for d in report.differences]
        if report.differences_not_listed:
            lines.append(f"  … and {report.differences_not_listed} more")
    return "\n".join(lines)


def reconcile(ledger: Ledger, conn: psycopg.Connection, *,
              lag_window_seconds: float = LAG_WINDOW_SECONDS) -> ReconcileReport:
    report = ReconcileReport(lag_window_seconds=lag_window_seconds)
    snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if snapshot:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT position FROM sync_checkpoints WHERE name = %s",
                           (feed.FEED_CHECKPOINT,)).fetchone()
        checkpoint = report.checkpoint_timestamp = int(row[0]) if row else 0
        suspects = _compare_accounts(ledger, conn, report)
        moved_since = _measure_lag(ledger, checkpoint, report)
        as_of_checkpoint = {i: ZERO_BALANCES for i in suspects if i in moved_since}
        for account_id, (ledger_balances, mirror_balances) in suspects.items():
            if account_id not in as_of_checkpoint:
                _add_balance_differences(report, account_id, ledger_balances, mirror_balances)
        _compare_events(ledger, conn, checkpoint, report, as_of_checkpoint)
        for account_id, balances in as_of_checkpoint.items():
            _add_balance_differences(report, account_id, balances, suspects[account_id][1])
        _compare_transfers(ledger, conn, report)
        _check_narratives(conn, report)
    return report


# -- accounts -----------------------------------------------------------------------------

def _ledger_accounts(ledger: Ledger) -> Iterator[tb.Account]:
    after = 0
    while True:
        page = ledger.query_accounts(tb.QueryFilter(
            user_data_128=0, user_data_64=0, user_data_32=0, ledger=0, code=0,
            timestamp_min=after + 1, timestamp_max=0, limit=BATCH_EVENTS_MAX,
            flags=tb.QueryFilterFlags.NONE))
        yield from page
        if len(page) < BATCH_EVENTS_MAX:
            return
        after = page[-1].timestamp


def _compare_accounts(ledger: Ledger, conn: psycopg.Connection, report: ReconcileReport
                      ) -> dict[int, tuple[tuple[int, ...], tuple[int, ...] | None]]:
    """Ledger and mirror accounts merged by (creation timestamp, id). Mirror-only accounts are
    differences; balance mismatches are returned as suspects (lag may excuse them)."""
    suspects: dict[int, tuple[tuple[int, ...], tuple[int, ...] | None]] = {}
    ledger_rows = ((a.timestamp, a.id, tuple(getattr(a, b) for b in BALANCES))
                   for a in _ledger_accounts(ledger))
    mirror_rows = ((int(r[0]), int(r[1]), tuple(int(v) for v in r[2:])) for r in _stream(
        conn, f"SELECT created_timestamp, id, {', '.join(BALANCES)} FROM accounts "
              "ORDER BY created_timestamp, id"))
    for in_ledger, in_mirror in _merge(ledger_rows, mirror_rows):
        if in_ledger is None:
            assert in_mirror is not None
            report.add(Difference("account", str(in_mirror[1]),
                                  "in the mirror, not in the ledger", None,
                                  _balances_text(in_mirror[2])))
            continue
        report.accounts_checked += 1
        mirror_balances = in_mirror[2] if in_mirror else None
        if (mirror_balances or ZERO_BALANCES) != in_ledger[2]:
            suspects[in_ledger[1]] = (in_ledger[2], mirror_balances)
    return suspects


def _merge(left: Iterable[tuple], right: Iterable[tuple]
           ) -> Iterator[tuple[tuple | None, tuple | None]]:
    """Pairs from two streams sorted by their first two fields; None where one lacks it."""
    lefts, rights = iter(left), iter(right)
    a, b = next(lefts, None), next(rights, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[:2] < b[:2]):
            yield a, None
            a = next(lefts, None)
        elif a is None or b[:2] < a[:2]:
            yield None, b
            b = next(rights, None)
        else:
            yield a, b
            a, b = next(lefts, None), next(rights, None)


def _add_balance_differences(report: ReconcileReport, account_id: int,
                             ledger_balances: tuple[int, ...],
                             mirror_balances: tuple[int, ...] | None) -> None:
    if mirror_balances is None:
        if ledger_balances != ZERO_BALANCES:
            report.add(Difference("account", str(account_id), "missing from the mirror",
                                  _balances_text(ledger_balances), None))
        return
    for name, in_ledger, in_mirror in zip(BALANCES, ledger_balances, mirror_balances,
                                          strict=True):
        if in_ledger != in_mirror:
            report.add(Difference("account", str(account_id), f"{name} differs",
                                  in_ledger, in_mirror))


def _balances_text(balances: tuple[int, ...]) -> str:
    return ", ".join(f"{n}={v}" for n, v in zip(BALANCES, balances, strict=True))


# -- change events ------------------------------------------------------------------------

def _events(ledger: Ledger, after: int, until: int = 0) -> Iterator[list[ChangeEvent]]:
    while True:
        page = ledger.get_change_events(timestamp_min=after + 1, timestamp_max=until)
        if page:
            yield page
        if len(page) < CHANGE_EVENTS_LIMIT_MAX:
            return
        after = page[-1].timestamp


def _measure_lag(ledger: Ledger, checkpoint: int, report: ReconcileReport) -> set[int]:
    """Count the events the mirror has not reached; the accounts they moved."""
    moved: set[int] = set()
    oldest = None
    for page in _events(ledger, checkpoint):
        oldest = oldest or page[0].timestamp
        report.lag_events += len(page)
        for e in page:
            moved.update((e.debit_account_id, e.credit_account_id))
    if oldest is not None:
        report.lag_age_seconds = max(0.0, (time.time_ns() - oldest) / 1e9)
        if report.lag_age_seconds > report.lag_window_seconds:
            report.add(Difference(
                "lag", feed.FEED_CHECKPOINT,
                f"{report.lag_events} events after the checkpoint, the oldest "
                f"{report.lag_age_seconds:.0f} s old (window {report.lag_window_seconds:g} s)",
                oldest, report.checkpoint_timestamp))
    return moved


def _compare_events(ledger: Ledger, conn: psycopg.Connection, checkpoint: int,
                    report: ReconcileReport, as_of_checkpoint: dict[int, tuple]) -> None:
    """Every event up to the checkpoint has its transfer and both legs in the mirror, with
    the balances the ledger reported; no mirror leg lacks an event."""
    after = 0
    for page in _events(ledger, 0, checkpoint) if checkpoint else ():
        report.events_checked += len(page)
        legs = [_leg(e, side) for e in page for side in ("debit", "credit")]
        for leg in legs:
            if leg[4] in as_of_checkpoint:
                as_of_checkpoint[leg[4]] = leg[-4:]
        mirrored = {int(r[0]) for r in conn.execute(
            "SELECT transfer_id FROM double_entry WHERE timestamp > %s AND timestamp <= %s",
            (after, page[-1].timestamp))}
        for e in page:  # an expiry's transfer is the pending one, mirrored at its own event
            if e.type != ChangeEventType.TWO_PHASE_EXPIRED and e.transfer_id not in mirrored:
                report.add(Difference("transfer", str(e.transfer_id),
                                      "cleared in the ledger, missing from the mirror",
                                      f"amount={e.transfer_amount}, "
                                      f"timestamp={e.transfer_timestamp}", None))
        _compare_legs(conn, report, after, page[-1].timestamp, legs)
        after = page[-1].timestamp
    _compare_legs(conn, report, after, TIMESTAMP_MAX, [])


def _leg(e: ChangeEvent, side: str) -> tuple:
    """The `transactions` row an event's leg should be, in feed.TRANSACTION_COLUMNS order:
    derived here from the ledger's event, not by the writer's code, so a writer bug shows."""
    p = f"{side}_account_"
    return (e.timestamp, side, feed.EVENT_NAMES[e.type], e.transfer_id, getattr(e, p + "id"),
            e.transfer_amount, e.ledger, feed.currency(e.ledger),
            *(getattr(e, p + b) for b in BALANCES))


def _compare_legs(conn: psycopg.Connection, report: ReconcileReport, after: int, until: int,
                  expected: list[tuple]) -> None:
    mirrored = {(r[0], r[1]): r for r in conn.execute(
        f"SELECT {', '.join(feed.TRANSACTION_COLUMNS)} FROM transactions "
        "WHERE event_timestamp > %s AND event_timestamp <= %s", (after, until))}
    for row in expected:
        key = f"{row[0]}/{row[1]}"
        mirror_row = mirrored.pop((row[0], row[1]), None)
        if mirror_row is None:
            report.add(Difference("leg", key, "in the ledger's change events, missing from "
                                              f"the mirror (transfer {row[3]})"))
            continue
        for name, in_ledger, in_mirror in zip(feed.TRANSACTION_COLUMNS, row, mirror_row,
                                              strict=True):
            if in_ledger != in_mirror:  # Decimal == int compares by value
                report.add(Difference("leg", key, f"{name} differs", in_ledger, in_mirror))
    for (timestamp, side), row in mirrored.items():
        report.add(Difference("leg", f"{timestamp}/{side}", "in the mirror, not in the "
                              f"ledger's change events up to the checkpoint (transfer {row[3]})"))


# -- transfers ----------------------------------------------------------------------------

def _compare_transfers(ledger: Ledger, conn: psycopg.Connection,
                       report: ReconcileReport) -> None:
    columns = tuple(TRANSFER_FIELDS)
    chunk: list[tuple] = []
    for row in _stream(conn, f"SELECT transfer_id, {', '.join(columns)} FROM double_entry "
                             "ORDER BY timestamp"):
        chunk.append(row)
        if len(chunk) == BATCH_EVENTS_MAX:
            _lookup_chunk(ledger, chunk, columns, report)
            chunk = []
    if chunk:
        _lookup_chunk(ledger, chunk, columns, report)


def _lookup_chunk(ledger: Ledger, chunk: list[tuple], columns: tuple[str, ...],
                  report: ReconcileReport) -> None:
    found = {t.id: t for t in ledger.lookup_transfers([int(r[0]) for r in chunk])}
    for transfer_id, *values in chunk:
        report.transfers_checked += 1
        transfer = found.get(int(transfer_id))
        mirrored = dict(zip(columns, (int(v) for v in values), strict=True))
        if transfer is None:
            report.add(Difference("transfer", str(transfer_id), "in the mirror, never cleared "
                                  "in the ledger", None, f"amount={mirrored['amount']}, "
                                  f"timestamp={mirrored['timestamp']}"))
            continue
        for column, attribute in TRANSFER_FIELDS.items():
            in_ledger = int(getattr(transfer, attribute))
            if in_ledger != mirrored[column]:
                report.add(Difference("transfer", str(transfer_id), f"{column} differs",
                                      in_ledger, mirrored[column]))


# -- narratives ---------------------------------------------------------------------------

def _check_narratives(conn: psycopg.Connection, report: ReconcileReport) -> None:
    (report.journal_entries_without_narrative,) = conn.execute(
        "SELECT count(*) FROM journal_entries WHERE NOT has_narrative").fetchone()
    try:
        from sovr.mirror import narrative
    except ImportError:
        report.narratives_checked = False
        return
    cursor = conn.execute("SELECT * FROM narratives LIMIT 0")
    narrative_columns = [c.name for c in cursor.description or ()]
    split = len(narrative_columns)
    rows = _stream(conn, "SELECT n.*, d.* FROM journal_entries j "
                         "JOIN narratives n ON n.obligation_id = j.obligation_id "
                         "AND n.fingerprint = j.fingerprint "
                         "JOIN double_entry d ON d.transfer_id = j.obligation_id "
                         "ORDER BY j.timestamp", with_names=True)
    for names, row in rows:
        story = dict(zip(names[:split], row[:split], strict=True))
        leg0 = dict(zip(names[split:], row[split:], strict=True))
        report.journal_entries_checked += 1
        for problem in narrative.problems(story, leg0):
            report.add(Difference("narrative", str(leg0["transfer_id"]), problem))


# -- helpers ------------------------------------------------------------------------------

_cursor_serial = iter(range(1 << 62))


def _stream(conn: psycopg.Connection, sql: str, *, with_names: bool = False
            ) -> Iterator[Any]:
    """Rows through a server-side cursor: flat memory on millions of rows."""
    with conn.cursor(name=f"sovr_reconcile_{next(_cursor_serial)}") as cur:
        cur.itersize = ROWS_PER_FETCH
        cur.execute(sql)
        names: list[str] | None = None
        for row in cur:
            if not with_names:
                yield row
                continue
            names = names or [c.name for c in cur.description or ()]
            yield names, row
