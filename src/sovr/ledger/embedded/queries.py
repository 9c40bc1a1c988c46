"""The embedded engine's read operations: TigerBeetle's filters, translated to SQL.

Filter validity follows `get_scan_from_account_filter` / `get_scan_from_query_filter` in
TigerBeetle's state machine: an invalid filter is not an error, it returns no results. A
limit beyond what one reply can hold is `TooMuchDataError`, raised before the filter is
looked at, as the official client does.
"""

from __future__ import annotations

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
    low, high = _bounds(f.timestamp_min, f.timestamp_max)
    params: list[object] = [codec.u128(f.account_id), low, high]
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
            params.append(encode(value))
    descending = bool(f.flags & tb.AccountFilterFlags.REVERSED)
    event = ", t.event" if with_event else ""
    sql = (
        f"SELECT {_T_COLUMNS}{event} FROM {{index}} i "
        f"JOIN m.transfers t ON t.timestamp = i.timestamp WHERE {' AND '.join(where)} "
        f"ORDER BY i.timestamp {'DESC' if descending else 'ASC'} LIMIT ?"
    )
    return store.index_query("transfer_accounts", sql, params, f.limit, descending=descending,
                             timestamp_min=low, timestamp_max=high)


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
    return store.index_query(
        f"transfer_{first_column}", sql, [first_value, low, high, *[v for _, v in rest]],
        q.limit, descending=descending, timestamp_min=low, timestamp_max=high,
    )


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
    transfer: tuple | None  # None for an expiry: the pending transfer is looked up by id.
    pending_id: int  # The expired pending transfer's id, for an expiry.
    event: bytes

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
    expiries = store.query(
        "SELECT timestamp, pending_id, event FROM expiries "
        "WHERE timestamp BETWEEN ? AND ? ORDER BY timestamp LIMIT ?",
        (low, high, limit),
    )
    rows = [ChangeEventRow(r[12], codec.transfer_from_row(r), 0, r[13]) for r in transfers]
    rows_expired = [ChangeEventRow(r[0], None, codec.from_u128(r[1]), r[2]) for r in expiries]
    merged = heapq.merge(rows, rows_expired, key=lambda row: row.timestamp)
    return [row for row, _ in zip(merged, range(limit), strict=False)]


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
    """A ChangeEvent as TigerBeetle's `get_change_event` builds it."""
    t = row.transfer if row.transfer is not None else expired[row.pending_id]
    dr_balances, cr_balances = codec.event_from_blob(row.event)
    dr = accounts[t[1]]
    cr = accounts[t[2]]
    return ChangeEvent(
        type=_event_type(row), timestamp=row.timestamp, ledger=t[9],
        transfer_id=t[0], transfer_amount=t[3], transfer_pending_id=t[4],
        transfer_user_data_128=t[5], transfer_user_data_64=t[6], transfer_user_data_32=t[7],
        transfer_timeout=t[8], transfer_code=t[10], transfer_flags=tb.TransferFlags(t[11]),
        transfer_timestamp=t[12],
        **_account_fields("debit_account", dr, dr_balances),
        **_account_fields("credit_account", cr, cr_balances),
    )


def _account_fields(prefix: str, account: list, balances: tuple) -> dict[str, object]:
    return {
        f"{prefix}_id": account[0],
        f"{prefix}_debits_pending": balances[0],
        f"{prefix}_debits_posted": balances[1],
        f"{prefix}_credits_pending": balances[2],
        f"{prefix}_credits_posted": balances[3],
        f"{prefix}_user_data_128": account[AC_UD128],
        f"{prefix}_user_data_64": account[AC_UD64],
        f"{prefix}_user_data_32": account[AC_UD32],
        f"{prefix}_code": account[AC_CODE],
        f"{prefix}_flags": tb.AccountFlags(balances[4]),
        f"{prefix}_timestamp": account[AC_TIMESTAMP],
    }
