"""Reads started ahead on a thread, so their waits on libvirt overlap a command's other work.

libvirt answers each call on its own worker threads, and a call that waits (a domain locked
while it starts, the daemon busy) releases the GIL, so a read begun early costs the command
only what is left of it when the answer is needed.  A background read only reads; what it
raises is raised again, in the caller's thread, by ``result()``.  A connection is closed only
once no background read uses it (``settle``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_running: set[threading.Thread] = set()  # the threads of reads not yet finished
_guard = threading.Lock()


class Background(Generic[T]):
    """``read()`` run now on a daemon thread; ``result()`` waits for its answer."""

    def __init__(self, read: Callable[[], T], name: str = "vshx-read-ahead") -> None:
        self._read = read
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        with _guard:
            _running.add(self._thread)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._read()
        except BaseException as exc:  # raised again by result(), in the caller's thread
            self._error = exc
        finally:
            with _guard:
                _running.discard(threading.current_thread())

    def result(self) -> T:
        """The read's answer, once it has finished; its error, raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def settle() -> None:
    """Wait until no background read runs (before the connection they use is closed)."""
    with _guard:
        pending = list(_running)
    for thread in pending:
        thread.join()
