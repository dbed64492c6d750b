"""A batch whose merge lines overlap their waits (the rules are in plans/overlap.py).

A line whose command declares ``overlaps`` (commit, pull) runs on a thread of its own; the
next line starts once it waits for libvirt (its usage scan's reads, its block job), so the
waits and jobs of lines on other domains and files overlap.  Any other line (a virsh
command, snapshot-delete, jobs, a line with ``--dry-run``...) first waits until every earlier
line has finished, and runs as in a plain batch.  Output stays in line order: a line's output
is shown once it is the oldest line still running and has begun its changes (or ended).  The
script stops at the first failing line as before, and its status is that line's: a later
line already being checked then stops before changing anything, and its output is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TextIO

from vshx.errors import EXIT_OK, ExitRequested, VshxError
from vshx.plans import overlap
from vshx.shell.session import Session
from vshx.spec.lexer import echoed, split_line

Command = tuple[str, str, "str | None", bool]  # where, line, here-document, may fail
SKIP = {"--dry-run", "--teach", "--help"}  # these lines print or plan: they run alone


def may_overlap(session: Session) -> bool:
    """Whether this batch may overlap lines at all: a real run on local files, no transcript,
    no --trace (their output follows the order of events, not of lines)."""
    return not (
        session.dry_run
        or session.teach
        or session.trace
        or session.recorder is not None
        or not session.is_local
    )


def overlaps(session: Session, line: str, stdin: str | None) -> bool:
    """A line of one command whose spec declares ``overlaps``, and that only runs it."""
    if stdin is not None:
        return False
    try:
        commands = split_line(line).commands
        if len(commands) != 1 or not commands[0] or SKIP & set(commands[0]):
            return False
        command = session.host.command(commands[0][0])
    except (VshxError, Exception):  # the line runs alone and reports its own error
        return False
    return command is not None and command.overlaps


class Output:
    """Every line's output in line order.  The oldest line still running writes straight
    through once it may (it began its changes, or it was ready from the start); a later
    line's writes are kept, stdout and stderr in the order written; a line that stopped
    before changing anything because an earlier line failed is dropped (it never ran)."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.guard = threading.Lock()
        self.kept: list[list[tuple[TextIO, str]]] = []
        self.ready: list[bool] = []
        self.finished: list[bool] = []
        self.head = 0  # the oldest line not finished

    def add(self, ready: bool = True) -> int:
        with self.guard:
            self.kept.append([])
            self.ready.append(ready)
            self.finished.append(False)
            return len(self.kept) - 1

    def write(self, index: int, stream: TextIO, text: str) -> None:
        with self.guard:
            if index == self.head and self.ready[index]:
                stream.write(text)
            else:
                self.kept[index].append((stream, text))

    def flush(self, index: int, stream: TextIO) -> None:
        with self.guard:
            if index == self.head and self.ready[index]:
                stream.flush()

    def begin(self, index: int) -> None:
        """The line began its changes: what it printed may be shown once it is the oldest."""
        with self.guard:
            self.ready[index] = True
            self._release()

    def finish(self, index: int, drop: bool = False) -> None:
        """The line has finished (``drop``: it never ran): the next ones write what they
        kept, in order."""
        with self.guard:
            self.finished[index] = self.ready[index] = True
            if drop:
                self.kept[index].clear()
            self._release()

    def _release(self) -> None:
        while self.head < len(self.kept):
            if self.ready[self.head]:
                for stream, text in self.kept[self.head]:
                    stream.write(text)
                self.kept[self.head].clear()
            if not self.finished[self.head]:
                break
            self.head += 1
        self.out.flush()
        self.err.flush()


class LineStream:
    """A line's stdout or stderr (``Output``); never a terminal (no progress bar)."""

    def __init__(self, output: Output, index: int, stream: TextIO) -> None:
        self.output, self.index, self.stream = output, index, stream

    def write(self, text: str) -> int:
        self.output.write(self.index, self.stream, text)
        return len(text)

    def flush(self) -> None:
        self.output.flush(self.index, self.stream)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


class Runner:
    """Runs the lines of one batch, overlapping the jobs of those that may."""

    def __init__(self, session: Session, echo: bool) -> None:
        self.session = session
        self.echo = echo
        self.batch = overlap.begin()
        self.output = Output(session.out, session.err)
        self.results: dict[int, tuple[int, bool]] = {}  # line -> (status, may fail)
        self.exit_requested = False
        self.crash: BaseException | None = None  # not a user's error: raised again at the end

    def stopped(self) -> bool:
        """A line failed (and may not), asked to exit, or crashed: no further line starts."""
        return self.batch.first_failed() is not None or self.exit_requested or bool(self.crash)

    def run(self, commands: Sequence[Command]) -> int:
        # decided before any line runs: finding a command may load plugins, which must not
        # happen while a line's thread calls their hooks
        eligible = [overlaps(self.session, line, stdin) for _w, line, stdin, _f in commands]
        restore = overlap.interrupt_on_signals()
        try:
            try:
                for (where, line, stdin, may_fail), together in zip(
                    commands, eligible, strict=True
                ):
                    if self.stopped():
                        break
                    if together:
                        self.start(where, line, may_fail)
                        continue
                    self.drain()
                    if self.stopped() or not self.alone(where, line, stdin, may_fail):
                        break
                self.drain()
            except KeyboardInterrupt:
                overlap.interrupt(self.batch)  # every waiting job aborts and settles
                self.drain()
        finally:
            restore()
            overlap.end()
        if self.crash is not None:
            raise self.crash
        if self.results:  # the first line that stopped the script
            return self.results[min(self.results)][0]
        return EXIT_OK

    def alone(self, where: str, line: str, stdin: str | None, may_fail: bool) -> bool:
        """Run a line that does not overlap, on this thread (nothing else runs now); False
        when the script stops."""
        index = self.output.add()
        self.output.finish(index)  # nothing kept: it writes straight through
        if self.echo:
            self.session.out.flush()
            print(echoed(line), file=self.session.err, flush=True)
        try:
            status = self.session.execute(line, where=where, stdin=stdin)
        except ExitRequested:
            self.exit_requested = True
            return False
        if status != EXIT_OK and not may_fail:
            self.results[index] = (status, may_fail)
            self.batch.lines.append(_failed_line(index, where, status))
            return False
        return True

    def start(self, where: str, line: str, may_fail: bool) -> None:
        """Start a line on its own thread; return once it waits for its job or has finished."""
        index = self.output.add(ready=False)  # shown once it begins its changes, or ends
        view = self.session.fork(
            LineStream(self.output, index, self.session.out),  # type: ignore[arg-type]
            LineStream(self.output, index, self.session.err),  # type: ignore[arg-type]
        )
        entry = overlap.Line(index, where)
        entry.on_begin = lambda: self.output.begin(index)

        def work() -> None:
            try:
                if self.echo:
                    print(echoed(line), file=view.err, flush=True)
                status = view.execute(line, where=where)
                if status != EXIT_OK and not may_fail and not entry.not_started:
                    self.results[index] = (status, may_fail)
                    entry.status, entry.failed = status, True
            except ExitRequested:
                self.exit_requested = True
            except BaseException as exc:  # a bug: raised again by run()
                self.crash = exc
            finally:
                try:
                    self.output.finish(index, drop=entry.not_started)
                except BaseException as exc:  # a reader that left the pipe: raised by run()
                    self.crash = self.crash or exc

        thread = threading.Thread(
            target=overlap.run_line, args=(self.batch, entry, work), name=f"vshx-line-{index}"
        )
        entry.thread = thread
        with self.batch.cond:
            self.batch.lines.append(entry)
        thread.start()
        with self.batch.cond:
            while not (entry.parked or entry.done) and thread.is_alive():
                self.batch.cond.wait(0.2)

    def drain(self) -> None:
        """Wait until every line started has finished, and its thread has ended: a line's
        thread still alive at the end sends the program through Python's own exit, whose
        teardown drops the connection left open after libvirt's module is gone ("Exception
        ignored in virConnect.__del__": a traceback on stderr, CI9)."""
        with self.batch.cond:
            while self.batch.running():
                self.batch.cond.wait(0.2)
            threads = [line.thread for line in self.batch.lines if line.thread is not None]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()


def _failed_line(index: int, where: str, status: int) -> overlap.Line:
    line = overlap.Line(index, where)
    line.done, line.failed, line.status = True, True, status
    return line


def run_overlapped(session: Session, commands: Sequence[Command], echo: bool = False) -> int:
    return Runner(session, echo).run(commands)
