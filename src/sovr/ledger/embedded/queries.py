"""The embedded engine's read operations: TigerBeetle's filters, translated to SQL.

Filter validity follows `get_scan_from_account_filter` / `get_scan_from_query_filter` in
TigerBeetle's state machine: an invalid filter is not an error, it returns no results. A
limit beyond what one reply can hold is `TooMuchDataError`, raised before the filter is
looked at, as the official client does.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass

import tigerbeetle as tb

from sovr.ledger import validation
from sovr.ledger.embedded import codec
from sovr.ledger.embedded.state_machine import (
    AC_CODE,
    AC_TIMESTAMP,
    AC_UD32,
    AC_UD64,
    AC_UD128,
    T_PENDING,
    T_POST,
    T_VOID,
)
from sovr.ledger.embedded.store import Store
from sovr.ledger.types import (
    QUERY_LIMIT_MAX,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    U128_MAX,
    ChangeEvent,
    ChangeEventType,
)

_T_COLUMNS = ", ".join("t." + c for c in codec.TRANSFER_COLUMNS.split(", "))


def range_valid(timestamp_min: int, timestamp_max: int) -> bool:
    return (
        (timestamp_min == 0 or TIMESTAMP_MIN <= timestamp_min <= TIMESTAMP_MAX)
        and (timestamp_max == 0 or TIMESTAMP_MIN <= timestamp_max <= TIMESTAMP_MAX)
        and (timestamp_max == 0 or timestamp_min <= timestamp_max)
    )


def _bounds(timestamp_min: int, timestamp_max: int) -> tuple[int, int]:
    return timestamp_min or TIMESTAMP_MIN, timestamp_max or TIMESTAMP_MAX


def _check_limit(limit: int) -> None:
    if limit > QUERY_LIMIT_MAX:
        raise tb.TooMuchDataError()


@dataclass(frozen=True, slots=True)
class AccountFilterQuery:
    account_id: int
    user_data_128: int
    user_data_64: int
    user_data_32: int
    code: int
    timestamp_min: int
    timestamp_max: int
    limit: int
    flags: int

    @classmethod
    def from_filter(cls, f: object) -> AccountFilterQuery:
        query = cls(*validation.account_filter_tuple(f))
        _check_limit(query.limit)
        return query

    @property
    def valid(self) -> bool:
        return (
            self.account_id not in (0, U128_MAX)
            and range_valid(self.timestamp_min, self.timestamp_max)
            and self.limit != 0
            and bool(self.flags & (tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS))
            and self.flags & ~0b111 == 0
        )


@dataclass(frozen=True, slots=True)
class QueryFilterQuery:
    user_data_128: int
    user_data_64: int
    user_data_32: int
    ledger: int
    code: int
    timestamp_min: int
    timestamp_max: int
    limit: int
    flags: int

    @classmethod
    def from_filter(cls, f: object) -> QueryFilterQuery:
        query = cls(*validation.query_filter_tuple(f))
        _check_limit(query.limit)
        return query

    @property
    def valid(self) -> bool:
        return (
            range_valid(self.timestamp_min, self.timestamp_max)
            and self.limit != 0
            and self.flags & ~0b1 == 0
        )

    def conditions(self) -> list[tuple[str, object]]:
        """(column, stored value) for each non-zero field, in TigerBeetle's index order."""
        fields = (
            ("user_data_128", self.user_data_128, codec.u128),
            ("user_data_64", self.user_data_64, codec.i64),
            ("user_data_32", self.user_data_32, int),
            ("ledger", self.ledger, int),
            ("code", self.code, int),
        )
        return [(column, encode(value)) for column, value, encode in fields if value]


def account_transfers(
    store: Store, f: AccountFilterQuery, *, with_event: bool = False
) -> list[tuple]:
    """Transfers of an account matching an AccountFilter, in timestamp order."""
    where = ["i.value = ?", "i.timestamp BETWEEN ? AND ?"]
    filters: list[object] = []
    debits = f.flags & tb.AccountFilterFlags.DEBITS
    credits = f.flags & tb.AccountFilterFlags.CREDITS
    if debits and not credits:
        where.append("t.debit_account_id = i.value")
    elif credits and not debits:
        where.append("t.credit_account_id = i.value")
    for column, value, encode in (
        ("user_data_128", f.user_data_128, codec.u128),
        ("user_data_64", f.user_data_64, codec.i64),
        ("user_data_32", f.user_data_32, int),
        ("code", f.code, int),
    ):
        if value:
            where.append(f"t.{column} = ?")
            filters.append(encode(value))
    descending = bool(f.flags & tb.AccountFilterFlags.REVERSED)
    event = ", t.event" if with_event else ""
    sql = (
        f"SELECT {_T_COLUMNS}{event} FROM {{index}} i "
        f"JOIN m.transfers t ON t.timestamp = i.timestamp WHERE {' AND '.join(where)} "
        f"ORDER BY i.timestamp {'DESC' if descending else 'ASC'} LIMIT ?"
    )
    return store.index_query("transfer_accounts", sql, codec.u128(f.account_id),
                             *_bounds(f.timestamp_min, f.timestamp_max), filters, f.limit,
                             descending=descending)


def account_balances(rows: list[tuple], account_id: int) -> list[tb.AccountBalance]:
    balances = []
    for row in rows:
        dr, cr = codec.event_from_blob(row[13])
        side = dr if codec.from_u128(row[1]) == account_id else cr
        balances.append(
            tb.AccountBalance(
                debits_pending=side[0], debits_posted=side[1], credits_pending=side[2],
                credits_posted=side[3], timestamp=row[12],
            )
        )
    return balances


def query_transfers(store: Store, q: QueryFilterQuery) -> list[tuple]:
    conditions = q.conditions()
    low, high = _bounds(q.timestamp_min, q.timestamp_max)
    order = "DESC" if q.flags & tb.QueryFilterFlags.REVERSED else "ASC"
    if not conditions:
        sql = (f"SELECT {_T_COLUMNS} FROM transfers t WHERE t.timestamp BETWEEN ? AND ? "
               f"ORDER BY t.timestamp {order} LIMIT ?")
        return store.query(sql, (low, high, q.limit))
    (first_column, first_value), rest = conditions[0], conditions[1:]
    where = " ".join(f"AND t.{column} = ?" for column, _ in rest)
    descending = bool(q.flags & tb.QueryFilterFlags.REVERSED)
    sql = (
        f"SELECT {_T_COLUMNS} FROM {{index}} i "
        f"JOIN m.transfers t ON t.timestamp = i.timestamp "
        f"WHERE i.value = ? AND i.timestamp BETWEEN ? AND ? {where} "
        f"ORDER BY i.timestamp {'DESC' if descending else 'ASC'} LIMIT ?"
    )
    return store.index_query(f"transfer_{first_column}", sql, first_value, low, high,
                             [v for _, v in rest], q.limit, descending=descending)


def query_accounts(store: Store, q: QueryFilterQuery) -> list[tuple]:
    low, high = _bounds(q.timestamp_min, q.timestamp_max)
    where = "".join(f" AND {column} = ?" for column, _ in q.conditions())
    order = "DESC" if q.flags & tb.QueryFilterFlags.REVERSED else "ASC"
    sql = (f"SELECT {codec.ACCOUNT_COLUMNS} FROM accounts WHERE timestamp BETWEEN ? AND ?"
           f"{where} ORDER BY timestamp {order} LIMIT ?")
    return store.query(sql, [low, high, *[v for _, v in q.conditions()], q.limit])


# -- change events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeEventRow:
    timestamp: int
    transfer: tuple | None  # None for an expiry: the pending transfer is looked up.
    pending_id: int  # The expired pending transfer's id, for an expiry.
    event: bytes
    pending_timestamp: int = 0  # The expired pending transfer's timestamp, for an expiry.

    def account_ids(self) -> tuple[int, ...]:
        if self.transfer is None:
            return ()
        return self.transfer[1], self.transfer[2]


def change_event_rows(
    store: Store, timestamp_min: int, timestamp_max: int, limit: int
) -> list[ChangeEventRow]:
    low, high = _bounds(timestamp_min, timestamp_max)
    transfers = store.query(
        f"SELECT {codec.TRANSFER_COLUMNS}, event FROM transfers "
        "WHERE timestamp BETWEEN ? AND ? ORDER BY timestamp LIMIT ?",
        (low, high, limit),
    )
    expiries = _expiry_rows(store, low, high, limit)
    rows = [ChangeEventRow(r[12], codec.transfer_from_row(r), 0, r[13]) for r in transfers]
    rows_expired = [ChangeEventRow(r[0], None, codec.from_u128(r[1]), r[2], r[3])
                    for r in expiries]
    merged = heapq.merge(rows, rows_expired, key=lambda row: row.timestamp)
    return [row for row, _ in zip(merged, range(limit), strict=False)]


def _expiry_rows(store: Store, low: int, high: int, limit: int) -> list[tuple]:
    """(timestamp, pending id as stored, event, pending timestamp) of the expiries in
    [low, high]."""
    return store.query(
        "SELECT timestamp, pending_id, event, pending_timestamp FROM expiries "
        "WHERE timestamp BETWEEN ? AND ? ORDER BY timestamp LIMIT ?",
        (low, high, limit),
    )


def _event_type(row: ChangeEventRow) -> ChangeEventType:
    if row.transfer is None:
        return ChangeEventType.TWO_PHASE_EXPIRED
    flags = row.transfer[11]
    if flags & T_PENDING:
        return ChangeEventType.TWO_PHASE_PENDING
    if flags & T_POST:
        return ChangeEventType.TWO_PHASE_POSTED
    if flags & T_VOID:
        return ChangeEventType.TWO_PHASE_VOIDED
    return ChangeEventType.SINGLE_PHASE


def change_event(
    row: ChangeEventRow, accounts: dict[int, list], expired: dict[int, tuple]
) -> ChangeEvent:
    """A ChangeEvent as TigerBeetle's `get_change_event` builds it.

    Positional, with the flag enums cached: the mirror reads every event ever cleared, and
    keyword construction cost twice as much."""
    t = row.transfer if row.transfer is not None else expired[row.pending_id]
    dr_b, cr_b = codec.event_from_blob(row.event)
    dr = accounts[t[1]]
    cr = accounts[t[2]]
    return ChangeEvent(
        _event_type(row), row.timestamp, t[9],
        t[0], t[3], t[4], t[5], t[6], t[7], t[8], t[10], _transfer_flags(t[11]), t[12],
        dr[0], dr_b[0], dr_b[1], dr_b[2], dr_b[3], dr[AC_UD128], dr[AC_UD64], dr[AC_UD32],
        dr[AC_CODE], _account_flags(dr_b[4]), dr[AC_TIMESTAMP],
        cr[0], cr_b[0], cr_b[1], cr_b[2], cr_b[3], cr[AC_UD128], cr[AC_UD64], cr[AC_UD32],
        cr[AC_CODE], _account_flags(cr_b[4]), cr[AC_TIMESTAMP],
    )


_transfer_flags = functools.lru_cache(maxsize=1024)(tb.TransferFlags)
_account_flags = functools.lru_cache(maxsize=1024)(tb.AccountFlags)


# -- change events as plain tuples (`types.CHANGE_EVENT_FIELDS`) -------------------------

_CHANGE_EVENT_TYPE_SQL = (
    f"CASE WHEN flags & {T_PENDING} THEN {int(ChangeEventType.TWO_PHASE_PENDING)} "
    f"WHEN flags & {T_POST} THEN {int(ChangeEventType.TWO_PHASE_POSTED)} "
    f"WHEN flags & {T_VOID} THEN {int(ChangeEventType.TWO_PHASE_VOIDED)} "
    f"ELSE {int(ChangeEventType.SINGLE_PHASE)} END"
)
# True when the row's columns but `id` are the values themselves (no u128 BLOB, no u64
# past i64): nearly always, and then only the id needs decoding (ids are mostly `tb.id()`s,
# past 64 bits, so stored as BLOBs).
_PLAIN_SQL = " AND ".join(
    [f"typeof({c}) = 'integer'" for c in codec.TRANSFER_COLUMNS.split(", ")[1:6]]
    + ["user_data_64 >= 0"])
_TRANSFER_EVENTS_SQL = (
    f"SELECT {codec.TRANSFER_COLUMNS}, event, {_CHANGE_EVENT_TYPE_SQL}, {_PLAIN_SQL} "
    "FROM transfers WHERE timestamp BETWEEN ? AND ? ORDER BY timestamp LIMIT ?"
)
_EXPIRED = int(ChangeEventType.TWO_PHASE_EXPIRED)


@dataclass(slots=True)
class ChangeEventSource:
    """What a page of change events is built from: `transfers` rows (TRANSFER_COLUMNS,
    event, type, plain) and `expiries` rows (timestamp, pending_id decoded, event, pending
    transfer's timestamp), each in timestamp order; the stored transfers and accounts they
    name are looked up by the caller."""

    transfers: list[tuple]
    expiries: list[tuple]
    limit: int

    def account_ids(self) -> set[int]:
        """The transfers' accounts (an expiry's are its pending transfer's)."""
        stored = {r[1] for r in self.transfers}
        stored.update(r[2] for r in self.transfers)
        return {codec.from_u128(i) for i in stored}

    def pending_timestamps(self) -> list[int]:
        return [r[3] for r in self.expiries]


def change_event_source(store: Store, timestamp_min: int, timestamp_max: int,
                        limit: int) -> ChangeEventSource:
    low, high = _bounds(timestamp_min, timestamp_max)
    transfers = store.query(_TRANSFER_EVENTS_SQL, (low, high, limit))
    expiries = _expiry_rows(store, low, high, limit)
    return ChangeEventSource(
        transfers, [(r[0], codec.from_u128(r[1]), r[2], r[3]) for r in expiries], limit)


def change_event_tuples(source: ChangeEventSource, accounts: dict[int, list],
                        expired: dict[int, tuple]) -> list[tuple]:
    """The page's events as `change_event` builds them, as plain tuples."""
    from_u128 = codec.from_u128
    events = [
        _event_tuple(r[14], r[12], from_u128(r[0]),
                     r if r[15] else codec.transfer_from_row(r), r[13], accounts)
        for r in source.transfers]
    if not source.expiries:
        return events
    expiries = [_event_tuple(_EXPIRED, r[0], expired[r[1]][0], expired[r[1]], r[2], accounts)
                for r in source.expiries]
    merged = heapq.merge(events, expiries, key=lambda event: event[1])
    return [event for event, _ in zip(merged, range(source.limit), strict=False)]


def _event_tuple(event_type: int, timestamp: int, transfer_id: int, t: tuple, blob: bytes,
                 accounts: dict[int, list]) -> tuple:
    # t: a transfer tuple (TR_* positions; a plain row has them too, its id still encoded);
    # accounts: AC_* lists.
    # Positions are written out, not named: this runs once per event the mirror reads
    # (checked against the names below).
    v = codec.event_values(blob)
    dr = accounts[t[1]]
    cr = accounts[t[2]]
    return (
        event_type, timestamp, t[9],
        transfer_id, t[3], t[4], t[5], t[6], t[7], t[8], t[10], t[11], t[12],
        t[1], v[0], v[1], v[2], v[3], dr[5], dr[6], dr[7], dr[9], v[8], dr[11],
        t[2], v[4], v[5], v[6], v[7], cr[5], cr[6], cr[7], cr[9], v[9], cr[11],
    )


assert (AC_UD128, AC_UD64, AC_UD32, AC_CODE, AC_TIMESTAMP) == (5, 6, 7, 9, 11)
