"""sovr's ledger boundary over a real TigerBeetle cluster, through the official Python client.

Pointing sovr at a cluster
--------------------------
Set `TIGERBEETLE_ADDRESSES` (and `TIGERBEETLE_CLUSTER_ID`, default 0) in the environment, or
pass a URL to `sovr.ledger.connect`::

    TIGERBEETLE_CLUSTER_ID=0 TIGERBEETLE_ADDRESSES=3000,3001,3002 sovr ...
    sovr.ledger.connect("tigerbeetle://0@3000,3001,3002")
    sovr.ledger.connect("tigerbeetle://0@10.0.0.1:3000,10.0.0.2:3000,10.0.0.3:3000")

The addresses are those the replicas were started with, in the same order, separated by commas;
each is `IPv4:PORT`, `[IPv6]:PORT`, a bare port (on 127.0.0.1) or a bare IP (on port 3001).
The client does no name resolution: host names such as `localhost:3000` are rejected.

What the adapter adds to `tigerbeetle.ClientSync`
-------------------------------------------------
`TigerBeetleLedger` *is* a `tigerbeetle.ClientSync`: the eight operations are the official
ones, taking and returning the official dataclasses, with nothing of sovr's on the hot path.
It overrides only how a request is awaited, and adds the change feed:

* Bounded waits. The official client waits for a reply without a time limit, so a cluster that
  is down, not yet started, or behind a wrong address hangs the caller for ever. Here every
  request waits at most `timeout_seconds`, then raises `LedgerUnavailableError` naming the
  addresses. The request is *not* cancelled (the C client has no cancellation): it stays queued
  and executes if the cluster becomes reachable while this client is open (one already sent
  may execute even after `close()`), so a caller
  that retries must reuse the same ids (TigerBeetle's idempotency turns a repeat into
  `exists`) -- which is how TigerBeetle asks every client to retry anyway.

* `get_change_events`: TigerBeetle's own change-data-capture read (operation 137,
  `get_change_events`), which the Python client does not expose. It returns, in commit
  (timestamp) order, one `ChangeEvent` per balance change -- single-phase transfers, pending
  transfers, posts, voids and expiries -- with both accounts' balances as of that event.

Why `get_change_events` and not TigerBeetle's AMQP CDC job
----------------------------------------------------------
TigerBeetle ships change data capture as `tigerbeetle amqp`, a job that publishes every change
event to a RabbitMQ (AMQP 0.9.1) exchange. That job is itself only a loop around this very
operation: it calls `get_change_events(timestamp_min = last published timestamp + 1)`, publishes
the batch, and records its progress in a RabbitMQ queue (`tigerbeetle.internal.progress`).
sovr calls the operation directly because:

* it is a pull: sovr reads the feed when it is ready for it, in batches of up to
  `CHANGE_EVENTS_LIMIT_MAX`, with back-pressure for free;
* it is resumable by a plain timestamp cursor -- the next call's `timestamp_min` is the last
  event's `timestamp + 1` -- which a consumer can store atomically with its own state, so a
  restart neither loses nor repeats events, and any number of readers can follow the feed
  independently;
* it needs no RabbitMQ (nothing to deploy, secure or monitor beside the cluster), and it reads
  the same events, in the same order, from the same source as the AMQP job would publish;
* it behaves the same on the embedded engine, which has no AMQP job to run.

A deployment that already consumes TigerBeetle's AMQP stream can keep doing so: the events are
the same and carry the same timestamps.

Lifetime of abandoned requests (memory safety)
----------------------------------------------
The C client holds a raw pointer to each submitted packet and to its request bytes until it
calls back. When a wait times out, the in-flight packet (the ctypes `CPacket`, which itself
keeps the request array alive through its `_objects`) stays referenced from
`_inflight_packets` and the client stays registered in `Client._clients`, so the callback
always finds live Python objects. The callback -- when the cluster finally answers, or when
`close()` (`tb_client_deinit`) completes every queued packet with `CLIENT_SHUTDOWN` -- removes
the abandoned packet. Nothing is freed while the C side may still touch it.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from typing import Any

import tigerbeetle as tb
from tigerbeetle import bindings
from tigerbeetle.client import (
    Client,
    ClientClosedError,
    CompletionContextSync,
    InflightPacket,
    InitError,
)
from tigerbeetle.lib import c_uint128, validate_uint

from sovr.ledger import validation
from sovr.ledger.types import (
    CHANGE_EVENTS_LIMIT_MAX,
    U128_MAX,
    ChangeEvent,
    ChangeEventType,
    InvalidLedgerUrlError,
    LedgerUnavailableError,
)

__all__ = ["CChangeEvent", "CChangeEventsFilter", "ChangeEventsFilter", "TigerBeetleLedger"]


@dataclass(slots=True, frozen=True)
class ChangeEventsFilter:
    """TigerBeetle's `ChangeEventsFilter`: a timestamp range (0 = unbounded) and a limit."""

    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = CHANGE_EVENTS_LIMIT_MAX


class CChangeEventsFilter(ctypes.Structure):
    """`ChangeEventsFilter` of TigerBeetle's src/tigerbeetle.zig (extern struct, 64 bytes)."""

    _fields_ = [
        ("timestamp_min", ctypes.c_uint64),
        ("timestamp_max", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 44),
    ]

    @classmethod
    def from_param(cls, obj: ChangeEventsFilter) -> CChangeEventsFilter:
        validate_uint(bits=64, name="timestamp_min", number=obj.timestamp_min)
        validate_uint(bits=64, name="timestamp_max", number=obj.timestamp_max)
        validate_uint(bits=32, name="limit", number=obj.limit)
        return cls(
            timestamp_min=obj.timestamp_min,
            timestamp_max=obj.timestamp_max,
            limit=obj.limit,
        )


class CChangeEvent(ctypes.Structure):
    """`ChangeEvent` of TigerBeetle's src/tigerbeetle.zig (extern struct, 384 bytes).

    One transfer (128 B) plus two accounts (2 x 128 B), without padding. ctypes aligns
    `c_uint128` (two u64) to 8 rather than 16, which changes no offset since the layout is
    packed by construction; the sizes and offsets are asserted below.
    """

    _fields_ = [
        ("transfer_id", c_uint128),
        ("transfer_amount", c_uint128),
        ("transfer_pending_id", c_uint128),
        ("transfer_user_data_128", c_uint128),
        ("transfer_user_data_64", ctypes.c_uint64),
        ("transfer_user_data_32", ctypes.c_uint32),
        ("transfer_timeout", ctypes.c_uint32),
        ("transfer_code", ctypes.c_uint16),
        ("transfer_flags", ctypes.c_uint16),
        ("ledger", ctypes.c_uint32),
        ("type", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 39),
        ("debit_account_id", c_uint128),
        ("debit_account_debits_pending", c_uint128),
        ("debit_account_debits_posted", c_uint128),
        ("debit_account_credits_pending", c_uint128),
        ("debit_account_credits_posted", c_uint128),
        ("debit_account_user_data_128", c_uint128),
        ("debit_account_user_data_64", ctypes.c_uint64),
        ("debit_account_user_data_32", ctypes.c_uint32),
        ("debit_account_code", ctypes.c_uint16),
        ("debit_account_flags", ctypes.c_uint16),
        ("credit_account_id", c_uint128),
        ("credit_account_debits_pending", c_uint128),
        ("credit_account_debits_posted", c_uint128),
        ("credit_account_credits_pending", c_uint128),
        ("credit_account_credits_posted", c_uint128),
        ("credit_account_user_data_128", c_uint128),
        ("credit_account_user_data_64", ctypes.c_uint64),
        ("credit_account_user_data_32", ctypes.c_uint32),
        ("credit_account_code", ctypes.c_uint16),
        ("credit_account_flags", ctypes.c_uint16),
        ("timestamp", ctypes.c_uint64),
        ("transfer_timestamp", ctypes.c_uint64),
        ("debit_account_timestamp", ctypes.c_uint64),
        ("credit_account_timestamp", ctypes.c_uint64),
    ]

    def to_python(self) -> ChangeEvent:
        return ChangeEvent(
            type=ChangeEventType(self.type),
            timestamp=self.timestamp,
            ledger=self.ledger,
            transfer_id=self.transfer_id.to_python(),
            transfer_amount=self.transfer_amount.to_python(),
            transfer_pending_id=self.transfer_pending_id.to_python(),
            transfer_user_data_128=self.transfer_user_data_128.to_python(),
            transfer_user_data_64=self.transfer_user_data_64,
            transfer_user_data_32=self.transfer_user_data_32,
            transfer_timeout=self.transfer_timeout,
            transfer_code=self.transfer_code,
            transfer_flags=tb.TransferFlags(self.transfer_flags),
            transfer_timestamp=self.transfer_timestamp,
            debit_account_id=self.debit_account_id.to_python(),
            debit_account_debits_pending=self.debit_account_debits_pending.to_python(),
            debit_account_debits_posted=self.debit_account_debits_posted.to_python(),
            debit_account_credits_pending=self.debit_account_credits_pending.to_python(),
            debit_account_credits_posted=self.debit_account_credits_posted.to_python(),
            debit_account_user_data_128=self.debit_account_user_data_128.to_python(),
            debit_account_user_data_64=self.debit_account_user_data_64,
            debit_account_user_data_32=self.debit_account_user_data_32,
            debit_account_code=self.debit_account_code,
            debit_account_flags=tb.AccountFlags(self.debit_account_flags),
            debit_account_timestamp=self.debit_account_timestamp,
            credit_account_id=self.credit_account_id.to_python(),
            credit_account_debits_pending=self.credit_account_debits_pending.to_python(),
            credit_account_debits_posted=self.credit_account_debits_posted.to_python(),
            credit_account_credits_pending=self.credit_account_credits_pending.to_python(),
            credit_account_credits_posted=self.credit_account_credits_posted.to_python(),
            credit_account_user_data_128=self.credit_account_user_data_128.to_python(),
            credit_account_user_data_64=self.credit_account_user_data_64,
            credit_account_user_data_32=self.credit_account_user_data_32,
            credit_account_code=self.credit_account_code,
            credit_account_flags=tb.AccountFlags(self.credit_account_flags),
            credit_account_timestamp=self.credit_account_timestamp,
        )


def _check_layout() -> None:
    # Done at import: a mismatch would silently garble every change event.
    if ctypes.sizeof(CChangeEventsFilter) != 64:
        raise AssertionError("CChangeEventsFilter must be 64 bytes")
    if ctypes.sizeof(CChangeEvent) != 384:
        raise AssertionError("CChangeEvent must be 384 bytes")
    expected_offsets = {
        "ledger": 84,
        "type": 88,
        "reserved": 89,
        "debit_account_id": 128,
        "debit_account_flags": 238,
        "credit_account_id": 240,
        "credit_account_flags": 350,
        "timestamp": 352,
        "credit_account_timestamp": 376,
    }
    for name, offset in expected_offsets.items():
        if getattr(CChangeEvent, name).offset != offset:
            raise AssertionError(f"CChangeEvent.{name} must be at offset {offset}")


_check_layout()

_INVALID_ADDRESS_STATUSES = (
    bindings.InitStatus.ADDRESS_INVALID,
    bindings.InitStatus.ADDRESS_LIMIT_EXCEEDED,
)


class TigerBeetleLedger(tb.ClientSync):
    """`tigerbeetle.ClientSync` with bounded waits and TigerBeetle's change feed.

    `addresses` is the replicas' comma-separated address list, as given to `tigerbeetle start`.
    Every request raises `LedgerUnavailableError` if the cluster has not answered within
    `timeout_seconds` (see the module docstring for what happens to that request).
    """

    def __init__(self, cluster_id: int, addresses: str, *, timeout_seconds: float = 10.0) -> None:
        if not isinstance(cluster_id, int) or not 0 <= cluster_id <= U128_MAX:
            raise InvalidLedgerUrlError(
                f"TigerBeetle cluster id {cluster_id!r}: expected an integer in [0, 2^128)"
            )
        if not (isinstance(timeout_seconds, int | float) and 0 < timeout_seconds < math.inf):
            raise ValueError(f"timeout_seconds={timeout_seconds!r}: expected a positive number")
        if not addresses.isascii():
            raise InvalidLedgerUrlError(f"TigerBeetle addresses {addresses!r}: not ASCII")

        self.cluster_id = cluster_id
        self.addresses = addresses
        self.timeout_seconds = float(timeout_seconds)
        self._closed = False
        self._abandoned_lock = threading.Lock()
        self._abandoned: set[int] = set()  # user_data of packets whose waiter timed out
        try:
            super().__init__(cluster_id, addresses)
        except InitError as error:
            status = error.args[0] if error.args else None
            try:
                status_name = bindings.InitStatus(status).name
            except ValueError:
                status_name = repr(status)
            if status in _INVALID_ADDRESS_STATUSES:
                raise InvalidLedgerUrlError(
                    f"TigerBeetle addresses {addresses!r} rejected by the client "
                    f"({status_name}): expected up to 6 comma-separated IPv4:PORT, "
                    "[IPv6]:PORT, PORT or IP entries (no host names)"
                ) from error
            raise LedgerUnavailableError(
                f"TigerBeetle client for cluster {cluster_id} at {addresses!r} "
                f"failed to start: {status_name}"
            ) from error

    # The official client range-checks every field but `flags`, which it silently truncates
    # (1 << 16 creates an account with no flags), and lookup ids, which it wraps (-1 becomes
    # 2**128 - 1). sovr refuses them as it refuses any other out-of-range integer, on both
    # backends alike; the flags check costs well under 1% of a batch.
    def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validation.check_flags(accounts, "create_accounts")
        return super().create_accounts(accounts)

    def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validation.check_flags(transfers, "create_transfers")
        return super().create_transfers(transfers)

    def get_account_transfers(self, filter: tb.AccountFilter) -> list[tb.Transfer]:  # noqa: A002
        validation.check_uint("flags", 32, filter.flags)
        return super().get_account_transfers(filter)

    def get_account_balances(self, filter: tb.AccountFilter) -> list[tb.AccountBalance]:  # noqa: A002
        validation.check_uint("flags", 32, filter.flags)
        return super().get_account_balances(filter)

    def query_accounts(self, query_filter: tb.QueryFilter) -> list[tb.Account]:
        validation.check_uint("flags", 32, query_filter.flags)
        return super().query_accounts(query_filter)

    def query_transfers(self, query_filter: tb.QueryFilter) -> list[tb.Transfer]:
        validation.check_uint("flags", 32, query_filter.flags)
        return super().query_transfers(query_filter)

    def lookup_accounts(self, accounts: list[int]) -> list[tb.Account]:
        return super().lookup_accounts(validation.ids_list(accounts, "lookup_accounts"))

    def lookup_transfers(self, transfers: list[int]) -> list[tb.Transfer]:
        return super().lookup_transfers(validation.ids_list(transfers, "lookup_transfers"))

    # Called on the C client's thread for every completed packet.
    def _on_completion(self, inflight_packet: InflightPacket) -> None:
        context = inflight_packet.on_completion_context
        if not isinstance(context, CompletionContextSync):
            raise TypeError(repr(context))
        context.event.set()
        key = inflight_packet.packet.user_data
        with self._abandoned_lock:
            if key in self._abandoned:
                # Its waiter gave up: the C side is done with the packet, so release it now.
                self._abandoned.discard(key)
                self._inflight_packets.pop(key, None)

    def _abandon(self, key: int, event: threading.Event) -> bool:
        """Give up waiting for packet `key`, unless it completed meanwhile (then False).

        An abandoned packet stays referenced from `_inflight_packets` -- and through the
        `CPacket`'s `_objects`, its request bytes -- until the C client calls back.
        """
        with self._abandoned_lock:
            if event.is_set():
                return False
            self._abandoned.add(key)
            return True

    def _submit(
        self,
        operation: bindings.Operation,
        operations: list[Any],
        c_event_type: Any,
        c_result_type: Any,
    ) -> Any:
        # ClientSync._submit, with a timed wait. Calling into a deinitialized C client is
        # undefined behaviour, hence the closed check.
        if self._closed:
            raise ClientClosedError()
        inflight_packet = self._acquire_packet(operation, operations, c_event_type, c_result_type)
        key = inflight_packet.packet.user_data
        event = threading.Event()
        inflight_packet.on_completion = self._on_completion
        inflight_packet.on_completion_context = CompletionContextSync(event=event)
        self._inflight_packets[key] = inflight_packet

        client_state = bindings.tb_client_submit(
            ctypes.byref(self._client), ctypes.byref(inflight_packet.packet)
        )
        if client_state == bindings.ClientStatus.OK:
            try:
                completed = event.wait(self.timeout_seconds)
            except BaseException:  # e.g. KeyboardInterrupt: the packet is still the C side's
                if not self._abandon(key, event):
                    del self._inflight_packets[key]
                raise
            if not completed and self._abandon(key, event):
                raise LedgerUnavailableError(
                    f"TigerBeetle cluster {self.cluster_id} at {self.addresses} did not "
                    f"answer {operation.name.lower()} within {self.timeout_seconds:g}s "
                    "(unreachable, not started, or wrong cluster id?); the request stays "
                    "queued and may still execute: retry with the same ids"
                )

        del self._inflight_packets[key]

        if client_state == bindings.ClientStatus.INVALID:
            raise ClientClosedError()

        response = inflight_packet.response
        if isinstance(response, Exception):
            raise response
        return response

    def get_change_events(
        self,
        timestamp_min: int = 0,
        timestamp_max: int = 0,
        limit: int = CHANGE_EVENTS_LIMIT_MAX,
    ) -> list[ChangeEvent]:
        """Up to `limit` change events with `timestamp_min <= timestamp <= timestamp_max`.

        Bounds of 0 mean unbounded; events come in ascending timestamp order. To resume after
        a batch, pass `timestamp_min=batch[-1].timestamp + 1`. `limit` above
        `CHANGE_EVENTS_LIMIT_MAX` raises `tigerbeetle.TooMuchDataError`; an invalid filter
        (`limit == 0`, or `timestamp_min > timestamp_max != 0`) yields an empty list.
        """
        validation.check_change_events_filter(timestamp_min, timestamp_max, limit)
        return self._submit(  # type: ignore[no-any-return]
            bindings.Operation.GET_CHANGE_EVENTS,
            [ChangeEventsFilter(timestamp_min, timestamp_max, limit)],
            CChangeEventsFilter,
            CChangeEvent,
        )

    def close(self) -> None:
        """Close the client; idempotent. Requests still queued complete as closed."""
        if self._closed:
            return
        self._closed = True
        # Completes every queued packet (CLIENT_SHUTDOWN) through the callback, then frees the
        # C client; the GIL is released during the call, so the callbacks can run.
        bindings.tb_client_deinit(ctypes.byref(self._client))
        with self._abandoned_lock:
            for key in self._abandoned:
                self._inflight_packets.pop(key, None)
            self._abandoned.clear()
        Client._clients.pop(self._client_key, None)

    def __repr__(self) -> str:
        return (
            f"TigerBeetleLedger(cluster_id={self.cluster_id}, addresses={self.addresses!r}, "
            f"timeout_seconds={self.timeout_seconds:g})"
        )
