"""Coalescing: many callers' small requests become a few large ledger round trips.

A `Coalescer` owns one thread. Callers `submit` a group of items (a request's chains, say)
and get one future for the group's results. The thread takes everything queued, cuts it
into batches of at most `max_weight` (never splitting an item: a linked chain must travel
whole), hands each batch to `handle`, and resolves each group's future once all its items
are done. While a batch is in the ledger, new submissions queue up and form the next one,
so under load each round trip serves as many requests as arrived during the last: batching
grows with load and costs nothing when idle.

`linger_seconds` makes the thread wait that long after the first item of an idle spell, so
that more can join it: a round trip costs a commit (an fsync and per-batch work) however few
items it carries, so under load a millisecond of waiting buys several times the throughput.

An exception from `handle` fails every group with an item in that batch (the ledger did
nothing for them, or the caller cannot know: they are told "unavailable", never "done").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger("sovr.terminal.coalescer")
_STOP = object()


@dataclass(eq=False)
class _Group(Generic[Item, Result]):
    items: Sequence[Item]
    future: Future
    results: list[Any] = field(default_factory=list)
    failed: bool = False


class Coalescer(Generic[Item, Result]):
    def __init__(
        self, name: str, handle: Callable[[list[Item]], list[Result]], *, max_weight: int,
        weight: Callable[[Item], int] = lambda item: 1, linger_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self._handle = handle
        self._max_weight = max_weight
        self._weight = weight
        self._linger_seconds = linger_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"sovr-{name}", daemon=True)
        self.batches = 0  # round trips made, for metrics and tests
        self.items = 0
        self._thread.start()

    def submit(self, items: Sequence[Item]) -> Future:
        """A future for `handle`'s results for `items`, in order."""
        future: Future = Future()
        if not items:
            future.set_result([])
            return future
        for item in items:
            assert self._weight(item) <= self._max_weight, f"{self.name}: item too heavy"
        self._queue.put(_Group(items, future))
        return future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        pending: list[_Group] = []
        while True:
            if not pending:
                first = self._queue.get()
                if first is _STOP:
                    return
                pending.append(first)
                if self._linger_seconds:
                    time.sleep(self._linger_seconds)
            stop = self._drain(pending)
            pending = self._process_one_batch(pending)
            if stop and not pending:
                return
            if stop:
                self._queue.put(_STOP)

    def _drain(self, pending: list[_Group]) -> bool:
        while True:
            try:
                group = self._queue.get_nowait()
            except queue.Empty:
                return False
            if group is _STOP:
                return True
            pending.append(group)

    def _process_one_batch(self, pending: list[_Group]) -> list[_Group]:
        """Fill one batch from the front of `pending`; return the groups still unfinished."""
        batch: list[Item] = []
        owners: list[_Group] = []
        weight = 0
        for group in pending:
            for item in group.items[len(group.results):]:
                item_weight = self._weight(item)
                if weight + item_weight > self._max_weight:
                    break
                batch.append(item)
                owners.append(group)
                weight += item_weight
            else:
                continue
            break
        self._run_batch(batch, owners)
        unfinished = []
        for group in pending:
            if group.failed:
                continue
            if len(group.results) == len(group.items):
                group.future.set_result(group.results)
            else:
                unfinished.append(group)
        return unfinished

    def _run_batch(self, batch: list[Item], owners: list[_Group]) -> None:
        assert batch, "a batch always takes at least one item"
        try:
            results = self._handle(batch)
            assert len(results) == len(batch), f"{self.name}: one result per item"
        except BaseException as error:  # noqa: BLE001 - handed to every waiting caller
            for group in dict.fromkeys(owners):
                if not group.failed:
                    group.failed = True
                    group.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        self.batches += 1
        self.items += len(batch)
        for group, result in zip(owners, results, strict=True):
            if not group.failed:
                group.results.append(result)



def concatenated(create: Callable[[list], list], groups: list[list]) -> list[list]:
    """`create` called once on all `groups` joined, its results split back per group."""
    results = create([item for group in groups for item in group])
    split, start = [], 0
    for group in groups:
        split.append(results[start:start + len(group)])
        start += len(group)
    assert start == len(results), "one result per item"
    return split
