"""Differential test: the embedded engine against a real TigerBeetle, operation by operation.

A seeded generator writes a *program*: create batches of 1-30 accounts or transfers (every
flag, valid or not, padding bits, linked chains failing midway or left open, imported
batches, resubmissions of earlier events, ids 0 and 2**128 - 1, amounts near 2**128, posts
and voids of every amount, closing and reopening), interleaved with reads (lookups, account
transfers and balances, queries, the change feed, all with random filters). Each program runs
in lockstep on a fresh embedded ledger and on the session's real replica, and every answer is
compared: statuses per event, objects field by field, balances, and at the end the change
events of the program's own ledgers. Some programs also reopen the embedded ledger (cleanly,
or as after a crash), or let pending transfers expire.

Keeping two runs comparable on a shared, long-lived server:

- Programs hold symbolic values, resolved per run: ids are `base + n * stride` with a fresh
  random base (`id_layout`: the id class -- below 2**63, across it, above 2**64 -- is part of
  the program, as it changes the embedded engine's storage encoding) and ledgers are fresh
  random numbers, so no two runs share an object. 0 and 2**128 - 1 stay literal.
- Timestamps are never compared as values. Each backend's outputs are normalized by replacing
  every timestamp with its rank among all timestamps that backend returned in the program.
  Create results also say whether each timestamp is exactly the requested one (imported),
  an existing object's (exists), or the event's slot in its batch (`_create_records`), which
  ranks alone would not show.
- Timestamps a program *sends* (imported events, filter bounds) are symbolic too: "the k-th
  result timestamp seen so far, plus delta" or "the largest seen so far, plus offset",
  resolved from that backend's own results. Every program starts with a probe (one invalid
  account) so that there is always a result to refer to. Events of a batch have consecutive
  timestamps on both backends, and batches are micro- to milliseconds apart on both, so
  "+-1" means the same on both. "Largest so far plus offset" is in the past of both clocks
  and above every object either backend holds, provided nobody else writes to the server
  meanwhile (the session server is private, and tests do not run concurrently).
- Queries not restricted to the program's accounts or ledger, and the change feed, are
  bounded below by the probe's timestamp and skipped if the server returns foreign objects.
- Pending transfers time out after an hour or more, except in a dedicated batch followed by
  a 2.5 s sleep, during which TigerBeetle's idle pulse expires them; expiry timing proper has
  its own test.
- TigerBeetle 0.17.9 panics on an imported post or void of a pending transfer that has a
  timeout (`assert(!t.flags.imported)` in `post_or_void_pending_transfer`): the generator
  avoids it, and `refuse_tigerbeetle_panic` cuts a program short rather than send one.

`SOVR_DIFF_EXAMPLES` sets the number of programs (default 160), `SOVR_DIFF_SEED` the first
seed (default: random, printed on failure). Run this file as a script to fuzz many seeds
against a server and minimize the failures::

    python tests/ledger/test_differential.py fuzz --seeds 0:2000 [--minimize] [--url URL]
    python tests/ledger/test_differential.py minimize --seed 123 [--url URL]

Without `--url` it starts a throwaway replica (tests/tigerbeetle_server.py).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.ledger import CHANGE_EVENTS_LIMIT_MAX

U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
TIMESTAMP_MAX = (1 << 63) - 1

AF = tb.AccountFlags
TF = tb.TransferFlags
A_LINKED, A_DMNEC, A_CMNED, A_HISTORY, A_IMPORTED, A_CLOSED = 1, 2, 4, 8, 16, 32
T_LINKED, T_PENDING, T_POST, T_VOID = 1, 2, 4, 8
T_BAL_DR, T_BAL_CR, T_CLOSE_DR, T_CLOSE_CR, T_IMPORTED = 16, 32, 64, 128, 256

TIMESTAMP_KEYS = frozenset(
    {"timestamp", "transfer_timestamp", "debit_account_timestamp", "credit_account_timestamp"}
)

DEFAULT_EXAMPLES = 160

# -- symbolic values ----------------------------------------------------------------------
#
# A program holds plain ints, or these tuples, resolved against one run's context:
#   ("id", n)          -> base + n * stride (see id_layout) (account or transfer id)
#   ("ledger", i)      -> the run's i-th random ledger
#   ("ts", k, delta)   -> k-th result timestamp of this run (clamped to those seen) + delta
#   ("tsmax", offset)  -> largest result timestamp seen so far in this run + offset


def ID(n: int) -> tuple:
    return ("id", n)


def LEDGER(i: int) -> tuple:
    return ("ledger", i)


@dataclass
class RunContext:
    """What one backend's run of a program resolves symbols against."""

    id_base: int
    id_stride: int
    ledgers: tuple[int, ...]
    observed: list[int] = field(default_factory=list)  # result timestamps, in order

    def resolve(self, value: Any) -> int:
        if not isinstance(value, tuple):
            return value
        kind = value[0]
        if kind == "id":
            return self.id_base + value[1] * self.id_stride
        if kind == "ledger":
            return self.ledgers[value[1]]
        if kind == "ts":
            _, k, delta = value
            return self.observed[min(k, len(self.observed) - 1)] + delta
        if kind == "tsmax":
            return max(self.observed) + value[1]
        raise ValueError(value)


# -- programs -----------------------------------------------------------------------------


@dataclass
class Step:
    """One call: `op` is a ledger method name, `args` its symbolic argument."""

    op: str
    args: Any  # list of field dicts (creates), list of ids (lookups), field dict (filters)

    def __repr__(self) -> str:
        return f"Step({self.op!r}, {self.args!r})"


# How ids are laid out: `("id", n)` is `base + n * stride`, with a fresh random part per run.
# The classes matter to the embedded engine, which stores a u128 as an INTEGER below 2**63 and
# as a BLOB above; "across_i64" puts the first 64 ids below 2**63 and the rest above.
ID_CLASSES = ("small", "across_i64", "large")


def id_layout(id_class: str, rng: random.Random) -> tuple[int, int]:
    """(base, stride) of one run's ids."""
    if id_class == "small":
        return rng.randrange(1 << 20, 1 << 40), 1
    if id_class == "across_i64":
        return (1 << 63) - (64 << 40) + rng.randrange(1 << 40), 1 << 40
    return rng.randrange(1 << 64, 1 << 127), 1


@dataclass
class Program:
    seed: int
    id_class: str
    steps: list[Step]


ACCOUNT_FIELDS = [f.name for f in dataclasses.fields(tb.Account)]
TRANSFER_FIELDS = [f.name for f in dataclasses.fields(tb.Transfer)]


class Generator:
    """Writes a random program. It tracks what it *asked* for, not what happened.

    `fault` scales how often an event is deliberately broken (a program is mostly valid
    events, or riddled with invalid ones), so that both the failure paths and the state
    built by successful events (balances, pending transfers to post, closed accounts,
    histories to query) are exercised.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.fault_scale = self.rng.choice([0.15, 0.5, 1.0, 2.0])
        self.next_id = 1
        self.accounts: list[dict] = []  # account specs submitted (any outcome)
        self.good_accounts: list[dict] = []  # ... and likely created
        self.transfers: list[dict] = []  # transfer specs submitted (any outcome)
        self.results = 1  # result timestamps seen so far (the probe gives one)
        # Pending transfers with timeouts of 1-2 s, only in batches followed by a sleep.
        self.expiry = self.chance(0.03)
        self.short_timeouts = False
        self.link_rate = 0.0

    # helpers --------------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def fault(self, p: float) -> bool:
        return self.rng.random() < p * self.fault_scale

    def new_id(self) -> tuple:
        n = self.next_id
        self.next_id += 1 + (self.rng.random() < 0.1)  # sometimes leave a never-used id
        return ID(n)

    def unknown_id(self) -> tuple:
        return ID(self.next_id + 1000 + self.rng.randrange(1000))

    def ledger(self) -> Any:
        if self.fault(0.02):
            return 0
        return LEDGER(0) if self.chance(0.75) else LEDGER(1)

    def code(self) -> int:
        if self.fault(0.02):
            return 0
        return self.rng.choice([1, 1, 1, 2, 2, 3, 0xFFFF])

    def user_data(self) -> dict:
        rng = self.rng
        return {
            "user_data_128": rng.choice([0, 0, 0, 1, 2, (1 << 127) + 5, U128_MAX]),
            "user_data_64": rng.choice([0, 0, 0, 1, 2, 1 << 63, U64_MAX]),
            "user_data_32": rng.choice([0, 0, 0, 1, 2, U32_MAX]),
        }

    def amount(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            return rng.choice([0, 1, 2, 3, 5, 7, 10, 50, 100, 1000])
        if r < 0.8:
            return rng.randrange(1, 1 << 20)
        return rng.choice(
            [
                (1 << 64) - 1,
                1 << 64,
                (1 << 127) - 1,
                1 << 127,
                (1 << 127) + 1,
                U128_MAX - 1,
                U128_MAX,
                U128_MAX // 3,
                (1 << 126),
            ]
        )

    def timestamp_ref(self) -> tuple:
        """A timestamp near one this run returned: any of them, or one of the latest."""
        if self.chance(0.5):
            k = self.rng.randrange(self.results)
        else:
            k = max(0, self.results - self.rng.randint(1, 12))
        return ("ts", k, self.rng.choice([-1, 0, 0, 0, 1]))

    def linked(self) -> bool:
        return self.chance(self.link_rate)

    # accounts -------------------------------------------------------------------------

    def account_batch(self, size: int | None = None) -> Step:
        rng = self.rng
        size = size or self.batch_size()
        imported = self.results > 1 and self.chance(0.12)
        self.link_rate = rng.choice([0.0, 0.1, 0.3])
        events: list[dict] = []
        for index in range(size):
            if events and self.fault(0.04):
                event = dict(rng.choice(events))  # a duplicate within the batch
                if self.chance(0.5):
                    self.mutate_account(event)
            elif self.accounts and self.fault(0.1):
                event = dict(rng.choice(self.accounts))  # resubmission
                if self.chance(0.6):
                    self.mutate_account(event)
            else:
                event = self.fresh_account()
            event["flags"] &= ~(A_LINKED | A_IMPORTED)
            if self.linked():
                event["flags"] |= A_LINKED
            event["timestamp"] = 0
            if imported:
                event["flags"] |= A_IMPORTED
                event["timestamp"] = ("tsmax", 1 + 2 * index)
            events.append(event)
        if imported:
            self.perturb_imported(events, A_IMPORTED)
        elif self.fault(0.04):
            rng.choice(events)["timestamp"] = rng.choice([1, self.timestamp_ref()])
        self.finish_batch(events, A_LINKED)
        self.accounts.extend(events)
        self.good_accounts.extend(e for e in events if e.get("_good"))
        for e in events:
            e.pop("_good", None)
        self.results += len(events)
        return Step("create_accounts", events)

    def fresh_account(self) -> dict:
        rng = self.rng
        flags = 0
        for bit, p in ((A_DMNEC, 0.2), (A_CMNED, 0.15), (A_HISTORY, 0.5)):
            if self.chance(p):
                flags |= bit
        if self.fault(0.03):
            flags |= A_CLOSED
        if self.fault(0.02):
            flags |= 1 << rng.randrange(6, 16)  # padding
        account_id = 0 if self.fault(0.02) else U128_MAX if self.fault(0.015) else self.new_id()
        account = {
            "id": account_id,
            "debits_pending": 0,
            "debits_posted": 0,
            "credits_pending": 0,
            "credits_posted": 0,
            **self.user_data(),
            "ledger": self.ledger(),
            "code": self.code(),
            "flags": flags,
            "timestamp": 0,
        }
        if self.fault(0.03):
            account[
                rng.choice(["debits_pending", "debits_posted", "credits_pending", "credits_posted"])
            ] = rng.choice([1, U128_MAX])
        account["_good"] = (
            account_id not in (0, U128_MAX)
            and account["ledger"] != 0
            and account["code"] != 0
            and not flags & (A_CLOSED | 0xFFC0)
            and (flags & 6) != 6
            and not any(
                account[k]
                for k in ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
            )
        )
        return account

    def mutate_account(self, a: dict) -> None:
        rng = self.rng
        name = rng.choice(
            [
                "flags",
                "user_data_128",
                "user_data_64",
                "user_data_32",
                "ledger",
                "code",
                "debits_posted",
            ]
        )
        if name == "flags":
            a["flags"] ^= rng.choice([A_DMNEC, A_CMNED, A_HISTORY, A_CLOSED, 1 << 7])
        elif name == "ledger":
            a["ledger"] = LEDGER(1) if a["ledger"] == LEDGER(0) else LEDGER(0)
        elif name == "code":
            a["code"] = a["code"] % 0xFFFF + 1
        elif name == "debits_posted":
            a["debits_posted"] = 1
        else:
            a[name] = a[name] ^ 1

    # transfers ------------------------------------------------------------------------

    def account_ref(self, ledger: Any = None, other_than: Any = None) -> Any:
        rng = self.rng
        if self.fault(0.015):
            return 0
        if self.fault(0.01):
            return U128_MAX
        if self.fault(0.04) or not self.accounts:
            return self.unknown_id()
        pool = self.good_accounts if self.good_accounts and not self.fault(0.1) else self.accounts
        candidates = [
            a["id"]
            for a in pool
            if (ledger is None or a["ledger"] == ledger) and a["id"] != other_than
        ]
        if not candidates or self.fault(0.03):
            candidates = [a["id"] for a in self.accounts]
        return rng.choice(candidates)

    def account_spec(self, account_id: Any) -> dict | None:
        for a in reversed(self.accounts):
            if a["id"] == account_id:
                return a
        return None

    def transfer_batch(self) -> Step:
        rng = self.rng
        size = self.batch_size()
        imported = self.chance(0.1)
        self.link_rate = rng.choice([0.0, 0.05, 0.15, 0.4])
        events: list[dict] = []
        for _ in range(size):
            r = rng.random()
            if self.short_timeouts and r < 0.6:
                r = 0.5  # an expiry batch: mostly pending transfers
            if events and self.fault(0.03):
                event = dict(rng.choice(events))
                if self.chance(0.5):
                    self.mutate_transfer(event)
            elif self.transfers and self.fault(0.1):
                event = dict(rng.choice(self.transfers))  # resubmission
                if self.chance(0.6):
                    self.mutate_transfer(event)
            elif r < 0.4:
                event = self.single_phase()
            elif r < 0.62:
                event = self.pending()
            elif r < 0.9:
                event = self.post_or_void()
            else:
                event = self.random_flags_transfer()
            if event["timeout"] in (1, 2) and not self.short_timeouts:
                event["timeout"] = 3600  # a resubmission: must not expire before a sleep
            event["flags"] &= ~(T_LINKED | T_IMPORTED)
            if self.linked():
                event["flags"] |= T_LINKED
            event["timestamp"] = 0
            events.append(event)
        if imported:
            for index, event in enumerate(events):
                event["flags"] |= T_IMPORTED
                event["timestamp"] = ("tsmax", 1 + 2 * index)
                if not self.fault(0.1):
                    event["timeout"] = 0
            self.perturb_imported(events, T_IMPORTED)
            self.avoid_tigerbeetle_panic(events)
        elif self.fault(0.03):
            rng.choice(events)["timestamp"] = rng.choice([1, self.timestamp_ref()])
        self.finish_batch(events, T_LINKED)
        self.transfers.extend(events)
        self.results += len(events)
        return Step("create_transfers", events)

    def avoid_tigerbeetle_panic(self, events: list[dict]) -> None:
        """TigerBeetle 0.17.9 panics on an imported post/void of a pending transfer that has
        a timeout (`assert(!t.flags.imported)` in `post_or_void_pending_transfer`): point
        such events elsewhere (`run_step` also refuses to send them, in case)."""
        timed = {t["id"] for t in self.transfers + events if t["timeout"]}
        for event in events:
            if event["flags"] & (T_POST | T_VOID) and event["pending_id"] in timed:
                event["pending_id"] = self.unknown_id()

    def base_transfer(self, flags: int) -> dict:
        dr = self.account_ref()
        spec = self.account_spec(dr)
        ledger = spec["ledger"] if spec is not None else self.ledger()
        cr = dr if self.fault(0.02) else self.account_ref(ledger, other_than=dr)
        t = {
            "id": self.transfer_id(),
            "debit_account_id": dr,
            "credit_account_id": cr,
            "amount": self.amount(),
            "pending_id": 0,
            **self.user_data(),
            "timeout": 0,
            "ledger": ledger if not self.fault(0.03) else self.ledger(),
            "code": self.code(),
            "flags": flags,
            "timestamp": 0,
        }
        if self.fault(0.02):
            t["pending_id"] = self.rng.choice([1, self.transfer_ref()])
        if self.fault(0.02):
            t["timeout"] = self.rng.choice([7200, 3600])
        return t

    def transfer_id(self) -> Any:
        return 0 if self.fault(0.015) else U128_MAX if self.fault(0.01) else self.new_id()

    def transfer_ref(self) -> Any:
        if self.transfers and not self.fault(0.1):
            return self.rng.choice(self.transfers)["id"]
        return self.unknown_id()

    def single_phase(self) -> dict:
        flags = 0
        if self.chance(0.15):
            flags |= T_BAL_DR
        if self.chance(0.15):
            flags |= T_BAL_CR
        if self.fault(0.03):
            flags |= self.rng.choice([T_CLOSE_DR, T_CLOSE_CR])  # must be pending
        return self.base_transfer(flags)

    def pending(self) -> dict:
        flags = T_PENDING
        for bit, p in ((T_BAL_DR, 0.1), (T_BAL_CR, 0.1), (T_CLOSE_DR, 0.08), (T_CLOSE_CR, 0.08)):
            if self.chance(p):
                flags |= bit
        t = self.base_transfer(flags)
        if self.short_timeouts:
            t["timeout"] = self.rng.choice([1, 1, 2, 0, 3600])
        else:
            t["timeout"] = self.rng.choice([0, 0, 0, 0, 3600, U32_MAX])
        return t

    def post_or_void(self) -> dict:
        rng = self.rng
        flags = T_POST if self.chance(0.6) else T_VOID
        pendings = [t for t in self.transfers if t["flags"] & T_PENDING]
        expired = [t for t in pendings if t["timeout"] in (1, 2)]
        if expired and self.chance(0.4):
            pendings = expired
        if pendings and not self.fault(0.1):
            p = rng.choice(pendings[-12:])  # recent ones are more likely still pending
        elif self.transfers and self.chance(0.5):
            p = rng.choice(self.transfers)
        else:
            p = None
        t = {
            "id": self.transfer_id(),
            "debit_account_id": 0,
            "credit_account_id": 0,
            "amount": 0,
            "pending_id": p["id"] if p else self.unknown_id(),
            **self.user_data(),
            "timeout": 0,
            "ledger": 0,
            "code": 0,
            "flags": flags,
            "timestamp": 0,
        }
        if p is not None:
            amount = p["amount"]
            t["amount"] = rng.choice(
                [
                    0,
                    0,
                    amount,
                    amount,
                    amount // 2,
                    max(amount - 1, 0),
                    min(amount + 1, U128_MAX),
                    U128_MAX,
                    U128_MAX,
                    1,
                    min(rng.randrange(0, 2 * amount + 2), U128_MAX),
                ]
            )
            for name in ("debit_account_id", "credit_account_id", "ledger", "code"):
                if self.chance(0.15):
                    t[name] = p[name]
                elif self.fault(0.04):
                    t[name] = (
                        self.account_ref()
                        if name.endswith("_id")
                        else self.ledger()
                        if name == "ledger"
                        else self.code()
                    )
        if self.fault(0.02):
            t["pending_id"] = rng.choice([0, U128_MAX])
        if self.fault(0.02):
            t["pending_id"] = t["id"]
        if self.fault(0.02):
            t["timeout"] = 3600
        if self.fault(0.05):
            t["flags"] |= rng.choice(
                [T_PENDING, T_BAL_DR, T_BAL_CR, T_CLOSE_DR, T_CLOSE_CR, T_POST | T_VOID]
            )
        return t

    def random_flags_transfer(self) -> dict:
        rng = self.rng
        flags = 0
        for bit in (T_PENDING, T_POST, T_VOID, T_BAL_DR, T_BAL_CR, T_CLOSE_DR, T_CLOSE_CR):
            if self.chance(0.25):
                flags |= bit
        if self.chance(0.15):
            flags |= 1 << rng.randrange(9, 16)
        t = self.base_transfer(flags)
        if flags & (T_POST | T_VOID):
            t["pending_id"] = self.transfer_ref()
        if flags & T_PENDING and self.chance(0.5):
            t["timeout"] = rng.choice([0, 3600])
        return t

    def mutate_transfer(self, t: dict) -> None:
        rng = self.rng
        name = rng.choice(
            [
                "flags",
                "pending_id",
                "timeout",
                "debit_account_id",
                "credit_account_id",
                "amount",
                "amount",
                "user_data_128",
                "user_data_64",
                "user_data_32",
                "ledger",
                "code",
            ]
        )
        if name == "flags":
            t["flags"] ^= rng.choice([T_PENDING, T_BAL_DR, T_BAL_CR, T_POST, 1 << 10])
        elif name in ("debit_account_id", "credit_account_id"):
            t[name] = self.account_ref()
        elif name == "pending_id":
            t[name] = self.transfer_ref()
        elif name == "amount":
            t[name] = rng.choice([0, 1, U128_MAX, max(t["amount"] - 1, 0), t["amount"] + 1])
            t[name] = min(t[name], U128_MAX)
        elif name == "ledger":
            t[name] = rng.choice([0, LEDGER(0), LEDGER(1)])
        elif name == "code":
            t[name] = rng.choice([0, 1, 2])
        elif name == "timeout":
            t[name] = rng.choice([0, 3600, 7200])
        else:
            t[name] ^= 1

    # batch shapes ---------------------------------------------------------------------

    def batch_size(self) -> int:
        r = self.rng.random()
        if r < 0.25:
            return 1
        if r < 0.8:
            return self.rng.randint(2, 8)
        return self.rng.randint(9, 30)

    def perturb_imported(self, events: list[dict], imported_flag: int) -> None:
        """Break an imported batch in one of the ways TigerBeetle checks."""
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return
        event = rng.choice(events)
        if r < 0.5:
            event["flags"] ^= imported_flag  # expected / not expected
        elif r < 0.57:
            event["timestamp"] = rng.choice([0, TIMESTAMP_MAX + 1, U64_MAX])  # out of range
        elif r < 0.64:
            event["timestamp"] = ("tsmax", 10**15)  # in the future: must not advance
        elif r < 0.85:
            event["timestamp"] = self.timestamp_ref()  # into the past: regress or collide
        else:
            index = events.index(event)
            event["timestamp"] = ("tsmax", 2 * index)  # equal to/before the previous one

    def finish_batch(self, events: list[dict], linked_flag: int) -> None:
        """Linked chains: mostly closed, sometimes open at the end of the batch."""
        if events[-1]["flags"] & linked_flag and self.chance(0.7):
            events[-1]["flags"] &= ~linked_flag

    # reads ----------------------------------------------------------------------------

    def lookup(self, op: str, pool: list[dict]) -> Step:
        ids = [x["id"] for x in self.rng.sample(pool, min(len(pool), 12))]
        ids += self.rng.choice([[], [], [0], [U128_MAX], [self.unknown_id()]])
        if ids and self.chance(0.2):
            ids.append(ids[0])
        self.rng.shuffle(ids)
        return Step(op, ids)

    def timestamp_bounds(self) -> tuple[Any, Any]:
        rng = self.rng
        if self.chance(0.5):
            return 0, 0
        low = self.timestamp_ref() if self.chance(0.6) else 0
        high = self.timestamp_ref() if self.chance(0.6) else 0
        if self.chance(0.03):
            high = rng.choice([TIMESTAMP_MAX, TIMESTAMP_MAX + 1])
        if self.chance(0.03):
            low = rng.choice([TIMESTAMP_MAX + 1, TIMESTAMP_MAX])
        return low, high

    def limit(self) -> int:
        return self.rng.choice([1, 2, 3, 5, 10, 100, 8189, 0] if self.chance(0.3) else [100])

    def account_filter(self, op: str) -> Step:
        rng = self.rng
        flags = rng.choice([1, 2, 3, 3, 3])
        if self.chance(0.3):
            flags |= 4
        if self.chance(0.04):
            flags = rng.choice([0, 4, 8, 1 << 20])
        low, high = self.timestamp_bounds()
        pool = self.good_accounts or self.accounts
        if op == "get_account_balances" and self.chance(0.8):
            pool = [a for a in pool if a["flags"] & A_HISTORY] or pool
        ids = [a["id"] for a in pool]
        if self.transfers and self.chance(0.7):  # accounts that some transfer names
            used = {t[k] for t in self.transfers for k in ("debit_account_id", "credit_account_id")}
            ids = [i for i in ids if i in used] or ids
        account_id = (
            rng.choice(ids)
            if ids and self.chance(0.95)
            else rng.choice([0, U128_MAX, self.unknown_id()])
        )
        narrow = self.chance(0.3)
        f = {
            "account_id": account_id,
            "user_data_128": rng.choice([0, 1, 2]) if narrow else 0,
            "user_data_64": rng.choice([0, 1, 1 << 63]) if narrow else 0,
            "user_data_32": rng.choice([0, 1, U32_MAX]) if narrow else 0,
            "code": rng.choice([0, 1, 2]) if narrow else 0,
            "timestamp_min": low,
            "timestamp_max": high,
            "limit": self.limit(),
            "flags": flags,
        }
        return Step(op, f)

    def query_filter(self, op: str) -> Step:
        rng = self.rng
        low, high = self.timestamp_bounds()
        narrow = self.chance(0.4)
        f = {
            "user_data_128": rng.choice([0, 0, 1, 2, (1 << 127) + 5]) if narrow else 0,
            "user_data_64": rng.choice([0, 0, 1, 1 << 63, U64_MAX]) if narrow else 0,
            "user_data_32": rng.choice([0, 0, 1, U32_MAX]) if narrow else 0,
            "ledger": rng.choice([LEDGER(0), LEDGER(0), LEDGER(1), 0]),
            "code": rng.choice([0, 0, 1, 2, 0xFFFF]) if narrow else 0,
            "timestamp_min": low,
            "timestamp_max": high,
            "limit": self.limit(),
            "flags": rng.choice([0, 0, 1]) if not self.chance(0.03) else rng.choice([2, 1 << 9]),
        }
        return Step(op, f)

    def read(self) -> Step:
        r = self.rng.random()
        if r < 0.15:
            return self.lookup("lookup_accounts", self.accounts)
        if r < 0.3:
            return self.lookup("lookup_transfers", self.transfers)
        if r < 0.52:
            return self.account_filter("get_account_transfers")
        if r < 0.74:
            return self.account_filter("get_account_balances")
        if r < 0.87:
            return self.query_filter("query_transfers")
        return self.query_filter("query_accounts")

    # program --------------------------------------------------------------------------

    def change_events(self) -> Step:
        low, high = self.timestamp_bounds()
        limit = self.rng.choice([1, 2, 3, 5, 10, 2730, 0])
        return Step(
            "get_change_events", {"timestamp_min": low, "timestamp_max": high, "limit": limit}
        )

    def program(self, steps: int | None = None) -> Program:
        rng = self.rng
        id_class = rng.choice(ID_CLASSES)
        if steps is not None:
            count = steps
        else:
            count = rng.randint(40, 90) if self.chance(0.08) else rng.randint(6, 22)
        out = [self.account_batch(rng.randint(3, 10))]
        if self.chance(0.6):
            out.append(self.account_batch())
        while len(out) < count:
            r = rng.random()
            if r < 0.12:
                out.append(self.account_batch())
            elif r < 0.6:
                if self.expiry and self.chance(0.3):
                    self.expiry = False  # once per program: it takes seconds
                    self.short_timeouts = True
                    out.append(self.transfer_batch())
                    self.short_timeouts = False
                    out.append(Step("sleep", 2.5))
                else:
                    out.append(self.transfer_batch())
            elif r < 0.63:
                out.append(Step("reopen", rng.choice(["clean", "crash"])))
            elif r < 0.67:
                out.append(self.change_events())
            else:
                out.append(self.read())
        out.append(Step("lookup_accounts", [a["id"] for a in self.accounts][:200]))
        out.append(Step("lookup_transfers", [t["id"] for t in self.transfers][:200]))
        return Program(self.seed, id_class, out)


def generate(seed: int) -> Program:
    return Generator(seed).program()


# -- running a program ----------------------------------------------------------------------

ABORTED = "aborted: would crash TigerBeetle"
PROBE = tb.Account(id=0, ledger=1, code=1)  # ID_MUST_NOT_BE_ZERO: a timestamp, no effect.


def _record(obj: Any) -> dict:
    return {f.name: int(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _create_records(objs: list[Any], results: list[Any], imported_flag: int) -> list[dict]:
    """Create results, with what ranks alone would not show: `ts` says whether a timestamp
    is exactly the requested one (an imported event, created -- or created, then rolled back
    with its chain), an existing object's (exists), or the event's own slot in the batch
    (`timestamp - count + index + 1`: the same slot base for every such event)."""
    kinds: list[str | None] = []
    for obj, result in zip(objs, results, strict=True):
        if result.status.name == "EXISTS":
            kinds.append("existing")
        elif (
            obj.flags & imported_flag
            and result.timestamp == obj.timestamp
            and (result.status.name in ("CREATED", "LINKED_EVENT_FAILED"))
        ):
            kinds.append("requested")
        else:
            kinds.append(None)
    pairs = enumerate(zip(results, kinds, strict=True))
    bases = [r.timestamp - i for i, (r, k) in pairs if k is None]
    base = max(set(bases), key=bases.count) if bases else 0
    records = []
    for index, (result, kind) in enumerate(zip(results, kinds, strict=True)):
        record = _record(result)
        if kind is None:
            delta = result.timestamp - index - base
            kind = "slot" if delta == 0 else f"slot{delta:+d}"
        record["ts"] = kind
        records.append(record)
    return records


def _foreign(records: list[dict], ctx: RunContext) -> bool:
    return any(r["ledger"] not in ctx.ledgers for r in records)


class Backend:
    """A ledger under test; `reopen()` closes and reopens it (a no-op for a server)."""

    def __init__(self, ledger: sovr.ledger.Ledger, directory: str | None = None) -> None:
        self.ledger = ledger
        self.directory = directory

    @classmethod
    def embedded(cls, directory: str) -> Backend:
        return cls(sovr.ledger.connect("embedded://" + directory), directory)

    def reopen(self, how: str = "clean") -> None:
        """Reopen the embedded ledger: after `close()`, or ("crash") as if the process had
        died after its last call -- the store is closed without the account checkpoint
        that `close()` writes, so reopening replays the balance changes since the last one."""
        if self.directory is None:
            return
        store = getattr(self.ledger, "_store", None)
        if how == "crash" and store is not None:
            self.ledger._closed = True  # type: ignore[attr-defined]
            store.close()
        else:
            self.ledger.close()
        self.ledger = sovr.ledger.connect("embedded://" + self.directory)

    def close(self) -> None:
        if self.directory is not None:
            self.ledger.close()


def run_programs(
    backends: list[Backend], program: Program, ids: tuple[int, int], ledgers: tuple[int, ...]
) -> list[list[Any]]:
    """Run `program` on each backend, in lockstep (step i everywhere, then step i + 1).

    Returns, per backend, one output per step (raw timestamps): the probe's first, the
    program's change events last. `sleep` sleeps once for all; `reopen` reopens the
    embedded ledger (the server has nothing to reopen).
    """
    contexts = [RunContext(ids[0], ids[1], ledgers) for _ in backends]
    outputs: list[list[Any]] = [[] for _ in backends]
    for backend, ctx, out in zip(backends, contexts, outputs, strict=True):
        (probe,) = backend.ledger.create_accounts([PROBE])
        ctx.observed.append(probe.timestamp)
        out.append([_record(probe)])
    for step in program.steps:
        if step.op == "sleep":
            time.sleep(step.args)
        for backend, ctx, out in zip(backends, contexts, outputs, strict=True):
            if out[-1] == ABORTED:
                continue
            if step.op == "sleep":
                out.append(None)
            elif step.op == "reopen":
                backend.reopen(step.args)
                out.append(None)
            else:
                try:
                    out.append(run_step(backend.ledger, step, ctx))
                except Unsafe:
                    out.append(ABORTED)
    for backend, ctx, out in zip(backends, contexts, outputs, strict=True):
        if out[-1] != ABORTED:
            out.append(change_events(backend.ledger, ctx))
    return outputs


def run_step(ledger: sovr.ledger.Ledger, step: Step, ctx: RunContext) -> Any:
    r = ctx.resolve
    op = step.op
    if op == "create_accounts":
        objs = [tb.Account(**{k: r(v) for k, v in e.items()}) for e in step.args]
        for obj in objs:
            obj.flags = AF(obj.flags)
        results = ledger.create_accounts(objs)
        ctx.observed.extend(x.timestamp for x in results)
        return _create_records(objs, results, A_IMPORTED)
    if op == "create_transfers":
        objs = [tb.Transfer(**{k: r(v) for k, v in e.items()}) for e in step.args]
        for obj in objs:
            obj.flags = TF(obj.flags)
        refuse_tigerbeetle_panic(ledger, objs)
        results = ledger.create_transfers(objs)
        ctx.observed.extend(x.timestamp for x in results)
        return _create_records(objs, results, T_IMPORTED)
    if op == "lookup_accounts":
        return [_record(x) for x in ledger.lookup_accounts([r(i) for i in step.args])]
    if op == "lookup_transfers":
        return [_record(x) for x in ledger.lookup_transfers([r(i) for i in step.args])]
    fields = {k: r(v) for k, v in step.args.items()}
    if op == "get_change_events":
        fields["timestamp_min"] = max(fields["timestamp_min"], ctx.observed[0])
        events = [_record(e) for e in ledger.get_change_events(**fields)]
        if _foreign(events, ctx):
            return "skipped: foreign events"
        return events
    if op in ("get_account_transfers", "get_account_balances"):
        fields["flags"] = tb.AccountFilterFlags(fields["flags"])
        result = getattr(ledger, op)(tb.AccountFilter(**fields))
        return [_record(x) for x in result]
    if op in ("query_accounts", "query_transfers"):
        if fields["ledger"] == 0 and fields["timestamp_min"] < ctx.observed[0]:
            fields["timestamp_min"] = ctx.observed[0]  # Other programs' objects are older.
        fields["flags"] = tb.QueryFilterFlags(fields["flags"])
        records = [_record(x) for x in getattr(ledger, op)(tb.QueryFilter(**fields))]
        if fields["ledger"] == 0 and _foreign(records, ctx):
            return "skipped: foreign objects"
        return records
    raise ValueError(op)


class Unsafe(Exception):
    """The step would crash a real TigerBeetle; the program is cut short before it."""


def refuse_tigerbeetle_panic(ledger: sovr.ledger.Ledger, transfers: list[tb.Transfer]) -> None:
    """Raise `Unsafe` for an imported batch posting or voiding a pending transfer with a timeout.

    TigerBeetle 0.17.9 reaches `assert(!t.flags.imported)` in `post_or_void_pending_transfer`
    (src/state_machine.zig, `if (expires_at) |timestamp_expiry|`) and the replica panics.
    """
    if not transfers or not transfers[0].flags & T_IMPORTED:
        return
    pending_ids = [
        t.pending_id
        for t in transfers
        if t.flags & T_IMPORTED and t.flags & (T_POST | T_VOID) and t.pending_id
    ]
    if pending_ids and any(p.timeout for p in ledger.lookup_transfers(pending_ids)):
        raise Unsafe


def change_events(ledger: sovr.ledger.Ledger, ctx: RunContext) -> list[dict]:
    """The change events of the program's ledgers, from its first timestamp on."""
    events: list[dict] = []
    cursor = min(ctx.observed)
    limit = CHANGE_EVENTS_LIMIT_MAX
    while True:
        page = ledger.get_change_events(cursor, 0, limit)
        events.extend(_record(e) for e in page if e.ledger in ctx.ledgers)
        if len(page) < limit:
            return events
        cursor = page[-1].timestamp + 1


# -- comparing ------------------------------------------------------------------------------


def normalize(outputs: list[Any]) -> list[Any]:
    """Replace every timestamp by its rank among all the timestamps in `outputs`."""
    seen: set[int] = set()

    def collect(value: Any) -> None:
        if isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k in TIMESTAMP_KEYS:
                    seen.add(v)

    collect(outputs)
    rank = {ts: i for i, ts in enumerate(sorted(seen))}

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: (f"t{rank[v]}" if k in TIMESTAMP_KEYS else v) for k, v in value.items()}
        return value

    return convert(outputs)


def _status_names(op: str, records: Any) -> Any:
    if op not in ("create_accounts", "create_transfers") or not isinstance(records, list):
        return records
    enum = tb.CreateAccountStatus if op == "create_accounts" else tb.CreateTransferStatus
    return [{**r, "status": enum(r["status"]).name} for r in records]


@dataclass
class Difference:
    step: int  # index into program.steps; -1 = probe, len(steps) = change events
    op: str
    embedded: Any
    tigerbeetle: Any

    def signature(self) -> str:
        """What kind of difference this is, independent of ids and ranks (for minimizing)."""
        e, t = self.embedded, self.tigerbeetle
        if isinstance(e, list) and isinstance(t, list):
            if len(e) != len(t):
                return f"{self.op}: {len(e)} vs {len(t)} results"
            for a, b in zip(e, t, strict=True):
                if a != b:
                    keys = sorted(k for k in a if a.get(k) != b.get(k))
                    if "status" in keys:
                        return f"{self.op}: status {a['status']} vs {b['status']}"
                    return f"{self.op}: fields {keys}"
        return f"{self.op}: differ"

    def __str__(self) -> str:
        lines = [f"step {self.step} ({self.op}):"]
        e, t = self.embedded, self.tigerbeetle
        if isinstance(e, list) and isinstance(t, list):
            for i in range(max(len(e), len(t))):
                a = e[i] if i < len(e) else None
                b = t[i] if i < len(t) else None
                if a != b:
                    if isinstance(a, dict) and isinstance(b, dict):
                        ours = {k: v for k, v in a.items() if b.get(k) != v}
                        theirs = {k: b.get(k) for k in ours}
                        lines.append(f"  [{i}] embedded {ours} != tigerbeetle {theirs}")
                    else:
                        lines.append(f"  [{i}] embedded {a} != tigerbeetle {b}")
        else:
            lines.append(f"  embedded {e!r} != tigerbeetle {t!r}")
        return "\n".join(lines)


def compare(program: Program, embedded: list[Any], real: list[Any]) -> list[Difference]:
    ops = ["probe"] + [s.op for s in program.steps] + ["get_change_events"]
    e_norm, t_norm = normalize(embedded), normalize(real)
    diffs = []
    for index, (op, e, t) in enumerate(zip(ops, e_norm, t_norm, strict=False)):
        if e == ABORTED or t == ABORTED:
            if e != t:
                diffs.append(Difference(index - 1, op, e, t))
            break
        if isinstance(e, str) or isinstance(t, str):
            continue  # skipped on one side
        e, t = _status_names(op, e), _status_names(op, t)
        if e != t:
            diffs.append(Difference(index - 1, op, e, t))
    return diffs


def fresh_run_values(program: Program) -> tuple[tuple[int, int], tuple[int, ...]]:
    rng = random.SystemRandom()
    ids = id_layout(program.id_class, rng)
    ledgers = (rng.randrange(1, U32_MAX), rng.randrange(1, U32_MAX))
    while ledgers[1] == ledgers[0]:
        ledgers = (ledgers[0], rng.randrange(1, U32_MAX))
    return ids, ledgers


def differences(
    program: Program, real: sovr.ledger.Ledger, directory: str
) -> tuple[list[Difference], list[Any], list[Any]]:
    """Run `program` on a fresh embedded ledger in `directory` and on `real`; compare."""
    ids, ledgers = fresh_run_values(program)
    embedded = Backend.embedded(directory)
    try:
        e_out, t_out = run_programs([embedded, Backend(real)], program, ids, ledgers)
    finally:
        embedded.close()
    return compare(program, e_out, t_out), e_out, t_out


def describe(program: Program, diffs: list[Difference], limit: int = 3) -> str:
    lines = [f"seed {program.seed}: {len(diffs)} differing step(s)"]
    for d in diffs[:limit]:
        step = program.steps[d.step] if 0 <= d.step < len(program.steps) else None
        if step is not None:
            lines.append(f"  {step!r}"[:2000])
        lines.append(str(d))
    return "\n".join(lines)


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture
def real_ledger(tigerbeetle_ledger: sovr.ledger.Ledger) -> sovr.ledger.Ledger:
    """The session's client of the real replica (tests/ledger/conftest.py); skips without one."""
    return tigerbeetle_ledger


def _seeds() -> list[int]:
    count = int(os.environ.get("SOVR_DIFF_EXAMPLES", DEFAULT_EXAMPLES))
    first = os.environ.get("SOVR_DIFF_SEED")
    start = int(first) if first else random.randrange(1 << 30)
    return list(range(start, start + count))


def test_random_programs_match_tigerbeetle(real_ledger, tmp_path) -> None:
    failures = []
    for n, seed in enumerate(_seeds()):
        program = generate(seed)
        directory = tmp_path / f"p{n}"
        diffs, _, _ = differences(program, real_ledger, str(directory))
        if diffs:
            failures.append(describe(program, diffs))
        shutil.rmtree(directory, ignore_errors=True)
    assert not failures, (
        f"{len(failures)} program(s) differ (rerun one with SOVR_DIFF_SEED=<seed> "
        "SOVR_DIFF_EXAMPLES=1, or minimize it: python tests/ledger/test_differential.py "
        "minimize --seed <seed>):\n\n" + "\n\n".join(failures)
    )


def _transfer(n: int, dr: int, cr: int, amount: int, **fields: Any) -> dict:
    return {
        "id": ID(n),
        "debit_account_id": ID(dr),
        "credit_account_id": ID(cr),
        "amount": amount,
        "ledger": LEDGER(0),
        "code": 1,
        **fields,
    }


EXPIRY_PROGRAM_STEPS = [
    Step(
        "create_accounts",
        [
            {"id": ID(1), "ledger": LEDGER(0), "code": 1, "flags": A_HISTORY},
            {"id": ID(2), "ledger": LEDGER(0), "code": 1, "flags": A_DMNEC | A_HISTORY},
            {"id": ID(3), "ledger": LEDGER(0), "code": 1, "flags": 0},
        ],
    ),
    Step(
        "create_transfers",
        [
            _transfer(10, 1, 2, 5),
            _transfer(11, 2, 1, 3, flags=T_PENDING, timeout=1, user_data_64=9),
            _transfer(12, 3, 1, 7, flags=T_PENDING | T_CLOSE_DR, timeout=1),
            _transfer(13, 1, 3, 0, flags=T_PENDING, timeout=1),
            _transfer(14, 1, 2, 4, flags=T_PENDING, timeout=1),
            {"id": ID(15), "pending_id": ID(14), "amount": 2, "flags": T_POST},
            _transfer(16, 1, 2, 1, flags=T_PENDING, timeout=3600),
            _transfer(17, 1, 2, 2, flags=T_PENDING | T_CLOSE_CR, timeout=2),
        ],
    ),
    Step("sleep", 3.0),
    Step(
        "create_transfers",
        [
            {"id": ID(20), "pending_id": ID(11), "flags": T_POST, "amount": U128_MAX},
            {"id": ID(21), "pending_id": ID(12), "flags": T_VOID},
            _transfer(22, 3, 1, 1),
            {"id": ID(23), "pending_id": ID(16), "flags": T_POST, "amount": U128_MAX},
            {"id": ID(24), "pending_id": ID(17), "flags": T_VOID},
            {
                "id": ID(11),
                "debit_account_id": ID(2),
                "credit_account_id": ID(1),
                "amount": 3,
                "flags": T_PENDING,
                "timeout": 1,
                "user_data_64": 9,
                "ledger": LEDGER(0),
                "code": 1,
            },
        ],
    ),
    Step("lookup_accounts", [ID(1), ID(2), ID(3)]),
    Step("lookup_transfers", [ID(n) for n in range(10, 25)]),
    Step("get_account_balances", {"account_id": ID(1), "flags": 3, "limit": 100}),
    Step("get_account_balances", {"account_id": ID(2), "flags": 3, "limit": 100}),
    Step("get_account_transfers", {"account_id": ID(1), "flags": 3, "limit": 100}),
]


def _complete(step: Step) -> Step:
    """Fill the omitted fields of a hand-written step with zeros."""
    if step.op == "create_accounts":
        return Step(step.op, [{**dict.fromkeys(ACCOUNT_FIELDS, 0), **e} for e in step.args])
    if step.op == "create_transfers":
        return Step(step.op, [{**dict.fromkeys(TRANSFER_FIELDS, 0), **e} for e in step.args])
    if step.op in ("get_account_transfers", "get_account_balances"):
        names = [f.name for f in dataclasses.fields(tb.AccountFilter)]
        return Step(step.op, {**dict.fromkeys(names, 0), **step.args})
    if step.op in ("query_accounts", "query_transfers"):
        names = [f.name for f in dataclasses.fields(tb.QueryFilter)]
        return Step(step.op, {**dict.fromkeys(names, 0), **step.args})
    return step


def hand_written(steps: list[Step], id_class: str = "small") -> Program:
    return Program(-1, id_class, [_complete(s) for s in steps])


def test_expiry_matches_tigerbeetle(real_ledger, tmp_path) -> None:
    program = hand_written(EXPIRY_PROGRAM_STEPS)
    diffs, _, _ = differences(program, real_ledger, str(tmp_path / "ledger"))
    assert not diffs, describe(program, diffs, limit=10)


def _account(n: int, flags: int = 0, **fields: Any) -> dict:
    return {"id": ID(n), "ledger": LEDGER(0), "code": 1, "flags": flags, **fields}


def _post(n: int, pending: int, flags: int, amount: int = 0, **fields: Any) -> dict:
    return {"id": ID(n), "pending_id": ID(pending), "flags": flags, "amount": amount, **fields}


# Corners the generator reaches only rarely, pinned as hand-written programs.
SCENARIOS = {
    "imported chain rolled back, its timestamps reused": [
        Step("create_accounts", [_account(1), _account(2)]),
        Step(
            "create_accounts",
            [
                _account(3, A_IMPORTED | A_LINKED, timestamp=("tsmax", 5)),
                _account(4, A_IMPORTED, timestamp=("tsmax", 6), ledger=0),
                _account(5, A_IMPORTED, timestamp=("tsmax", 5)),
            ],
        ),
        Step(
            "create_transfers",
            [
                _transfer(10, 1, 2, 5, flags=T_IMPORTED | T_LINKED, timestamp=("tsmax", 5)),
                _transfer(11, 1, 2, 5, flags=T_IMPORTED, timestamp=("tsmax", 6), ledger=0),
                _transfer(12, 1, 2, 5, flags=T_IMPORTED, timestamp=("tsmax", 5)),
            ],
        ),
    ],
    "imported pending posted and voided in its own batch": [
        Step("create_accounts", [_account(1, A_HISTORY), _account(2)]),
        Step(
            "create_transfers",
            [
                _transfer(
                    10, 1, 2, 5, flags=T_IMPORTED | T_PENDING | T_CLOSE_DR, timestamp=("tsmax", 1)
                ),
                _post(11, 10, T_IMPORTED | T_POST, 3, timestamp=("tsmax", 2)),
                _post(12, 10, T_IMPORTED | T_VOID, timestamp=("tsmax", 3)),
                _transfer(13, 1, 2, 5, flags=T_IMPORTED | T_PENDING, timestamp=("tsmax", 4)),
                _post(14, 13, T_IMPORTED | T_POST, U128_MAX, timestamp=("tsmax", 4)),
                _post(15, 13, T_IMPORTED | T_POST, U128_MAX, timestamp=("tsmax", 5)),
            ],
        ),
        Step("get_account_balances", {"account_id": ID(1), "flags": 3, "limit": 10}),
    ],
    "imported timestamps against existing accounts and transfers": [
        Step("create_accounts", [_account(1), _account(2)]),
        Step("create_transfers", [_transfer(10, 1, 2, 5)]),
        Step("create_accounts", [_account(3, A_IMPORTED, timestamp=("ts", 3, 0))]),
        Step("create_accounts", [_account(4, A_IMPORTED, timestamp=("ts", 3, 1))]),
        Step(
            "create_transfers", [_transfer(11, 1, 2, 5, flags=T_IMPORTED, timestamp=("ts", 5, 0))]
        ),
        Step(
            "create_transfers", [_transfer(12, 1, 2, 5, flags=T_IMPORTED, timestamp=("tsmax", 1))]
        ),
        Step("create_accounts", [_account(5, A_IMPORTED, timestamp=("ts", 6, 0))]),
        Step("create_accounts", [_account(6)]),
        Step(
            "create_transfers", [_transfer(13, 6, 1, 5, flags=T_IMPORTED, timestamp=("ts", 7, 1))]
        ),
        Step(
            "create_transfers", [_transfer(14, 1, 6, 5, flags=T_IMPORTED, timestamp=("ts", 7, 1))]
        ),
    ],
    "balancing transfers and their resubmission": [
        Step("create_accounts", [_account(1, A_DMNEC | A_HISTORY), _account(2), _account(3)]),
        Step(
            "create_transfers",
            [
                _transfer(10, 2, 1, 30),
                _transfer(11, 1, 3, 100, flags=T_BAL_DR),
                _transfer(12, 1, 3, 100, flags=T_BAL_DR | T_PENDING),
            ],
        ),
        Step(
            "create_transfers",
            [_transfer(11, 1, 3, amount, flags=T_BAL_DR) for amount in (100, 30, 29, U128_MAX, 0)],
        ),
        Step(
            "create_transfers",
            [
                _transfer(13, 3, 2, 5, flags=T_BAL_CR),
                _transfer(14, 3, 2, 0, flags=T_BAL_CR | T_BAL_DR),
                _transfer(15, 2, 3, 7, flags=T_BAL_CR | T_BAL_DR),
            ],
        ),
        Step("lookup_transfers", [ID(n) for n in range(10, 16)]),
        Step("get_account_balances", {"account_id": ID(1), "flags": 3, "limit": 10}),
    ],
    "post and void resubmissions": [
        Step("create_accounts", [_account(1), _account(2)]),
        Step(
            "create_transfers",
            [
                _transfer(
                    10, 1, 2, 50, flags=T_PENDING, user_data_128=7, user_data_64=8, user_data_32=9
                ),
                _transfer(11, 1, 2, 50, flags=T_PENDING, user_data_64=5),
                _transfer(12, 1, 2, 50, flags=T_PENDING),
            ],
        ),
        Step(
            "create_transfers",
            [
                _post(20, 10, T_POST, U128_MAX),
                _post(21, 11, T_VOID, 0, user_data_64=6),
                _post(22, 12, T_POST, 20, user_data_128=1),
            ],
        ),
        Step(
            "create_transfers",
            [
                _post(20, 10, T_POST, U128_MAX),
                _post(20, 10, T_POST, 50),
                _post(20, 10, T_POST, 0),
                _post(20, 10, T_POST, U128_MAX, user_data_128=7),
                _post(20, 10, T_POST, U128_MAX, user_data_128=6),
                _post(20, 10, T_POST, U128_MAX, debit_account_id=ID(1)),
                _post(20, 10, T_POST, U128_MAX, debit_account_id=ID(2)),
                _post(20, 10, T_POST, U128_MAX, ledger=LEDGER(0), code=1),
                _post(20, 10, T_POST, U128_MAX, code=2),
                _post(20, 10, T_POST, U128_MAX, ledger=LEDGER(1)),
                _post(21, 11, T_VOID, 0),
                _post(21, 11, T_VOID, 50),
                _post(21, 11, T_VOID, 49),
                _post(21, 11, T_VOID, 0, user_data_64=6),
                _post(21, 11, T_VOID, 0, user_data_64=5),
                _post(22, 12, T_POST, 20),
                _post(22, 12, T_POST, U128_MAX),
                _post(22, 12, T_POST, 20, user_data_128=1),
                _post(22, 12, T_POST, 20, user_data_128=0),
                _post(22, 12, T_VOID, 20),
                _post(22, 11, T_POST, 20),
                _post(22, 12, T_POST, 20, timeout=5),
            ],
        ),
        Step(
            "create_transfers",
            [_post(23, 12, T_POST, 1), _post(24, 11, T_POST, 1), _post(25, 10, T_VOID)],
        ),
        Step("lookup_transfers", [ID(n) for n in range(10, 26)]),
    ],
    "closing and reopening accounts": [
        Step("create_accounts", [_account(1, A_HISTORY), _account(2), _account(3)]),
        Step(
            "create_transfers",
            [
                _transfer(10, 1, 2, 0, flags=T_PENDING | T_CLOSE_DR),
                _transfer(11, 1, 2, 5, flags=T_PENDING | T_CLOSE_DR),
                _transfer(12, 3, 2, 5, flags=T_PENDING),
            ],
        ),
        Step(
            "create_transfers",
            [
                _transfer(13, 2, 1, 1),
                _post(14, 10, T_POST),
                _post(15, 12, T_POST, 2),
                _post(16, 12, T_VOID),
            ],
        ),
        Step("lookup_accounts", [ID(1), ID(2), ID(3)]),
        Step(
            "create_transfers",
            [
                _post(17, 10, T_VOID),
                _transfer(18, 2, 1, 1),
                _transfer(19, 1, 2, 3, flags=T_PENDING | T_CLOSE_CR | T_CLOSE_DR),
                _transfer(20, 3, 2, 1),
            ],
        ),
        Step("lookup_accounts", [ID(1), ID(2), ID(3)]),
        Step(
            "create_transfers",
            [
                _post(21, 19, T_VOID),
                _transfer(22, 1, 2, 1),
                _transfer(23, 2, 3, 1, flags=T_PENDING | T_CLOSE_CR | T_LINKED),
                _transfer(24, 3, 1, 1),
            ],
        ),
        Step("lookup_accounts", [ID(1), ID(2), ID(3)]),
        Step("get_account_balances", {"account_id": ID(1), "flags": 3, "limit": 10}),
    ],
    "overflow boundaries": [
        Step("create_accounts", [_account(1), _account(2), _account(3)]),
        Step(
            "create_transfers",
            [
                _transfer(10, 1, 2, U128_MAX),
                _transfer(11, 1, 2, 0),
                _transfer(12, 1, 2, 1),
                _transfer(13, 3, 2, 1),
                _transfer(14, 1, 3, 0, flags=T_PENDING),
                _transfer(15, 1, 3, 1, flags=T_PENDING),
                _transfer(16, 3, 1, U128_MAX),
                _transfer(17, 2, 3, U128_MAX, flags=T_PENDING),
                _transfer(18, 2, 3, 1, flags=T_PENDING),
                _transfer(19, 3, 2, 1, flags=T_PENDING),
            ],
        ),
        Step("lookup_accounts", [ID(1), ID(2), ID(3)]),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_tigerbeetle(real_ledger, tmp_path, name) -> None:
    program = hand_written(SCENARIOS[name])
    diffs, _, _ = differences(program, real_ledger, str(tmp_path / "ledger"))
    assert not diffs, describe(program, diffs, limit=10)


def _first_attempts_past_expiry(ledger: sovr.ledger.Ledger) -> list[str] | None:
    """Statuses of the first two debits timestamped at or after a pending transfer's expiry,
    on an account whose only credit the pending transfer holds; None when the machine was
    too loaded to keep the requests under 50 ms apart (then an idle pulse may interleave)."""
    ledger_id = random.randrange(1, U32_MAX)
    limited, other = tb.id(), tb.id()

    def transfer(debit: int, credit: int, **fields: Any) -> tb.Transfer:
        return tb.Transfer(
            id=tb.id(),
            debit_account_id=debit,
            credit_account_id=credit,
            amount=10,
            ledger=ledger_id,
            code=1,
            **fields,
        )

    results = ledger.create_accounts(
        [
            tb.Account(
                id=limited,
                ledger=ledger_id,
                code=1,
                flags=tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
            ),
            tb.Account(id=other, ledger=ledger_id, code=1),
        ]
    )
    assert [r.status.name for r in results] == ["CREATED"] * 2
    (funded,) = ledger.create_transfers([transfer(other, limited)])
    (pending,) = ledger.create_transfers(
        [transfer(limited, other, flags=tb.TransferFlags.PENDING, timeout=1)]
    )
    assert funded.status.name == pending.status.name == "CREATED"
    expires_at = pending.timestamp + 10**9
    statuses = []
    deadline = time.monotonic() + 10
    previous = time.monotonic()
    while len(statuses) < 2 and time.monotonic() < deadline:
        # One request every few milliseconds: a TigerBeetle replica never goes idle long
        # enough (100 ms) for its timer to pulse; expiry comes from the pulse injected after
        # the first operation whose timestamp reaches the expiry.
        (result,) = ledger.create_transfers([transfer(limited, other)])
        if result.timestamp >= expires_at:
            statuses.append(result.status.name)
        time.sleep(0.003)
        if time.monotonic() - previous > 0.05:
            return None
        previous = time.monotonic()
    return statuses


def test_expiry_takes_effect_like_tigerbeetle(real_ledger, tmp_path) -> None:
    """TigerBeetle expires pending transfers in a `pulse` operation only (state_machine.zig,
    `commit`: `.pulse => self.execute_expire_pending_transfers(timestamp)`), which the
    primary prepares after committing an operation whose timestamp reached the next expiry
    (vsr/replica.zig, `commit_execute`: `pulse_needed(prepare_timestamp)`), or after 100 ms
    without any operation (`on_pulse_timeout`). So the first operation timestamped past the
    deadline still sees the amount held, and the expiry's change event comes after it."""
    for attempt in range(5):
        with sovr.ledger.connect("embedded://" + str(tmp_path / f"ledger{attempt}")) as embedded:
            ours = _first_attempts_past_expiry(embedded)
        theirs = _first_attempts_past_expiry(real_ledger)
        if ours is not None and theirs is not None:
            assert ours == theirs == ["EXCEEDS_CREDITS", "CREATED"]
            return
    pytest.skip("the machine was too loaded to space requests under 50 ms, five times")


# -- fuzzing and minimizing (run this file as a script) ----------------------------------------


def _shrink_candidates(program: Program, failing_step: int):
    """Smaller programs: fewer steps, fewer events, simpler values."""
    steps = program.steps
    # Drop everything after the failing step (keep the final lookups out: they are reads).
    if failing_step + 1 < len(steps):
        yield dataclasses.replace(program, steps=steps[: failing_step + 1])
    for i in range(len(steps) - 1, -1, -1):
        if i != failing_step:
            yield dataclasses.replace(program, steps=steps[:i] + steps[i + 1 :])
    for i, step in enumerate(steps):
        if isinstance(step.args, list) and len(step.args) > 1:
            for j in range(len(step.args) - 1, -1, -1):
                args = step.args[:j] + step.args[j + 1 :]
                yield dataclasses.replace(
                    program, steps=steps[:i] + [Step(step.op, args)] + steps[i + 1 :]
                )
    for i, step in enumerate(steps):
        if step.op in ("create_accounts", "create_transfers"):
            for j, event in enumerate(step.args):
                for key, value in event.items():
                    if key in ("id", "timestamp", "timeout"):
                        continue
                    simpler = []
                    if value not in (0, 1) and not (
                        isinstance(value, tuple) and value[0] == "ledger"
                    ):
                        simpler = [0, 1]
                    if key == "flags" and value:
                        simpler = [value & ~(1 << b) for b in range(16) if value >> b & 1]
                    for new in simpler:
                        args = [dict(e) for e in step.args]
                        args[j][key] = new
                        yield dataclasses.replace(
                            program, steps=steps[:i] + [Step(step.op, args)] + steps[i + 1 :]
                        )


def minimize(
    program: Program, fails: Callable[[Program], Difference | None], budget: int = 400
) -> Program:
    first = fails(program)
    assert first is not None, "the program does not fail"
    signature = first.signature()
    current, failing_step = program, first.step
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for candidate in _shrink_candidates(current, failing_step):
            tries += 1
            if tries >= budget:
                break
            diff = fails(candidate)
            if diff is not None and diff.signature() == signature:
                current, failing_step = candidate, diff.step
                improved = True
                break
    return current


def _main(argv: list[str]) -> int:
    import argparse
    import contextlib
    import pprint

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tigerbeetle_server

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["fuzz", "minimize"])
    parser.add_argument("--seeds", default="0:100")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--url")
    parser.add_argument("--minimize", action="store_true", help="fuzz: minimize failures")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory())
            server = tigerbeetle_server.TigerBeetleServer(
                tigerbeetle_server.find_binary(), directory
            )
            url = stack.enter_context(server).url
        real = stack.enter_context(sovr.ledger.connect(url))
        workdir = stack.enter_context(tempfile.TemporaryDirectory())
        counter = iter(range(10**9))

        def fails(program: Program) -> Difference | None:
            diffs, _, _ = differences(program, real, os.path.join(workdir, str(next(counter))))
            return diffs[0] if diffs else None

        if args.command == "minimize":
            seeds = [args.seed]
        else:
            start, stop = (int(x) for x in args.seeds.split(":"))
            seeds = list(range(start, stop))
        signatures: dict[str, list[int]] = {}
        began = time.monotonic()
        for seed in seeds:
            program = generate(seed)
            diffs, _, _ = differences(program, real, os.path.join(workdir, str(next(counter))))
            if not diffs:
                continue
            sig = diffs[0].signature()
            signatures.setdefault(sig, []).append(seed)
            print(f"seed {seed}: {sig}", flush=True)
            if args.command == "minimize" or (args.minimize and len(signatures[sig]) == 1):
                small = minimize(program, fails)
                print(f"--- minimized seed {seed} ({len(small.steps)} steps):")
                pprint.pprint(small.steps, width=100)
                diffs, e_out, t_out = differences(
                    small, real, os.path.join(workdir, str(next(counter)))
                )
                print(describe(small, diffs, limit=5), flush=True)
        print(f"{len(seeds)} programs in {time.monotonic() - began:.1f}s")
        for sig, found in signatures.items():
            print(f"{len(found):5d}  {sig}  e.g. seeds {found[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


def _outcome(call: Callable[[], Any]) -> str:
    try:
        return f"returned {len(call())}"
    except Exception as error:  # its type is the outcome
        return f"raised {type(error).__name__}"


def test_out_of_range_filter_inputs_behave_alike(real_ledger, tmp_path) -> None:
    def outcomes(ledger: sovr.ledger.Ledger) -> list[str]:
        account_id = tb.id()
        account_filter = tb.AccountFilter(
            account_id=account_id,
            user_data_128=0,
            user_data_64=0,
            user_data_32=0,
            code=0,
            timestamp_min=0,
            timestamp_max=0,
            limit=10,
            flags=(1 << 32) | 3,  # debits | credits, plus bit 32
        )
        query_filter = tb.QueryFilter(
            user_data_128=0,
            user_data_64=0,
            user_data_32=0,
            ledger=1,
            code=0,
            timestamp_min=0,
            timestamp_max=0,
            limit=10,
            flags=1 << 32,
        )
        return [
            _outcome(lambda: ledger.get_account_transfers(account_filter)),
            _outcome(lambda: ledger.query_transfers(query_filter)),
            _outcome(lambda: ledger.get_change_events(0, 0, 1 << 32)),
        ]

    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as embedded:
        ours = outcomes(embedded)
    assert ours == outcomes(real_ledger)
