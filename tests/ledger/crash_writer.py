"""The child process of test_crash.py: writes batches of transfers until it is killed.

    python -m crash_writer LEDGER_DIR LOG_DIR --seed N --run R   # write until killed
    python -m crash_writer LEDGER_DIR --hold                      # open the ledger, wait
    python -m crash_writer LEDGER_DIR --scenario NAME             # fixed steps, then wait

Writing: opens `embedded://LEDGER_DIR`, creates `ACCOUNTS` (CREATED or EXISTS), prints
"ready", then loops. For each batch it first appends the whole planned batch as one JSON
line to LOG_DIR/planned.jsonl (write, flush, fsync), then calls `create_transfers`, then
appends the indexes and timestamps of the events that were CREATED to
LOG_DIR/acknowledged.jsonl (write, flush, fsync). The engine fsyncs before it returns, so
every acknowledged transfer must survive a SIGKILL at any instant.

Batches are recognisable: batch number B (unique across runs, continuing from the planned
log) gives its events ids `B << 32 | i` and user_data_64 = B. They mix sizes (1 to 2,000
events), single-phase transfers between random accounts (some balance-limited, so some fail
with EXCEEDS_CREDITS/EXCEEDS_DEBITS), pending transfers (no timeout, one hour, or one
second), posts (partial, full, AMOUNT_MAX) and voids of earlier pending transfers, invalid
transfers, and linked chains, some of them doomed by an invalid event.

Scenarios (`SCENARIOS`) are fixed sequences that print "done" and wait to be killed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import tigerbeetle as tb

import sovr.ledger

AMOUNT_MAX = (1 << 128) - 1
AF = tb.AccountFlags
TF = tb.TransferFlags
CODE = 1

# (id, ledger, flags)
ACCOUNTS: list[tuple[int, int, int]] = (
    [(i, 1, AF.DEBITS_MUST_NOT_EXCEED_CREDITS) for i in range(1, 4)]
    + [(4, 1, AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY)]
    + [(5, 1, AF.CREDITS_MUST_NOT_EXCEED_DEBITS), (6, 1, AF.CREDITS_MUST_NOT_EXCEED_DEBITS)]
    + [(i, 1, AF.NONE) for i in range(7, 14)]
    + [(i, 1, AF.HISTORY) for i in range(14, 17)]
    + [(i, 2, AF.NONE) for i in range(17, 21)]
)
LEDGER_OF = {account_id: ledger for account_id, ledger, _ in ACCOUNTS}
BATCH_SIZES = (1, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 2_000)
PLANNED = "planned.jsonl"
ACKNOWLEDGED = "acknowledged.jsonl"
POOL_TAIL_BYTES = 2 << 20  # Pending transfers to post or void come from this much log.

# A planned transfer as logged: the fields the test compares, in this order.
FIELDS = (
    "id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_64",
    "timeout", "ledger", "code", "flags",
)


def to_row(t: tb.Transfer) -> list[int]:
    return [int(getattr(t, name)) for name in FIELDS]


def from_row(row: list[int]) -> tb.Transfer:
    fields = dict(zip(FIELDS, row, strict=True))
    fields["flags"] = TF(fields["flags"])
    return tb.Transfer(**fields)


def read_lines(path: str, offset: int = 0) -> tuple[list[dict], int]:
    """The complete JSON lines of `path` from byte `offset`, and the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines()], offset + end


def drop_partial_line(path: str) -> None:
    """A SIGKILL mid-write leaves a partial last line: cut it before appending."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


def append_line(f, record: dict) -> None:
    f.write(json.dumps(record, separators=(",", ":")) + "\n")
    f.flush()
    os.fsync(f.fileno())


def recent_plans(path: str) -> list[dict]:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return []
    start = max(0, size - POOL_TAIL_BYTES)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    if start:
        data = data[data.find(b"\n") + 1 :]
    return [json.loads(line) for line in data.splitlines() if line]


class Planner:
    def __init__(self, rng: random.Random, first_batch: int, pool: dict[int, int]) -> None:
        self.rng = rng
        self.batch = first_batch - 1
        self.pool = pool  # Pending transfer id -> amount, not yet posted or voided (planned).

    def next_batch(self) -> list[tb.Transfer]:
        rng = self.rng
        self.batch += 1
        self.index = 0
        size = rng.choice(BATCH_SIZES)
        events: list[tb.Transfer] = []
        while len(events) < size:
            if rng.random() < 0.08:
                chain = [self.event(rng.choice(("single", "pending", "post")))
                         for _ in range(rng.randint(2, 4))]
                if rng.random() < 0.25:
                    chain[rng.randrange(len(chain))] = self.event("invalid")
                for t in chain[:-1]:
                    t.flags = TF(t.flags | TF.LINKED)
                events.extend(chain)
            else:
                kind = rng.choices(
                    ("single", "pending", "post", "invalid"), weights=(55, 20, 20, 5)
                )[0]
                events.append(self.event(kind))
        return events

    def new_id(self) -> int:
        self.index += 1
        return self.batch << 32 | self.index

    def pair(self) -> tuple[int, int]:
        dr = self.rng.choice(ACCOUNTS)[0]
        peers = [a for a, ledger, _ in ACCOUNTS if ledger == LEDGER_OF[dr] and a != dr]
        return dr, self.rng.choice(peers)

    def event(self, kind: str) -> tb.Transfer:
        rng = self.rng
        if kind == "post" and self.pool:
            pending_id = rng.choice(list(self.pool))
            amount = self.pool.pop(pending_id) if rng.random() < 0.9 else self.pool[pending_id]
            if rng.random() < 0.3:
                return tb.Transfer(
                    id=self.new_id(), pending_id=pending_id, flags=TF.VOID_PENDING_TRANSFER,
                    user_data_64=self.batch,
                )
            return tb.Transfer(
                id=self.new_id(), pending_id=pending_id, flags=TF.POST_PENDING_TRANSFER,
                amount=rng.choice((AMOUNT_MAX, amount, rng.randint(0, amount))),
                user_data_64=self.batch,
            )
        dr, cr = self.pair()
        if kind == "invalid":
            cr = dr
        amount = rng.randint(1, 1_000) if rng.random() < 0.9 else rng.randint(1, 10**9)
        t = tb.Transfer(
            id=self.new_id(), debit_account_id=dr, credit_account_id=cr, amount=amount,
            ledger=LEDGER_OF[dr], code=CODE, user_data_64=self.batch,
        )
        if kind == "pending":
            t.flags = TF.PENDING
            t.timeout = rng.choice((0, 0, 3600, 1))
            self.pool[t.id] = amount
        return t


def open_ledger(ledger_dir: str) -> sovr.ledger.Ledger:
    ledger = sovr.ledger.connect("embedded://" + ledger_dir)
    accounts = [tb.Account(id=i, ledger=lg, code=CODE, flags=AF(f)) for i, lg, f in ACCOUNTS]
    for account, result in zip(accounts, ledger.create_accounts(accounts), strict=True):
        ok = (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS)
        assert result.status in ok, (account, result)
    return ledger


def write_until_killed(ledger_dir: str, log_dir: str, seed: int, run: int, seconds: float) -> None:
    planned_path = os.path.join(log_dir, PLANNED)
    acknowledged_path = os.path.join(log_dir, ACKNOWLEDGED)
    drop_partial_line(planned_path)
    drop_partial_line(acknowledged_path)
    plans = recent_plans(planned_path)
    pool: dict[int, int] = {}
    for plan in plans:
        for row in plan["transfers"]:
            t = from_row(row)
            if t.flags & TF.PENDING:
                pool[t.id] = t.amount
            elif t.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
                pool.pop(t.pending_id, None)
    planner = Planner(random.Random(seed), plans[-1]["batch"] + 1 if plans else 1, pool)

    ledger = open_ledger(ledger_dir)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    with open(planned_path, "a") as planned, open(acknowledged_path, "a") as acknowledged:
        while time.monotonic() < deadline:
            batch = planner.next_batch()
            append_line(
                planned,
                {"batch": planner.batch, "run": run, "transfers": [to_row(t) for t in batch]},
            )
            results = ledger.create_transfers(batch)
            created = [
                [i, r.timestamp] for i, r in enumerate(results)
                if r.status == tb.CreateTransferStatus.CREATED
            ]
            append_line(acknowledged, {"batch": planner.batch, "created": created})
    ledger.close()  # Only if the parent never killed us (it should have).


def imported_history(ledger: sovr.ledger.Ledger, batches: int = 200) -> None:
    """Import a history: two imported accounts, then batches of 10 imported transfers of 1
    from account 1 to account 2, dated in 2020 (ids 1, 2, ...)."""
    t0 = 1_600_000_000 * 10**9
    accounts = [
        tb.Account(id=i, ledger=1, code=CODE, flags=AF.IMPORTED, timestamp=t0 + i) for i in (1, 2)
    ]
    assert {r.status for r in ledger.create_accounts(accounts)} == {tb.CreateAccountStatus.CREATED}
    for b in range(batches):
        batch = [
            tb.Transfer(
                id=b * 10 + k + 1, debit_account_id=1, credit_account_id=2, amount=1,
                ledger=1, code=CODE, flags=TF.IMPORTED, timestamp=t0 + 1_000 + b * 10 + k,
            )
            for k in range(10)
        ]
        results = ledger.create_transfers(batch)
        assert {r.status for r in results} == {tb.CreateTransferStatus.CREATED}, results


def imported_before_expiry(ledger: sovr.ledger.Ledger) -> None:
    """A pending transfer (id 1) of 7 with a 1 s timeout expires; then an imported transfer
    (id 2) of 5, dated 1 ns after the pending one (before its expiry), is created."""
    accounts = [tb.Account(id=i, ledger=1, code=CODE) for i in (1, 2)]
    assert {r.status for r in ledger.create_accounts(accounts)} == {tb.CreateAccountStatus.CREATED}
    (pending,) = ledger.create_transfers(
        [tb.Transfer(id=1, debit_account_id=1, credit_account_id=2, amount=7, ledger=1,
                     code=CODE, flags=TF.PENDING, timeout=1)]
    )
    assert pending.status == tb.CreateTransferStatus.CREATED
    while ledger.lookup_accounts([1])[0].debits_pending:  # Until it has expired.
        time.sleep(0.05)
    (imported,) = ledger.create_transfers(
        [tb.Transfer(id=2, debit_account_id=1, credit_account_id=2, amount=5, ledger=1,
                     code=CODE, flags=TF.IMPORTED, timestamp=pending.timestamp + 1)]
    )
    assert imported.status == tb.CreateTransferStatus.CREATED, imported


SCENARIOS = {"imported-history": imported_history, "imported-before-expiry": imported_before_expiry}


def run_scenario(ledger_dir: str, name: str) -> None:
    """Run a scenario, print "done", and wait to be killed (never closing the ledger)."""
    ledger = sovr.ledger.connect("embedded://" + ledger_dir)
    SCENARIOS[name](ledger)
    print("done", flush=True)
    time.sleep(600)


def hold(ledger_dir: str) -> None:
    ledger = sovr.ledger.connect("embedded://" + ledger_dir)
    print("ready", flush=True)
    try:
        time.sleep(600)
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ledger_dir")
    parser.add_argument("log_dir", nargs="?")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after (safety)")
    parser.add_argument("--hold", action="store_true", help="only open the ledger and wait")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help="run it, then wait")
    args = parser.parse_args(argv)
    if args.hold:
        hold(args.ledger_dir)
    elif args.scenario:
        run_scenario(args.ledger_dir, args.scenario)
    else:
        if not args.log_dir:
            parser.error("log_dir is required unless --hold")
        write_until_killed(args.ledger_dir, args.log_dir, args.seed, args.run, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
