"""Helper processes of `sovr up`: started so Ctrl-C cannot catch them half-made, and
stopped when `sovr up` is gone.

Ctrl-C sends SIGINT to every process of the terminal's foreground group at once. A child
that is still importing (a recovery process, the `sovr mirror` child; about a second each)
would die with a KeyboardInterrupt traceback, and its parent would take the exit for a
crash. Started with SIGINT ignored, a disposition that survives exec, the child sees none;
once running it installs its own handlers, or keeps ignoring SIGINT and is stopped by its
parent (SIGTERM, or its parent-death watch).

`watch_parent` is that watch: `sovr up` SIGKILLed runs no exit code, so each helper (a
terminal worker, a recovery process, the mirror child) polls for its parent and stops
itself, instead of serving a dead engine forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator


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


PARENT_CHECK_SECONDS = 1.0


def watch_parent(on_gone: Callable[[], object], parent_pid: int | None = None) -> None:
    """Call `on_gone` (on a daemon thread) once this process's parent has died: a helper
    process of `sovr up` must not outlive it, even when `sovr up` is SIGKILLed and runs no
    exit code. `parent_pid` defaults to the current parent."""
    parent = os.getppid() if parent_pid is None else parent_pid

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        on_gone()

    threading.Thread(target=watch, name="sovr-parent-watch", daemon=True).start()
