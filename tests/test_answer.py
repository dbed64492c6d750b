"""vshx/plans/answer.py: a call that may never return, waited for where Ctrl-C, SIGTERM and a
deadline still act (the real case, a stopped QEMU, is tests/test_frozen_qemu.py)."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from vshx.plans import answer
from vshx.plans.answer import Unanswered, answered


def hangs() -> None:
    threading.Event().wait()  # as a libvirt call on a stopped QEMU


def ends_after(seconds: float, value: object = "done") -> object:
    time.sleep(seconds)
    return value


def unanswered(why: str) -> Unanswered:
    return Unanswered(f"x {why}", "hint")


def test_the_result_and_the_exception_are_the_calls() -> None:
    assert answered(lambda: 42, "x", print, unanswered) == 42

    def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        answered(fails, "x", print, unanswered)


def test_a_deadline_stops_the_wait_for_a_call_that_never_returns(monkeypatch) -> None:
    monkeypatch.setattr(answer, "GRACE", 0.3)
    began = time.monotonic()
    with pytest.raises(Unanswered, match="x timed out"):
        answered(hangs, "x", print, unanswered, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - began < 5


def test_a_call_that_returns_within_the_grace_ends_as_without_the_thread(monkeypatch) -> None:
    """The caller then aborts the job it started, as it always did on a timeout."""
    monkeypatch.setattr(answer, "GRACE", 3.0)
    with pytest.raises(TimeoutError):
        answered(lambda: ends_after(0.6), "x", print, unanswered, time.monotonic() + 0.2)


def test_ctrl_c_stops_the_wait_after_the_grace_and_a_second_one_at_once(monkeypatch) -> None:
    monkeypatch.setattr(answer, "GRACE", 0.4)
    threading.Timer(0.3, _thread.interrupt_main).start()
    with pytest.raises(Unanswered, match="x interrupted"):
        answered(hangs, "x", print, unanswered)
    monkeypatch.setattr(answer, "GRACE", 60.0)
    began = time.monotonic()
    threading.Timer(0.3, _thread.interrupt_main).start()
    threading.Timer(0.6, _thread.interrupt_main).start()
    with pytest.raises(Unanswered, match="x interrupted"):
        answered(hangs, "x", print, unanswered)
    assert time.monotonic() - began < 10


def test_ctrl_c_while_a_quick_call_returns_is_the_callers(monkeypatch) -> None:
    monkeypatch.setattr(answer, "GRACE", 5.0)
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        answered(lambda: ends_after(0.5), "x", print, unanswered)


def test_a_long_silence_is_said_once(monkeypatch) -> None:
    monkeypatch.setattr(answer, "QUIET", 0.3)
    said: list[str] = []
    assert answered(lambda: ends_after(1.0), "the start", said.append, unanswered) == "done"
    assert len(said) == 1
    assert said[0].startswith("libvirt has not answered the start")
