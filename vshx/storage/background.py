"""Reads started ahead on a thread, so their waits on libvirt overlap a command's other work.

libvirt answers each call on its own worker threads, and a call that waits (a domain locked
while it starts, the daemon busy) releases the GIL, so a read begun early costs the command
only what is left of it when the answer is needed.  A background read only reads; what it
raises is raised again, in the caller's thread, by ``result()``.  A connection is closed only
once no background read uses it (``settle``).
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_running: set[_thread.LockType] = set()  # each unfinished read's lock, held until it ends
_guard = _thread.allocate_lock()


class Background(Generic[T]):
    """``read()`` run now on a thread of its own; ``result()`` waits for its answer.

    The thread is started with ``_thread`` rather than ``threading.Thread``, whose ``start``
    waits until the new thread has taken the GIL and said so: a one-shot starts four reads
    while its main thread plans, and each such handover cost it ~0.3-0.5 ms.  Such a thread
    ends with the process, as a daemon thread does."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()  # let go when the read has ended
        with _guard:
            _running.add(self._done)
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._value = self._read()
        except BaseException as exc:  # raised again by result(), in the caller's thread
            self._error = exc
        finally:
            with _guard:
                _running.discard(self._done)
            self._done.release()

    def result(self) -> T:
        """The read's answer, once it has finished; its error, raised here."""
        _wait(self._done)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _wait(done: _thread.LockType) -> None:
    """Return once the read holding ``done`` has ended (Ctrl-C still interrupts the wait)."""
    with done:
        pass


def settle() -> None:
    """Wait until no background read runs (before the connection they use is closed)."""
    with _guard:
        pending = list(_running)
    for done in pending:
        _wait(done)
