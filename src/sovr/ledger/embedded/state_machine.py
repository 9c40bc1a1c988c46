"""TigerBeetle's state machine for create_accounts, create_transfers and expiry, in Python.

This is a line-by-line port of the checks in TigerBeetle 0.17's `src/state_machine.zig`
(`execute_create`, `create_account`, `create_transfer`, `post_or_void_pending_transfer`,
`*_exists`, `execute_expire_pending_transfers`), in the same order of precedence, because
the order is the behaviour: when several checks fail, the first one in TigerBeetle's code is
the status the caller sees. Comments name the TigerBeetle function a block mirrors.

The module is pure: it reads and writes a `BatchView` (the batch's working set, prefetched
from storage by the caller) and never touches disk. Records are plain tuples and lists for
speed; the field positions are the constants below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tigerbeetle import CreateAccountStatus as AS
from tigerbeetle import CreateTransferStatus as TS

U128_MAX = (1 << 128) - 1
U63_MAX = (1 << 63) - 1
TIMESTAMP_MAX = U63_MAX
NS_PER_S = 1_000_000_000

# Account flags (tigerbeetle.AccountFlags).
A_LINKED = 1 << 0
A_DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
A_CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
A_HISTORY = 1 << 3
A_IMPORTED = 1 << 4
A_CLOSED = 1 << 5
A_PADDING = 0xFFFF & ~0x3F

# Transfer flags (tigerbeetle.TransferFlags).
T_LINKED = 1 << 0
T_PENDING = 1 << 1
T_POST = 1 << 2
T_VOID = 1 << 3
T_BALANCING_DEBIT = 1 << 4
T_BALANCING_CREDIT = 1 << 5
T_CLOSING_DEBIT = 1 << 6
T_CLOSING_CREDIT = 1 << 7
T_IMPORTED = 1 << 8
T_PADDING = 0xFFFF & ~0x1FF

# Pending transfer status (TigerBeetle's TransferPendingStatus).
PENDING_NONE, PENDING, POSTED, VOIDED, EXPIRED = 0, 1, 2, 3, 4

# Account record: a mutable list, positions below (balances first: they change).
AC_ID, AC_DP, AC_DPO, AC_CP, AC_CPO, AC_UD128, AC_UD64, AC_UD32 = 0, 1, 2, 3, 4, 5, 6, 7
AC_LEDGER, AC_CODE, AC_FLAGS, AC_TIMESTAMP = 8, 9, 10, 11

# Transfer record: a tuple in the field order of tigerbeetle.Transfer.
TR_ID, TR_DR, TR_CR, TR_AMOUNT, TR_PENDING_ID, TR_UD128, TR_UD64, TR_UD32 = 0, 1, 2, 3, 4, 5, 6, 7
TR_TIMEOUT, TR_LEDGER, TR_CODE, TR_FLAGS, TR_TIMESTAMP = 8, 9, 10, 11, 12

# Transient failures burn the transfer id for good (`CreateTransferStatus.transient()`).
TRANSIENT_TRANSFER_STATUSES = frozenset(
    {
        TS.DEBIT_ACCOUNT_NOT_FOUND,
        TS.CREDIT_ACCOUNT_NOT_FOUND,
        TS.PENDING_TRANSFER_NOT_FOUND,
        TS.EXCEEDS_CREDITS,
        TS.EXCEEDS_DEBITS,
        TS.DEBIT_ACCOUNT_ALREADY_CLOSED,
        TS.CREDIT_ACCOUNT_ALREADY_CLOSED,
    }
)


@dataclass(slots=True)
class AccountEvent:
    """What TigerBeetle's `account_event` records: both accounts as of one balance change."""

    timestamp: int
    dr: tuple  # (dp, dpo, cp, cpo, flags) of the debit account after the event
    cr: tuple  # same for the credit account
    pending_status: int  # PENDING_NONE, PENDING, POSTED, VOIDED or EXPIRED
    transfer: tuple  # the transfer; for an expiry, the expired pending transfer


@dataclass
class BatchView:
    """The state a batch reads and the changes it makes, in memory until committed.

    The caller prefetches every record the batch can touch (`accounts`, `transfers`,
    `failed_ids`, `pending_status`) and supplies lookups for the rare imported-event checks.
    After execution, `new_accounts`, `new_transfers`, `dirty_accounts`, `pending_updates`,
    `new_failed_ids` and `events` are what storage must write, atomically.
    """

    accounts: dict[int, list]
    transfers: dict[int, tuple]
    failed_ids: set[int]
    pending_status: dict[int, int]  # pending transfer timestamp -> status
    transfer_timestamp_max: int
    account_timestamp_max: int
    transfer_exists_at: Callable[[int], bool]
    account_exists_at: Callable[[int], bool]

    new_accounts: dict[int, list] = field(default_factory=dict)
    new_transfers: dict[int, tuple] = field(default_factory=dict)
    dirty_accounts: set[int] = field(default_factory=set)
    # Pending transfer timestamp -> (status, expires_at).
    pending_updates: dict[int, tuple[int, int]] = field(default_factory=dict)
    new_failed_ids: list[int] = field(default_factory=list)
    events: dict[int, AccountEvent] = field(default_factory=dict)  # by event timestamp
    # Undo log of the open linked chain (None outside a chain): TigerBeetle's scope.
    undo: list | None = None

    def account_timestamp_taken(self, timestamp: int) -> bool:
        if any(a[AC_TIMESTAMP] == timestamp for a in self.new_accounts.values()):
            return True
        return self.account_exists_at(timestamp)

    def transfer_timestamp_taken(self, timestamp: int) -> bool:
        if any(t[TR_TIMESTAMP] == timestamp for t in self.new_transfers.values()):
            return True
        return self.transfer_exists_at(timestamp)

    # -- mutations, each undoable inside a linked chain ---------------------------------

    def touch(self, account: list) -> None:
        """Call before changing `account` in place: it is saved for undo and marked dirty."""
        if self.undo is not None:
            self.undo.append(("account", account, account[:]))
        self.dirty_accounts.add(account[AC_ID])

    def insert_account(self, account: list) -> None:
        if self.undo is not None:
            self.undo.append(("new_account", account[AC_ID], self.account_timestamp_max))
        self.accounts[account[AC_ID]] = account
        self.new_accounts[account[AC_ID]] = account
        self.account_timestamp_max = max(self.account_timestamp_max, account[AC_TIMESTAMP])

    def insert_transfer(self, transfer: tuple, event: AccountEvent) -> None:
        if self.undo is not None:
            self.undo.append(("new_transfer", transfer[TR_ID], self.transfer_timestamp_max))
        self.transfers[transfer[TR_ID]] = transfer
        self.new_transfers[transfer[TR_ID]] = transfer
        self.events[event.timestamp] = event
        if transfer[TR_TIMESTAMP] > self.transfer_timestamp_max:
            self.transfer_timestamp_max = transfer[TR_TIMESTAMP]

    def set_pending_status(self, timestamp: int, status: int, expires_at: int) -> None:
        if self.undo is not None:
            self.undo.append(
                ("pending", timestamp, self.pending_status.get(timestamp),
                 self.pending_updates.get(timestamp))
            )
        self.pending_status[timestamp] = status
        self.pending_updates[timestamp] = (status, expires_at)

    def rollback_chain(self) -> None:
        """Discard the open chain's effects (TigerBeetle's `scope_close(.discard)`)."""
        assert self.undo is not None
        for entry in reversed(self.undo):
            kind = entry[0]
            if kind == "account":
                entry[1][:] = entry[2]
            elif kind == "new_account":
                del self.accounts[entry[1]]
                del self.new_accounts[entry[1]]
                self.account_timestamp_max = entry[2]
            elif kind == "new_transfer":
                transfer = self.transfers.pop(entry[1])
                del self.new_transfers[entry[1]]
                del self.events[transfer[TR_TIMESTAMP]]
                self.transfer_timestamp_max = entry[2]
            else:
                _, timestamp, status, update = entry
                _restore(self.pending_status, timestamp, status)
                _restore(self.pending_updates, timestamp, update)
        self.undo = None


def _restore(mapping: dict, key: int, value: object) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


# -- execute_create ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateKind:
    """What differs between create_accounts and create_transfers in `execute_create`."""

    create_one: Callable[[BatchView, int, tuple], tuple[int, int]]
    flags_index: int
    linked_flag: int
    imported_flag: int
    timestamp_index: int
    statuses: type
    transient: frozenset


def execute_create(
    view: BatchView, events: list[tuple], timestamp: int, kind: CreateKind
) -> list[tuple[int, int]]:
    """Run one batch of creates: linked chains, imported-batch rules, per-event timestamps.

    Returns (timestamp, status) per event. Mirrors `execute_create` exactly, including that
    a transient failure's id is burnt even when its chain is rolled back.
    """
    count = len(events)
    results: list[tuple[int, int]] = []
    chain_start: int | None = None
    chain_broken = False
    flags_index, linked_flag, statuses = kind.flags_index, kind.linked_flag, kind.statuses
    batch_imported = count > 0 and bool(events[0][flags_index] & kind.imported_flag)
    special_flags = linked_flag | kind.imported_flag
    created, exists = statuses.CREATED, statuses.EXISTS
    create_one, timestamp_index = kind.create_one, kind.timestamp_index
    for index, event in enumerate(events):
        flags = event[flags_index]
        timestamp_event = timestamp - count + index + 1
        if flags & special_flags or batch_imported or chain_broken or event[timestamp_index]:
            if flags & linked_flag and chain_start is None:
                chain_start = index
                view.undo = []  # TigerBeetle's scope_open: the chain can be discarded.
            status, timestamp_actual = _create_status(
                view, event, index == count - 1, timestamp, timestamp_event, chain_broken,
                batch_imported, kind,
            )
        else:  # The common case: a plain event outside any chain.
            status, timestamp_actual = create_one(view, timestamp_event, event)
            if status != created and status != exists:
                timestamp_actual = timestamp_event
        if status != created:
            if chain_start is not None and not chain_broken:
                chain_broken = True
                view.rollback_chain()  # TigerBeetle's scope_close(.discard).
                for chain_index in range(chain_start, index):
                    results[chain_index] = (results[chain_index][0], statuses.LINKED_EVENT_FAILED)
            if status in kind.transient:
                view.failed_ids.add(event[0])
                view.new_failed_ids.append(event[0])
        results.append((timestamp_actual, status))
        chain_ends = not flags & linked_flag or status == statuses.LINKED_EVENT_CHAIN_OPEN
        if chain_start is not None and chain_ends:
            view.undo = None  # Persist the chain (or it was already discarded).
            chain_start = None
            chain_broken = False
    assert chain_start is None and view.undo is None
    return results


def _create_status(
    view: BatchView, event: tuple, is_last: bool, timestamp: int, timestamp_event: int,
    chain_broken: bool, batch_imported: bool, kind: CreateKind,
) -> tuple[int, int]:
    statuses = kind.statuses
    flags = event[kind.flags_index]
    if flags & kind.linked_flag and is_last:
        return statuses.LINKED_EVENT_CHAIN_OPEN, timestamp_event
    if chain_broken:
        return statuses.LINKED_EVENT_FAILED, timestamp_event
    imported = bool(flags & kind.imported_flag)
    if batch_imported != imported:
        if imported:
            return statuses.IMPORTED_EVENT_NOT_EXPECTED, timestamp_event
        return statuses.IMPORTED_EVENT_EXPECTED, timestamp_event
    event_timestamp = event[kind.timestamp_index]
    if imported:
        if not 1 <= event_timestamp <= TIMESTAMP_MAX:
            return statuses.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE, timestamp_event
        if event_timestamp >= timestamp:
            return statuses.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE, timestamp_event
    elif event_timestamp != 0:
        return statuses.TIMESTAMP_MUST_BE_ZERO, timestamp_event
    status, timestamp_actual = kind.create_one(view, timestamp_event, event)
    if status == statuses.CREATED or status == statuses.EXISTS:
        return status, timestamp_actual
    return status, timestamp_event


# -- create_account ---------------------------------------------------------------------

# Account input tuple: (id, dp, dpo, cp, cpo, ud128, ud64, ud32, ledger, code, flags, timestamp)
# i.e. the same positions as the account record.


def create_account(view: BatchView, timestamp_event: int, a: tuple) -> tuple[int, int]:
    flags = a[AC_FLAGS]
    if flags & A_PADDING:
        return AS.RESERVED_FLAG, 0
    account_id = a[AC_ID]
    if account_id == 0:
        return AS.ID_MUST_NOT_BE_ZERO, 0
    if account_id == U128_MAX:
        return AS.ID_MUST_NOT_BE_INT_MAX, 0
    existing = view.accounts.get(account_id)
    if existing is not None:
        return _create_account_exists(a, existing)
    if flags & A_DEBITS_MUST_NOT_EXCEED_CREDITS and flags & A_CREDITS_MUST_NOT_EXCEED_DEBITS:
        return AS.FLAGS_ARE_MUTUALLY_EXCLUSIVE, 0
    if a[AC_DP] != 0:
        return AS.DEBITS_PENDING_MUST_BE_ZERO, 0
    if a[AC_DPO] != 0:
        return AS.DEBITS_POSTED_MUST_BE_ZERO, 0
    if a[AC_CP] != 0:
        return AS.CREDITS_PENDING_MUST_BE_ZERO, 0
    if a[AC_CPO] != 0:
        return AS.CREDITS_POSTED_MUST_BE_ZERO, 0
    if a[AC_LEDGER] == 0:
        return AS.LEDGER_MUST_NOT_BE_ZERO, 0
    if a[AC_CODE] == 0:
        return AS.CODE_MUST_NOT_BE_ZERO, 0
    timestamp_actual = timestamp_event
    if flags & A_IMPORTED:
        timestamp_actual = a[AC_TIMESTAMP]
        assert 0 < timestamp_actual <= timestamp_event, "imported timestamp past its event's slot"
        if timestamp_actual <= view.account_timestamp_max:
            return AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS, 0
        if view.transfer_timestamp_taken(timestamp_actual):
            return AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS, 0
    account = [account_id, 0, 0, 0, 0, a[AC_UD128], a[AC_UD64], a[AC_UD32], a[AC_LEDGER],
               a[AC_CODE], flags, timestamp_actual]
    view.insert_account(account)
    return AS.CREATED, timestamp_actual


def _create_account_exists(a: tuple, e: list) -> tuple[int, int]:
    if a[AC_FLAGS] != e[AC_FLAGS]:
        return AS.EXISTS_WITH_DIFFERENT_FLAGS, 0
    if a[AC_UD128] != e[AC_UD128]:
        return AS.EXISTS_WITH_DIFFERENT_USER_DATA_128, 0
    if a[AC_UD64] != e[AC_UD64]:
        return AS.EXISTS_WITH_DIFFERENT_USER_DATA_64, 0
    if a[AC_UD32] != e[AC_UD32]:
        return AS.EXISTS_WITH_DIFFERENT_USER_DATA_32, 0
    if a[AC_LEDGER] != e[AC_LEDGER]:
        return AS.EXISTS_WITH_DIFFERENT_LEDGER, 0
    if a[AC_CODE] != e[AC_CODE]:
        return AS.EXISTS_WITH_DIFFERENT_CODE, 0
    return AS.EXISTS, e[AC_TIMESTAMP]


# -- create_transfer --------------------------------------------------------------------


def create_transfer(view: BatchView, timestamp_event: int, t: tuple) -> tuple[int, int]:
    flags = t[TR_FLAGS]
    if flags & T_PADDING:
        return TS.RESERVED_FLAG, 0
    transfer_id = t[TR_ID]
    if transfer_id == 0:
        return TS.ID_MUST_NOT_BE_ZERO, 0
    if transfer_id == U128_MAX:
        return TS.ID_MUST_NOT_BE_INT_MAX, 0
    existing = view.transfers.get(transfer_id)
    if existing is not None:
        return _create_transfer_exists(view, t, existing)
    if transfer_id in view.failed_ids:
        return TS.ID_ALREADY_FAILED, 0
    if flags & (T_POST | T_VOID):
        return _post_or_void_pending_transfer(view, timestamp_event, t)

    status = _validate_single_phase(t, flags)
    if status is not None:
        return status, 0
    dr = view.accounts.get(t[TR_DR])
    if dr is None:
        return TS.DEBIT_ACCOUNT_NOT_FOUND, 0
    cr = view.accounts.get(t[TR_CR])
    if cr is None:
        return TS.CREDIT_ACCOUNT_NOT_FOUND, 0
    if dr[AC_LEDGER] != cr[AC_LEDGER]:
        return TS.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER, 0
    if t[TR_LEDGER] != dr[AC_LEDGER]:
        return TS.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS, 0

    timestamp_actual = timestamp_event
    if flags & T_IMPORTED:
        timestamp_actual = t[TR_TIMESTAMP]
        # TigerBeetle asserts this too (and crashes): an imported timestamp inside the
        # batch's own range, past this event's slot. Refused whole, nothing applied.
        assert timestamp_actual <= timestamp_event, "imported timestamp past its event's slot"
        status = _imported_transfer_timestamp_status(view, timestamp_actual)
        if status is not None:
            return status, 0
        if timestamp_actual <= dr[AC_TIMESTAMP]:
            return TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT, 0
        if timestamp_actual <= cr[AC_TIMESTAMP]:
            return TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT, 0
        if t[TR_TIMEOUT] != 0:
            return TS.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO, 0
    assert timestamp_actual > dr[AC_TIMESTAMP] and timestamp_actual > cr[AC_TIMESTAMP]

    if dr[AC_FLAGS] & A_CLOSED:
        return TS.DEBIT_ACCOUNT_ALREADY_CLOSED, 0
    if cr[AC_FLAGS] & A_CLOSED:
        return TS.CREDIT_ACCOUNT_ALREADY_CLOSED, 0

    amount = t[TR_AMOUNT]
    if flags & (T_BALANCING_DEBIT | T_BALANCING_CREDIT):
        amount = _balancing_amount(amount, flags, dr, cr)
    status = _single_phase_balance_status(flags, amount, dr, cr, timestamp_actual, t[TR_TIMEOUT])
    if status is not None:
        return status, 0

    # After this point, the transfer must succeed.
    transfer = (transfer_id, t[TR_DR], t[TR_CR], amount, t[TR_PENDING_ID], t[TR_UD128],
                t[TR_UD64], t[TR_UD32], t[TR_TIMEOUT], t[TR_LEDGER], t[TR_CODE], flags,
                timestamp_actual)
    view.touch(dr)
    view.touch(cr)
    if flags & T_PENDING:
        dr[AC_DP] += amount
        cr[AC_CP] += amount
        expires_at = timestamp_actual + t[TR_TIMEOUT] * NS_PER_S if t[TR_TIMEOUT] else 0
        view.set_pending_status(timestamp_actual, PENDING, expires_at)
        pending_status = PENDING
    else:
        dr[AC_DPO] += amount
        cr[AC_CPO] += amount
        pending_status = PENDING_NONE
    if flags & T_CLOSING_DEBIT:
        dr[AC_FLAGS] |= A_CLOSED
    if flags & T_CLOSING_CREDIT:
        cr[AC_FLAGS] |= A_CLOSED
    event = AccountEvent(
        timestamp_actual,
        (dr[AC_DP], dr[AC_DPO], dr[AC_CP], dr[AC_CPO], dr[AC_FLAGS]),
        (cr[AC_DP], cr[AC_DPO], cr[AC_CP], cr[AC_CPO], cr[AC_FLAGS]),
        pending_status,
        transfer,
    )
    view.insert_transfer(transfer, event)
    return TS.CREATED, timestamp_actual


def _validate_single_phase(t: tuple, flags: int) -> int | None:
    dr_id = t[TR_DR]
    cr_id = t[TR_CR]
    if dr_id == 0:
        return TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if dr_id == U128_MAX:
        return TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if cr_id == 0:
        return TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if cr_id == U128_MAX:
        return TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if cr_id == dr_id:
        return TS.ACCOUNTS_MUST_BE_DIFFERENT
    if t[TR_PENDING_ID] != 0:
        return TS.PENDING_ID_MUST_BE_ZERO
    if not flags & T_PENDING:
        if t[TR_TIMEOUT] != 0:
            return TS.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if flags & (T_CLOSING_DEBIT | T_CLOSING_CREDIT):
            return TS.CLOSING_TRANSFER_MUST_BE_PENDING
    if t[TR_LEDGER] == 0:
        return TS.LEDGER_MUST_NOT_BE_ZERO
    if t[TR_CODE] == 0:
        return TS.CODE_MUST_NOT_BE_ZERO
    return None


def _imported_transfer_timestamp_status(view: BatchView, timestamp: int) -> int | None:
    if timestamp <= view.transfer_timestamp_max:
        return TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    if view.account_timestamp_taken(timestamp):
        return TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    return None


def _balancing_amount(amount: int, flags: int, dr: list, cr: list) -> int:
    if flags & T_BALANCING_DEBIT:
        dr_balance = dr[AC_DPO] + dr[AC_DP]
        amount = min(amount, max(dr[AC_CPO] - dr_balance, 0))
    if flags & T_BALANCING_CREDIT:
        cr_balance = cr[AC_CPO] + cr[AC_CP]
        amount = min(amount, max(cr[AC_DPO] - cr_balance, 0))
    return amount


def _single_phase_balance_status(
    flags: int, amount: int, dr: list, cr: list, timestamp: int, timeout: int
) -> int | None:
    if flags & T_PENDING:
        if amount + dr[AC_DP] > U128_MAX:
            return TS.OVERFLOWS_DEBITS_PENDING
        if amount + cr[AC_CP] > U128_MAX:
            return TS.OVERFLOWS_CREDITS_PENDING
    if amount + dr[AC_DPO] > U128_MAX:
        return TS.OVERFLOWS_DEBITS_POSTED
    if amount + cr[AC_CPO] > U128_MAX:
        return TS.OVERFLOWS_CREDITS_POSTED
    if amount + dr[AC_DP] + dr[AC_DPO] > U128_MAX:
        return TS.OVERFLOWS_DEBITS
    if amount + cr[AC_CP] + cr[AC_CPO] > U128_MAX:
        return TS.OVERFLOWS_CREDITS
    if timestamp + timeout * NS_PER_S > U63_MAX:
        return TS.OVERFLOWS_TIMEOUT
    if (dr[AC_FLAGS] & A_DEBITS_MUST_NOT_EXCEED_CREDITS
            and dr[AC_DP] + dr[AC_DPO] + amount > dr[AC_CPO]):
        return TS.EXCEEDS_CREDITS
    if (cr[AC_FLAGS] & A_CREDITS_MUST_NOT_EXCEED_DEBITS
            and cr[AC_CP] + cr[AC_CPO] + amount > cr[AC_DPO]):
        return TS.EXCEEDS_DEBITS
    return None


def _balances(account: list) -> tuple:
    return (account[AC_DP], account[AC_DPO], account[AC_CP], account[AC_CPO], account[AC_FLAGS])


def _create_transfer_exists(view: BatchView, t: tuple, e: tuple) -> tuple[int, int]:
    flags = t[TR_FLAGS]
    if flags != e[TR_FLAGS]:
        return TS.EXISTS_WITH_DIFFERENT_FLAGS, 0
    if t[TR_PENDING_ID] != e[TR_PENDING_ID]:
        return TS.EXISTS_WITH_DIFFERENT_PENDING_ID, 0
    if t[TR_TIMEOUT] != e[TR_TIMEOUT]:
        return TS.EXISTS_WITH_DIFFERENT_TIMEOUT, 0
    if flags & (T_POST | T_VOID):
        pending = view.transfers[t[TR_PENDING_ID]]
        return _post_or_void_pending_transfer_exists(t, e, pending)
    if t[TR_DR] != e[TR_DR]:
        return TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID, 0
    if t[TR_CR] != e[TR_CR]:
        return TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID, 0
    # A balancing transfer's amount is an upper bound: any resubmission within it exists.
    if flags & (T_BALANCING_DEBIT | T_BALANCING_CREDIT):
        if t[TR_AMOUNT] < e[TR_AMOUNT]:
            return TS.EXISTS_WITH_DIFFERENT_AMOUNT, 0
    elif t[TR_AMOUNT] != e[TR_AMOUNT]:
        return TS.EXISTS_WITH_DIFFERENT_AMOUNT, 0
    if t[TR_UD128] != e[TR_UD128]:
        return TS.EXISTS_WITH_DIFFERENT_USER_DATA_128, 0
    if t[TR_UD64] != e[TR_UD64]:
        return TS.EXISTS_WITH_DIFFERENT_USER_DATA_64, 0
    if t[TR_UD32] != e[TR_UD32]:
        return TS.EXISTS_WITH_DIFFERENT_USER_DATA_32, 0
    if t[TR_LEDGER] != e[TR_LEDGER]:
        return TS.EXISTS_WITH_DIFFERENT_LEDGER, 0
    if t[TR_CODE] != e[TR_CODE]:
        return TS.EXISTS_WITH_DIFFERENT_CODE, 0
    return TS.EXISTS, e[TR_TIMESTAMP]


# -- post_or_void_pending_transfer ------------------------------------------------------


def _post_or_void_pending_transfer(
    view: BatchView, timestamp_event: int, t: tuple
) -> tuple[int, int]:
    flags = t[TR_FLAGS]
    status = _validate_post_or_void(t, flags)
    if status is not None:
        return status, 0
    p = view.transfers.get(t[TR_PENDING_ID])
    if p is None:
        return TS.PENDING_TRANSFER_NOT_FOUND, 0
    if not p[TR_FLAGS] & T_PENDING:
        return TS.PENDING_TRANSFER_NOT_PENDING, 0
    dr = view.accounts[p[TR_DR]]
    cr = view.accounts[p[TR_CR]]
    status = _pending_mismatch_status(t, p)
    if status is not None:
        return status, 0

    void = bool(flags & T_VOID)
    if void:
        amount = t[TR_AMOUNT] if t[TR_AMOUNT] else p[TR_AMOUNT]
    else:
        amount = p[TR_AMOUNT] if t[TR_AMOUNT] == U128_MAX else t[TR_AMOUNT]
    if amount > p[TR_AMOUNT]:
        return TS.EXCEEDS_PENDING_TRANSFER_AMOUNT, 0
    if void and amount < p[TR_AMOUNT]:
        return TS.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT, 0

    pending_status = view.pending_status[p[TR_TIMESTAMP]]
    if pending_status == POSTED:
        return TS.PENDING_TRANSFER_ALREADY_POSTED, 0
    if pending_status == VOIDED:
        return TS.PENDING_TRANSFER_ALREADY_VOIDED, 0
    if pending_status == EXPIRED:
        return TS.PENDING_TRANSFER_EXPIRED, 0
    assert pending_status == PENDING
    expires_at = p[TR_TIMESTAMP] + p[TR_TIMEOUT] * NS_PER_S if p[TR_TIMEOUT] else 0
    if expires_at and expires_at <= timestamp_event:
        return TS.PENDING_TRANSFER_EXPIRED, 0

    timestamp_actual = timestamp_event
    if flags & T_IMPORTED:
        timestamp_actual = t[TR_TIMESTAMP]
        # TigerBeetle asserts this too (and crashes): an imported timestamp inside the
        # batch's own range, past this event's slot. Refused whole, nothing applied.
        assert timestamp_actual <= timestamp_event, "imported timestamp past its event's slot"
        status = _imported_transfer_timestamp_status(view, timestamp_actual)
        if status is not None:
            return status, 0
    assert timestamp_actual > dr[AC_TIMESTAMP] and timestamp_actual > cr[AC_TIMESTAMP]

    # The only movement allowed in a closed account is voiding a pending transfer.
    if dr[AC_FLAGS] & A_CLOSED and not void:
        return TS.DEBIT_ACCOUNT_ALREADY_CLOSED, 0
    if cr[AC_FLAGS] & A_CLOSED and not void:
        return TS.CREDIT_ACCOUNT_ALREADY_CLOSED, 0

    # After this point, the transfer must succeed.
    transfer = (t[TR_ID], p[TR_DR], p[TR_CR], amount, t[TR_PENDING_ID],
                t[TR_UD128] or p[TR_UD128], t[TR_UD64] or p[TR_UD64], t[TR_UD32] or p[TR_UD32],
                0, p[TR_LEDGER], p[TR_CODE], flags, timestamp_actual)
    new_status = VOIDED if void else POSTED
    view.set_pending_status(p[TR_TIMESTAMP], new_status, 0)
    view.touch(dr)
    view.touch(cr)
    dr[AC_DP] -= p[TR_AMOUNT]
    cr[AC_CP] -= p[TR_AMOUNT]
    assert dr[AC_DP] >= 0 and cr[AC_CP] >= 0, "pending balance underflow"
    if void:
        if p[TR_FLAGS] & T_CLOSING_DEBIT:
            dr[AC_FLAGS] &= ~A_CLOSED
        if p[TR_FLAGS] & T_CLOSING_CREDIT:
            cr[AC_FLAGS] &= ~A_CLOSED
    else:
        dr[AC_DPO] += amount
        cr[AC_CPO] += amount
    event = AccountEvent(timestamp_actual, _balances(dr), _balances(cr), new_status, transfer)
    view.insert_transfer(transfer, event)
    return TS.CREATED, timestamp_actual


def _validate_post_or_void(t: tuple, flags: int) -> int | None:
    if flags & T_POST and flags & T_VOID:
        return TS.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    exclusive = T_PENDING | T_BALANCING_DEBIT | T_BALANCING_CREDIT | T_CLOSING_DEBIT
    if flags & (exclusive | T_CLOSING_CREDIT):
        return TS.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    pending_id = t[TR_PENDING_ID]
    if pending_id == 0:
        return TS.PENDING_ID_MUST_NOT_BE_ZERO
    if pending_id == U128_MAX:
        return TS.PENDING_ID_MUST_NOT_BE_INT_MAX
    if pending_id == t[TR_ID]:
        return TS.PENDING_ID_MUST_BE_DIFFERENT
    if t[TR_TIMEOUT] != 0:
        return TS.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    return None


def _pending_mismatch_status(t: tuple, p: tuple) -> int | None:
    if t[TR_DR] and t[TR_DR] != p[TR_DR]:
        return TS.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t[TR_CR] and t[TR_CR] != p[TR_CR]:
        return TS.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t[TR_LEDGER] and t[TR_LEDGER] != p[TR_LEDGER]:
        return TS.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t[TR_CODE] and t[TR_CODE] != p[TR_CODE]:
        return TS.PENDING_TRANSFER_HAS_DIFFERENT_CODE
    return None


def _post_or_void_pending_transfer_exists(t: tuple, e: tuple, p: tuple) -> tuple[int, int]:
    if t[TR_DR] and t[TR_DR] != e[TR_DR]:
        return TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID, 0
    if t[TR_CR] and t[TR_CR] != e[TR_CR]:
        return TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID, 0
    amount = t[TR_AMOUNT]
    if t[TR_FLAGS] & T_VOID:
        expected = p[TR_AMOUNT] if amount == 0 else amount
    else:
        expected = p[TR_AMOUNT] if amount == U128_MAX else amount
    if e[TR_AMOUNT] != expected:
        return TS.EXISTS_WITH_DIFFERENT_AMOUNT, 0
    for index, status in (
        (TR_UD128, TS.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        (TR_UD64, TS.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        (TR_UD32, TS.EXISTS_WITH_DIFFERENT_USER_DATA_32),
    ):
        expected = t[index] if t[index] else p[index]
        if e[index] != expected:
            return status, 0
    if t[TR_LEDGER] and t[TR_LEDGER] != e[TR_LEDGER]:
        return TS.EXISTS_WITH_DIFFERENT_LEDGER, 0
    if t[TR_CODE] and t[TR_CODE] != e[TR_CODE]:
        return TS.EXISTS_WITH_DIFFERENT_CODE, 0
    return TS.EXISTS, e[TR_TIMESTAMP]


ACCOUNTS = CreateKind(
    create_account, AC_FLAGS, A_LINKED, A_IMPORTED, AC_TIMESTAMP, AS, frozenset()
)
TRANSFERS = CreateKind(
    create_transfer, TR_FLAGS, T_LINKED, T_IMPORTED, TR_TIMESTAMP, TS,
    TRANSIENT_TRANSFER_STATUSES,
)


# -- execute_expire_pending_transfers ---------------------------------------------------


def expire_pending_transfers(view: BatchView, expiring: list[tuple], timestamp: int) -> None:
    """Expire `expiring` (pending transfers in (expires_at, timestamp) order) at `timestamp`.

    Each expiry gets its own timestamp, the last one equal to `timestamp`, as in TigerBeetle's
    pulse operation.
    """
    count = len(expiring)
    for index, p in enumerate(expiring):
        timestamp_event = timestamp - count + index + 1
        assert p[TR_FLAGS] & T_PENDING and p[TR_TIMEOUT] > 0
        assert p[TR_TIMESTAMP] + p[TR_TIMEOUT] * NS_PER_S <= timestamp_event
        assert view.pending_status[p[TR_TIMESTAMP]] == PENDING
        dr = view.accounts[p[TR_DR]]
        cr = view.accounts[p[TR_CR]]
        assert dr[AC_DP] >= p[TR_AMOUNT] and cr[AC_CP] >= p[TR_AMOUNT]
        view.touch(dr)
        view.touch(cr)
        dr[AC_DP] -= p[TR_AMOUNT]
        cr[AC_CP] -= p[TR_AMOUNT]
        if p[TR_FLAGS] & T_CLOSING_DEBIT:
            dr[AC_FLAGS] &= ~A_CLOSED
        if p[TR_FLAGS] & T_CLOSING_CREDIT:
            cr[AC_FLAGS] &= ~A_CLOSED
        view.set_pending_status(p[TR_TIMESTAMP], EXPIRED, 0)
        view.events[timestamp_event] = AccountEvent(
            timestamp_event, _balances(dr), _balances(cr), EXPIRED, p
        )
