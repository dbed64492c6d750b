"""Waiting for a libvirt call that waits on QEMU, in a way Ctrl-C, SIGTERM and --timeout reach.

A block job's start, its abort, its pivot and a look at its progress make libvirtd talk to
QEMU's monitor, and libvirtd waits for the answer without a limit: a QEMU that is stopped
(SIGSTOP, a debugger) or stuck in the kernel (a dead NFS server) never answers, and the call
blocks in C, where Python runs no signal handler and checks no deadline (virsh blocks the same
way).  So such a call runs on a thread of its own while the thread that made it waits in short
slices: after ``QUIET`` seconds it says once that it waits and why; Ctrl-C, SIGTERM (in the
main thread), a batch's Ctrl-C (plans/overlap.py) or the deadline give the call ``GRACE``
seconds more (a QEMU that works answers in milliseconds, and the caller then aborts the job as
it always did), then end the wait with ``Unanswered``.  The call may still take effect once
QEMU answers (the job starts, the abort lands): the plan's journal stays, for ``vshx jobs``
and ``vshx recover``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from vshx.errors import VshxError
from vshx.plans import overlap

T = TypeVar("T")

QUIET = 10.0  # seconds of silence before vshx says it waits for QEMU
SLICE = 0.2  # seconds between looks at signals, the deadline and a batch's Ctrl-C
GRACE = 2.0  # seconds a call still gets after Ctrl-C or the deadline (libvirt answers in ms)


class Unanswered(VshxError):
    """libvirt did not answer a call that waits on QEMU, and vshx stopped waiting: what the call
    did, or will do once QEMU answers, is unknown."""


def answered(
    call: Callable[[], T],
    what: str,
    say: Callable[[str], None],
    unanswered: Callable[[str], Unanswered],
    deadline: float | None = None,
) -> T:
    """``call()``'s result (or its exception), the call made on a daemon thread.

    ``what``: the call, as the waiting note names it; ``say``: where that note goes;
    ``unanswered(why)``: the error raised when vshx stops waiting (``why``: "interrupted" or
    "timed out"); ``deadline``: a ``time.monotonic()`` after which it stops.  Ctrl-C, SIGTERM,
    a batch's Ctrl-C or the deadline give the call ``GRACE`` seconds more: one that returns
    then ends in KeyboardInterrupt or TimeoutError, as it would have without the thread (the
    caller aborts the job it started); a second Ctrl-C or SIGTERM stops the wait at once."""
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=work, name="vshx-qemu-call", daemon=True).start()
    started = time.monotonic()
    said = False
    stop: BaseException | None = None  # KeyboardInterrupt or TimeoutError, once one came
    stopped_at = 0.0
    while True:
        try:
            if done.wait(SLICE):
                break
            now = time.monotonic()
            if stop is None:
                if deadline is not None and now >= deadline:
                    stop, stopped_at = TimeoutError(), now
                elif overlap.interrupted():
                    stop, stopped_at = KeyboardInterrupt(), now
            elif now - stopped_at >= GRACE:
                raise unanswered(_why(stop))
            if not said and now - started >= QUIET:
                say(
                    f"libvirt has not answered {what} for {QUIET:.0f} s: QEMU may be stopped "
                    "or stuck (`virsh domstate --reason` says); vshx waits (Ctrl-C stops it)"
                )
                said = True
        except KeyboardInterrupt:
            if stop is not None:  # a second one: stop waiting now
                raise unanswered("interrupted") from None
            stop, stopped_at = KeyboardInterrupt(), time.monotonic()
    if stop is not None:
        raise stop  # the call returned in time: what follows is the caller's usual path
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value


def _why(stop: BaseException) -> str:
    return "interrupted" if isinstance(stop, KeyboardInterrupt) else "timed out"
