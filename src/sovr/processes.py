"""Starting helper processes that Ctrl-C must not reach half-made.

Ctrl-C sends SIGINT to every process of the terminal's foreground group at once. A child
that is still importing (a recovery process, the `sovr mirror` child; about a second each)
would die with a KeyboardInterrupt traceback, and its parent would take the exit for a
crash. Started with SIGINT ignored, a disposition that survives exec, the child sees none;
once running it installs its own handlers, or keeps ignoring SIGINT and is stopped by its
parent (SIGTERM, or its parent-death watch).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while processes are started inside; only the main thread can change
    signal dispositions, so elsewhere (a supervisor's restart) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
