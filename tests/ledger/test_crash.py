"""Crash safety of the embedded engine: SIGKILL a writer at random moments, then check.

A child process (`crash_writer.py`) writes batches of transfers to one ledger directory and
logs each batch before submitting it ("planned") and the events that were CREATED after
`create_transfers` returned ("acknowledged", fsynced). The parent kills it with SIGKILL after
a random 0.05-1.5 s (usually counted from the child's "ready", sometimes from its start, so
some kills land while it opens and recovers the ledger), reopens the directory and checks:

- every acknowledged transfer is found by `lookup_transfers` with the planned fields and the
  acknowledged timestamp, and no event of an acknowledged batch that was not CREATED exists;
- no batch is half-applied: of a batch that was planned but not acknowledged (the kill came
  during or right after `create_transfers`), either nothing exists, or it was committed in
  full: submitting it again creates nothing (every event then EXISTS or fails as before);
- every account's balances are exactly what the transfers that exist add up to (pending
  transfers not posted, voided or expired count as pending), so debits == credits per
  ledger, and no balance-limited account is over its limit;
- transfers acknowledged in earlier cycles are still there (a random sample each cycle);
- the query side (the derived index) sees them: each account's latest transfer, and the
  last batches' transfers by user_data_64.

The next cycle continues on the same directory; some cycles skip the check, so the next
writer itself opens a ledger that was killed mid-write. The slow variant (`-m slow`, or
`SOVR_CRASH_CYCLES=N`) runs N cycles, default 200 (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tigerbeetle as tb
from ledger_invariants import assert_ledger_invariants

import sovr.ledger
from sovr.ledger import LedgerLockedError

try:
    import crash_writer
except ImportError:  # tests/ made a package
    from tests.ledger import crash_writer

TF = tb.TransferFlags
TS = tb.CreateTransferStatus
AF = tb.AccountFlags
AMOUNT_MAX = (1 << 128) - 1
LOOKUP_CHUNK = 8189
HERE = Path(__file__).resolve().parent


def start_child(*args: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "crash_writer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def wait_ready(child: subprocess.Popen, timeout: float = 60.0, word: str = "ready") -> bool:
    """Wait for the child's line `word`; False if it does not come within `timeout`.

    Reads the pipe raw (a buffered readline could swallow what select() then waits for)."""
    fd = child.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk
    if seen.decode().strip() != word:
        child.kill()
        _, stderr = child.communicate()
        pytest.fail(f"crash_writer did not start: {seen!r}\n{stderr}")
    return True


def kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stderr.close()


def lookup_all(ledger: sovr.ledger.Ledger, ids: list[int]) -> dict[int, tb.Transfer]:
    found: dict[int, tb.Transfer] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        for t in ledger.lookup_transfers(ids[start : start + LOOKUP_CHUNK]):
            assert t.id not in found
            found[t.id] = t
    return found


@dataclass
class PendingState:
    debit_account_id: int
    credit_account_id: int
    amount: int
    expires_at: int  # 0: never
    state: str = "pending"  # pending, posted, voided, expired


@dataclass
class Checker:
    """What the parent knows: the logs read so far, and balances recomputed from transfers."""

    log_dir: str
    rng: random.Random
    planned_offset: int = 0
    acknowledged_offset: int = 0
    balances: dict[int, list[int]] = field(
        default_factory=lambda: {a: [0, 0, 0, 0] for a, _, _ in crash_writer.ACCOUNTS}
    )
    pendings: dict[int, PendingState] = field(default_factory=dict)
    acknowledged: dict[int, dict[int, int]] = field(default_factory=dict)  # batch -> id -> ts
    planned_amounts: dict[int, int] = field(default_factory=dict)  # post/void id -> amount
    latest: dict[int, int] = field(default_factory=dict)  # account -> its latest transfer id
    stats: dict[str, int] = field(
        default_factory=lambda: {"batches": 0, "acknowledged": 0, "unacknowledged_applied": 0,
                                 "unacknowledged_absent": 0, "transfers": 0}
    )

    def check(self, ledger: sovr.ledger.Ledger) -> None:
        plans, self.planned_offset = crash_writer.read_lines(
            os.path.join(self.log_dir, crash_writer.PLANNED), self.planned_offset
        )
        acks, self.acknowledged_offset = crash_writer.read_lines(
            os.path.join(self.log_dir, crash_writer.ACKNOWLEDGED), self.acknowledged_offset
        )
        acked = {a["batch"]: a["created"] for a in acks}
        planned_batches = [p["batch"] for p in plans]
        assert planned_batches == sorted(set(planned_batches))
        assert set(acked) <= set(planned_batches), "acknowledged a batch that was not planned"
        # Each writer run leaves at most its last planned batch unacknowledged.
        last_of_run = {p["run"]: p["batch"] for p in plans}
        unacked = [p for p in plans if p["batch"] not in acked]
        assert all(p["batch"] == last_of_run[p["run"]] for p in unacked), unacked

        batches = {p["batch"]: [crash_writer.from_row(r) for r in p["transfers"]] for p in plans}
        ids = [t.id for transfers in batches.values() for t in transfers]
        found = lookup_all(ledger, ids)

        for plan in plans:
            number = plan["batch"]
            transfers = batches[number]
            present = {t.id for t in transfers if t.id in found}
            self.stats["batches"] += 1
            self.check_chains(number, transfers, present)
            if number in acked:
                self.stats["acknowledged"] += 1
                created = {transfers[i].id: ts for i, ts in acked[number]}
                assert present == set(created), (
                    f"batch {number}: acknowledged CREATED {sorted(created)}, "
                    f"found {sorted(present)}"
                )
                for t in transfers:
                    if t.id in created:
                        assert found[t.id].timestamp == created[t.id], (t, found[t.id])
                self.acknowledged[number] = created
            elif present:
                self.stats["unacknowledged_applied"] += 1
                self.resubmit_unacknowledged(ledger, number, transfers, found)
            else:
                self.stats["unacknowledged_absent"] += 1
            for t in transfers:
                if t.id in found:
                    self.check_fields(t, found[t.id], number)

        # Balances from the transfers that exist, in the order they were applied.
        for t in sorted((found[i] for i in ids if i in found), key=lambda t: t.timestamp):
            self.apply(t)
        self.stats["transfers"] += len(found)
        self.check_balances(ledger)
        self.check_old_batches(ledger)
        self.check_indexes(ledger, plans[-5:], batches, found)

    def resubmit_unacknowledged(
        self, ledger: sovr.ledger.Ledger, number: int, transfers: list[tb.Transfer],
        found: dict[int, tb.Transfer],
    ) -> None:
        """Part of a batch exists: it must be all of what the batch created, so submitting
        it again creates nothing (ids that failed transiently are burnt, the other failures
        of this workload cannot turn into successes, and what was created exists)."""
        results = ledger.create_transfers(transfers)
        for t, r in zip(transfers, results, strict=True):
            assert r.status != TS.CREATED, (
                f"batch {number} was half-applied: {t} was missing and is now created"
            )
            if t.id in found:
                # A chain breaks at its first EXISTS: the rest of it is LINKED_EVENT_FAILED.
                assert r.status in (TS.EXISTS, TS.LINKED_EVENT_FAILED), (t, r)
                if r.status == TS.EXISTS:
                    assert r.timestamp == found[t.id].timestamp

    @staticmethod
    def check_chains(number: int, transfers: list[tb.Transfer], present: set[int]) -> None:
        """A linked chain is all there or not at all."""
        chain: list[int] = []
        for t in transfers:
            chain.append(t.id)
            if not t.flags & TF.LINKED:
                there = [i in present for i in chain]
                assert all(there) or not any(there), (
                    f"batch {number}: chain {chain} half-applied: present {there}"
                )
                chain = []

    def check_fields(self, planned: tb.Transfer, stored: tb.Transfer, number: int) -> None:
        assert stored.user_data_64 == number == planned.user_data_64
        assert stored.flags == planned.flags
        assert stored.pending_id == planned.pending_id
        if planned.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
            self.planned_amounts[planned.id] = planned.amount  # Checked in `apply`.
            return
        for name in ("debit_account_id", "credit_account_id", "amount", "timeout", "ledger",
                     "code"):
            assert getattr(stored, name) == getattr(planned, name), (name, planned, stored)

    def check_indexes(
        self, ledger: sovr.ledger.Ledger, plans: list[dict],
        batches: dict[int, list[tb.Transfer]], found: dict[int, tb.Transfer],
    ) -> None:
        """The query side sees what exists: each account's latest transfer, and the
        transfers of the last batches by user_data_64."""
        reversed_ = (tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS
                     | tb.AccountFilterFlags.REVERSED)
        for account_id, transfer_id in self.latest.items():
            (latest,) = ledger.get_account_transfers(
                tb.AccountFilter(
                    account_id=account_id, user_data_128=0, user_data_64=0, user_data_32=0,
                    code=0, timestamp_min=0, timestamp_max=0, limit=1, flags=reversed_,
                )
            )
            assert latest.id == transfer_id, (account_id, latest)
        for plan in plans:
            number = plan["batch"]
            by_user_data = ledger.query_transfers(
                tb.QueryFilter(
                    user_data_128=0, user_data_64=number, user_data_32=0, ledger=0, code=0,
                    timestamp_min=0, timestamp_max=0, limit=8189,
                    flags=tb.QueryFilterFlags.NONE,
                )
            )
            present = {t.id for t in batches[number] if t.id in found}
            assert {t.id for t in by_user_data} == present, f"batch {number}"

    def apply(self, t: tb.Transfer) -> None:
        self.latest[t.debit_account_id] = t.id
        self.latest[t.credit_account_id] = t.id
        dr_dp, dr_dpo, cr_cp, cr_cpo = 0, 1, 2, 3
        if t.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
            p = self.pendings.get(t.pending_id)
            assert p is not None, f"{t} resolves a pending transfer that does not exist"
            assert p.state == "pending", f"{t} resolves a pending transfer already {p.state}"
            assert (t.debit_account_id, t.credit_account_id) == (
                p.debit_account_id, p.credit_account_id
            )
            planned = self.planned_amounts.pop(t.id)
            void = t.flags & TF.VOID_PENDING_TRANSFER
            assert t.amount == (p.amount if void or planned == AMOUNT_MAX else planned), t
            dr, cr = self.balances[p.debit_account_id], self.balances[p.credit_account_id]
            dr[dr_dp] -= p.amount
            cr[cr_cp] -= p.amount
            if void:
                p.state = "voided"
            else:
                dr[dr_dpo] += t.amount
                cr[cr_cpo] += t.amount
                p.state = "posted"
            return
        dr, cr = self.balances[t.debit_account_id], self.balances[t.credit_account_id]
        if t.flags & TF.PENDING:
            dr[dr_dp] += t.amount
            cr[cr_cp] += t.amount
            expires_at = t.timestamp + t.timeout * 1_000_000_000 if t.timeout else 0
            self.pendings[t.id] = PendingState(
                t.debit_account_id, t.credit_account_id, t.amount, expires_at
            )
        else:
            dr[dr_dpo] += t.amount
            cr[cr_cpo] += t.amount

    def check_balances(self, ledger: sovr.ledger.Ledger) -> None:
        ids = list(self.balances)
        while True:
            before = time.time_ns()
            # As in TigerBeetle, an operation right after others does not expire what fell
            # due since the previous one (the pulse comes after it); an idle ledger's does,
            # as TigerBeetle's 100 ms pulse timer would have. So idle first, then look.
            time.sleep(0.11)
            accounts = ledger.lookup_accounts(ids)
            after = time.time_ns()
            waiting = [p for p in self.pendings.values() if p.state == "pending" and p.expires_at]
            if not any(before < p.expires_at <= after for p in waiting):
                break
            time.sleep(0.05)  # An expiry raced the lookup: look again.
        for p in waiting:
            if p.expires_at <= before:
                p.state = "expired"
                self.balances[p.debit_account_id][0] -= p.amount
                self.balances[p.credit_account_id][2] -= p.amount
        assert [a.id for a in accounts] == ids
        actual = {
            a.id: [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
            for a in accounts
        }
        assert actual == self.balances, "account balances differ from their transfers"
        assert_ledger_invariants(accounts, {a.ledger for a in accounts})

    def check_old_batches(self, ledger: sovr.ledger.Ledger, sample: int = 20) -> None:
        numbers = self.rng.sample(sorted(self.acknowledged), min(sample, len(self.acknowledged)))
        expected = {i: ts for n in numbers for i, ts in self.acknowledged[n].items()}
        found = lookup_all(ledger, list(expected))
        assert {i: t.timestamp for i, t in found.items()} == expected


def run_cycles(tmp_path: Path, cycles: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    ledger_dir = str(tmp_path / "ledger")
    log_dir = str(tmp_path / "logs")
    os.makedirs(log_dir)
    checker = Checker(log_dir, random.Random(seed))
    kills_before_ready = 0
    ready_seen = False  # A writer creates the accounts before it says "ready".
    for cycle in range(cycles):
        child = start_child(
            ledger_dir, log_dir, "--seed", str(rng.getrandbits(32)), "--run", str(cycle)
        )
        try:
            delay = rng.uniform(0.05, 1.5)
            if rng.random() < 0.8:
                assert wait_ready(child), "crash_writer not ready within 60 s"
                ready_seen = True
            else:
                kills_before_ready += 1  # Counted from the start: may land in open/recovery.
            time.sleep(delay)
            if child.poll() is not None:
                pytest.fail(f"crash_writer exited by itself:\n{child.stderr.read()}")
        finally:
            kill(child)
        if child.returncode != -signal.SIGKILL:
            pytest.fail(f"crash_writer ended with {child.returncode}, not SIGKILL")
        if cycle < cycles - 1 and rng.random() < 0.25:
            continue  # The next writer opens the killed ledger itself.
        with sovr.ledger.connect("embedded://" + ledger_dir) as ledger:
            if not ready_seen and not ledger.lookup_accounts([crash_writer.ACCOUNTS[0][0]]):
                continue  # Every writer so far was killed before it created the accounts.
            checker.check(ledger)
    # A final clean close and reopen changes nothing.
    with sovr.ledger.connect("embedded://" + ledger_dir) as ledger:
        checker.check(ledger)
    checker.stats["kills_before_ready"] = kills_before_ready
    return checker.stats


def test_sigkill_loses_no_acknowledged_transfer_and_applies_no_half_batch(tmp_path) -> None:
    stats = run_cycles(tmp_path, cycles=20, seed=random.getrandbits(32))
    print(stats)
    assert stats["acknowledged"] > 20  # The writers did make progress.


@pytest.mark.slow
def test_sigkill_many_cycles(tmp_path, request) -> None:
    """About 5 minutes for 200 cycles: runs when asked for, by `-m slow` or by setting
    SOVR_CRASH_CYCLES (its number of cycles, default 200)."""
    asked = "slow" in (request.config.getoption("markexpr") or "")
    if not asked and "SOVR_CRASH_CYCLES" not in os.environ:
        pytest.skip("long crash loop: run with -m slow or SOVR_CRASH_CYCLES=N")
    cycles = int(os.environ.get("SOVR_CRASH_CYCLES", "200"))
    stats = run_cycles(tmp_path, cycles=cycles, seed=random.getrandbits(32))
    print(stats)
    assert stats["acknowledged"] > cycles


def test_directory_held_by_another_process_is_locked(tmp_path) -> None:
    ledger_dir = str(tmp_path / "ledger")
    holder = start_child(ledger_dir, "--hold")
    try:
        assert wait_ready(holder)
        with pytest.raises(LedgerLockedError) as raised:
            sovr.ledger.connect("embedded://" + ledger_dir)
        message = str(raised.value)
        assert ledger_dir in message
        assert "held by another process" in message
    finally:
        kill(holder)
    # The lock dies with its holder, even by SIGKILL.
    with sovr.ledger.connect("embedded://" + ledger_dir) as ledger:
        assert ledger.lookup_accounts([1]) == []


# Imported events carry their own (past) timestamps, so timestamp order is not commit order.
# Recovery after a kill must still end with every account as its committed transfers say.


def kill_after_scenario(ledger_dir: str, name: str) -> None:
    child = start_child(ledger_dir, "--scenario", name)
    try:
        assert wait_ready(child, word="done"), f"scenario {name} did not finish in 60 s"
    finally:
        kill(child)


def test_imported_history_survives_a_crash(tmp_path) -> None:
    """200 batches of imported transfers dated in 2020, then SIGKILL."""
    ledger_dir = str(tmp_path / "ledger")
    kill_after_scenario(ledger_dir, "imported-history")
    with sovr.ledger.connect("embedded://" + ledger_dir) as ledger:
        assert len(lookup_all(ledger, list(range(1, 2001)))) == 2000
        debit, credit = ledger.lookup_accounts([1, 2])
        assert (debit.debits_posted, credit.credits_posted) == (2000, 2000)


def test_imported_transfer_dated_before_an_expiry_survives_a_crash(tmp_path) -> None:
    """A pending transfer expires; an imported transfer dated before that expiry is
    created; SIGKILL."""
    ledger_dir = str(tmp_path / "ledger")
    kill_after_scenario(ledger_dir, "imported-before-expiry")
    with sovr.ledger.connect("embedded://" + ledger_dir) as ledger:
        assert len(ledger.lookup_transfers([1, 2])) == 2
        debit, credit = ledger.lookup_accounts([1, 2])
        assert (debit.debits_pending, debit.debits_posted) == (0, 5)
        assert (credit.credits_pending, credit.credits_posted) == (0, 5)
