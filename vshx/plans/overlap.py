"""Lines of one batch that overlap their waits: one line works at a time, the others wait
for libvirt.

A batch (``vshx -f``) runs a line that may overlap (a merge command declared ``overlaps``)
on a thread of its own.  Every line holds the *turn* while it does anything (reads, checks,
journal, steps, output); it gives the turn up only while it waits for libvirt (``parked``):
for its block job's event, or for the libvirt reads of its usage scan (libvirt answers a
list of domains only once it can lock every one, which on a busy host takes seconds).  The
next line of the script starts then.  So at most one line runs vshx's code at any moment;
what overlaps is QEMU's copying and libvirt's waits.

Order is kept as in a script run line by line: a line changes nothing (``before_change``,
before its first changing step) until every earlier line has begun its own changes or
finished, and not at all once an earlier line failed: it then stops as if it had never run
(``NotStarted``; the batch drops what it printed).  A line claims what it works on before
it reads it (``claim_domain``, then ``claim_files`` with every file of its chain by
identity); a claim that meets one of a line still running waits until that line has
finished, so two lines never work on one domain or one file at once.  Ctrl-C (SIGINT,
SIGTERM) aborts every waiting job and waits until each chain is consistent again.

Outside a batch nothing here is active: ``parked``, the claims and ``before_change`` do
nothing.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from vshx.errors import VshxError

INTERRUPT = -1  # put into a waiting job's event queue: Ctrl-C reached the batch


class Line:
    """One line of the batch running on its own thread: its place, claims and state."""

    def __init__(self, index: int, where: str) -> None:
        self.index = index
        self.where = where
        self.domain: str | None = None
        self.files: set[Any] = set()
        self.parked = False  # waiting for a block job's event, the turn given up
        self.waiting = False  # waiting for earlier lines (a claim, an order), the turn given up
        self.began = False  # passed its checks: its first changing step runs
        self.not_started = False  # stopped before any change: an earlier line failed
        self.on_begin: Callable[[], None] | None = None  # told when it begins its changes
        self.done = False
        self.status = 0
        self.failed = False  # failed and may not fail: the script stops
        self.thread: threading.Thread | None = None


class Batch:
    """The lines in flight and the turn they share."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.holder: Line | None = None  # the line holding the turn
        self.lines: list[Line] = []
        self.interrupted = False
        self.queues: set[queue.Queue[int]] = set()  # the event queues of the waiting jobs

    def running(self) -> list[Line]:
        """The lines whose thread has not finished yet."""
        return [
            line
            for line in self.lines
            if not line.done and line.thread is not None and line.thread.is_alive()
        ]

    def first_failed(self) -> Line | None:
        return next((line for line in self.lines if line.failed), None)


_batch: Batch | None = None
_local = threading.local()  # .line: the Line this thread runs


def begin() -> Batch:
    """Start a batch whose lines may overlap (frontends/batch.py)."""
    global _batch
    _batch = Batch()
    return _batch


def end() -> None:
    global _batch
    _batch = None


def current() -> Line | None:
    """The batch line this thread runs; None outside an overlapping batch."""
    return getattr(_local, "line", None) if _batch is not None else None


def take_turn(batch: Batch, line: Line) -> None:
    with batch.cond:
        while batch.holder is not None:
            batch.cond.wait()
        batch.holder = line


def give_turn(batch: Batch) -> None:
    with batch.cond:
        batch.holder = None
        batch.cond.notify_all()


def run_line(batch: Batch, line: Line, work: Callable[[], None]) -> None:
    """Body of a line's thread: ``work`` under the turn, then the line is done."""
    _local.line = line
    take_turn(batch, line)
    try:
        work()
    finally:
        with batch.cond:
            line.done = True
            batch.holder = None
            batch.cond.notify_all()


@contextmanager
def parked() -> Iterator[None]:
    """Around a wait for a block job's event: other lines work meanwhile."""
    batch, line = _batch, current()
    if batch is None or line is None:
        yield
        return
    with batch.cond:
        line.parked = True
        batch.holder = None
        batch.cond.notify_all()
    try:
        yield
    finally:
        with batch.cond:
            while batch.holder is not None:
                batch.cond.wait()
            batch.holder = line
            line.parked = False


def watch(events: queue.Queue[int]) -> Callable[[], None]:
    """Let Ctrl-C reach a job waiting on ``events``; the returned call stops that."""
    batch = _batch
    if batch is None or current() is None:
        return lambda: None
    with batch.cond:
        batch.queues.add(events)
        if batch.interrupted:
            events.put(INTERRUPT)

    def unwatch() -> None:
        with batch.cond:
            batch.queues.discard(events)

    return unwatch


def interrupted() -> bool:
    """A batch's Ctrl-C has come (it reaches a line's thread only through this flag and the
    queues it watches); False outside an overlapping batch."""
    batch = _batch
    return batch is not None and batch.interrupted


def interrupt(batch: Batch) -> None:
    """Ctrl-C: every waiting job aborts (and waits until its chain is consistent)."""
    with batch.cond:
        batch.interrupted = True
        for events in batch.queues:
            events.put(INTERRUPT)


def _wait_for(batch: Batch, line: Line, others: Callable[[], list[Line]]) -> bool:
    """Give up the turn until no line of ``others()`` is running, then take it back; True
    when it waited (what was read before may have changed meanwhile)."""
    with batch.cond:
        if not others():
            return False
        batch.holder = None
        line.waiting = True
        batch.cond.notify_all()
        while others() or batch.holder is not None:
            batch.cond.wait()
        batch.holder = line
        line.waiting = False
        return True


def _earlier(batch: Batch, line: Line) -> list[Line]:
    """The lines before ``line`` still running: a line only ever waits for earlier ones (a
    later line starts after this one claimed what it works on), so no two lines wait for
    each other."""
    return [o for o in batch.running() if o.index < line.index]


def claim_domain(name: str) -> None:
    """This line works on domain ``name``: wait while an earlier line still works on it."""
    batch, line = _batch, current()
    if batch is None or line is None:
        return
    _wait_for(batch, line, lambda: [o for o in _earlier(batch, line) if o.domain == name])
    line.domain = name


def claim_files(files: set[Any]) -> bool:
    """This line works on ``files`` (identities): wait while an earlier line uses any of them;
    True when it waited (the caller reads its chain again)."""
    batch, line = _batch, current()
    if batch is None or line is None:
        return False
    waited = _wait_for(batch, line, lambda: [o for o in _earlier(batch, line) if o.files & files])
    line.files |= files
    return waited


def wait_for_earlier() -> None:
    """Wait until every earlier line has finished (a lock another line of this process holds)."""
    batch, line = _batch, current()
    if batch is not None and line is not None:
        _wait_for(batch, line, lambda: _earlier(batch, line))


class NotStarted(VshxError):
    """A batch line stopped before its first change because an earlier line failed."""


def before_change() -> None:
    """Before a line's first changing step: wait until every earlier line has begun its own
    changes or finished; stop if one of them failed, or Ctrl-C came."""
    batch, line = _batch, current()
    if batch is None or line is None:
        return
    if not batch.interrupted:
        _wait_for(batch, line, lambda: [o for o in _earlier(batch, line) if not o.began])
    if batch.interrupted:
        raise KeyboardInterrupt
    failed = batch.first_failed()
    if failed is not None and failed.index < line.index:
        line.not_started = True
        raise NotStarted(
            f"not started: the line {failed.where.rstrip(': ')} failed while this one "
            "was being checked",
            "nothing was changed by this line; fix that line and run the script again",
            clean=True,
        )
    line.began = True
    if line.on_begin is not None:
        line.on_begin()


def interrupt_on_signals() -> Callable[[], None]:
    """Until the returned call: Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread,
    even where the shell ignored SIGINT (a background `vshx ... &` in a script)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _raise(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    return restore
