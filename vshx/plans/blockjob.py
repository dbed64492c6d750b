"""Running a libvirt block job to its end, driven by BLOCK_JOB_2 events rather than polling.

virsh --wait polls every 500 ms; vshx registers for the disk's events before it starts the
job and wakes the moment libvirt reports COMPLETED / READY / FAILED.  A slow poll remains
only as a safety net (and to draw the progress bar on a terminal).  Ctrl-C or --timeout
abort the job and wait until libvirt reports it gone, so the chain is consistent again.

Success is never inferred from silence: a job that vanished without an event counts as done
only when the live chain shows the layers it was to remove gone, and a lost connection is
"state unknown" (an error; the plan stops, so nothing after it, no deletion, runs).
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import libvirt

from vshx.errors import VshxError, libvirt_hint
from vshx.plans import journal, overlap
from vshx.plans.answer import Unanswered, answered
from vshx.plans.plan import Step, printable, shell_line, virsh

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.target import Target
    from vshx.plans.trace import Trace

T = TypeVar("T")

COMPLETED: int = libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED
FAILED: int = libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED
CANCELED: int = libvirt.VIR_DOMAIN_BLOCK_JOB_CANCELED
READY: int = libvirt.VIR_DOMAIN_BLOCK_JOB_READY
STATUS_NAMES = {COMPLETED: "completed", FAILED: "failed", CANCELED: "canceled", READY: "ready"}
# jobs that write into their base: aborted after copying, the base keeps what was copied
COMMIT_TYPES = (
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT,
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT,
)
SAFETY_POLL = 1.0  # seconds between checks that an event was not lost
TTY_REFRESH = 0.2


class Progress:
    """A one-line progress bar on a terminal; a single final line otherwise."""

    def __init__(self, label: str, stream: TextIO, quiet: bool) -> None:
        self.label = label
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty() and not quiet
        self.start = time.monotonic()
        self.last_end = 0
        self.last_cur = 0  # how far it got: an interrupted job's is short of its end

    def update(self, cur: int, end: int) -> None:
        self.last_end = max(self.last_end, end)
        self.last_cur = max(self.last_cur, cur)
        if not self.tty or end <= 0:
            return
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = cur / elapsed
        eta = (end - cur) / rate if rate > 0 else 0
        done = int(30 * cur / end)
        bar = "#" * done + " " * (30 - done)
        self.stream.write(
            f"\r{self.label} [{bar}] {100 * cur / end:5.1f}%  "
            f"{rate / 1048576:7.1f} MiB/s  ETA {eta:4.0f}s"
        )
        self.stream.flush()

    def finish(self, what: str, stopped: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        seconds = time.monotonic() - self.start
        # libvirt's end of a job is the span QEMU walks (the disk's size for a commit), not
        # the bytes it copied: said as such
        size = f"walked {self.last_end / 1048576:.1f} MiB, " if self.last_end else ""
        if stopped and 0 < self.last_cur < self.last_end:  # how far it got (nu12 #16)
            size = f"walked {self.last_cur / 1048576:.1f} of {self.last_end / 1048576:.1f} MiB, "
        self.stream.write(f"{self.label}: {what} ({size}{seconds:.2f} s)\n")
        self.stream.flush()


class StateUnknown(VshxError):
    """libvirt could not be asked (connection lost, daemon frozen): the job's state is unknown."""


def command(*words: str) -> str:
    """A command line for the user to run: every word quoted by shell rules (a hostile domain
    or disk name cannot run as code when pasted), control characters shown escaped."""
    return printable(shell_line(words))


def unknown_state(label: str, dom: libvirt.virDomain, disk: str, why: str) -> VshxError:
    """libvirt could not be asked about the job: the domain stopped (its QEMU, and the job
    with it, ended: atk20 #4), or libvirtd is gone or stuck."""
    dom_name = dom.name()
    try:
        stopped = not dom.isActive()
    except libvirt.libvirtError:
        stopped = False  # libvirtd does not answer: that is what is said
    if stopped:
        return VshxError(
            f"{label}: domain {dom_name} stopped while the block job ran ({why}); the job "
            "ended with its QEMU, unfinished",
            f"nothing was deleted; {command('vshx', 'recover', dom_name, disk)} checks the "
            "chain it left and clears this command's journal (vshx refuses other changes to "
            "the disk until then); then run the command again",
        )
    return VshxError(
        f"{label}: lost contact with libvirtd ({why}); the block job's state is unknown",
        f"nothing was deleted and nothing is reported done. When libvirtd answers again: "
        f"{command('vshx', 'jobs', dom_name)} shows the job, "
        f"{command('vshx', 'chain', dom_name, disk)} the chain, and "
        f"{command('vshx', 'recover', dom_name, disk)} finishes or rolls back what was "
        "interrupted",
    )


class BlockJob:
    """One block job on one disk: registered for events before the job is started.

    ``leaves``: canonical paths the finished job removes from the disk's chain; a job that
    vanished without an event is done only if the live XML shows them all gone.
    """

    def __init__(
        self,
        conn: libvirt.virConnect,
        dom: libvirt.virDomain,
        disk: str,
        leaves: frozenset[str] = frozenset(),
    ) -> None:
        self.conn = conn
        self.dom = dom
        self.disk = disk
        self.leaves = leaves
        self.events: queue.Queue[int] = queue.Queue()
        self.tracer: Trace | None = None  # --trace: told every block-job event
        self.label = "block job"  # what its errors name (run_block_job's label)
        self.stream: TextIO = sys.stderr  # where a wait for QEMU is said
        self._callback = conn.domainEventRegisterAny(
            dom, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_event, None
        )

    def _on_event(
        self, _conn: Any, _dom: Any, disk: str, kind: int, status: int, _opaque: Any
    ) -> None:
        if self.tracer is not None:
            self.tracer.job_event(disk, kind, status)
        if disk == self.disk:
            self.events.put(status)

    def close(self) -> None:
        try:
            self.conn.domainEventDeregisterAny(self._callback)
        except libvirt.libvirtError:
            pass

    def ask(self, call: Callable[[], T], what: str, deadline: float | None = None) -> T:
        """``call()``, a libvirt call that waits on QEMU, waited for so that Ctrl-C, SIGTERM
        and ``deadline`` still act when QEMU does not answer (plans/answer.py)."""
        dom_name, disk = self.dom.name(), self.disk

        def say(text: str) -> None:
            self.stream.write(f"warning: {text}\n")
            self.stream.flush()

        def unanswered(why: str) -> Unanswered:
            return Unanswered(
                f"{self.label} {why}: libvirt did not answer {what} (QEMU may be stopped or "
                "stuck); vshx stopped waiting",
                f"nothing was deleted, and what libvirt does once QEMU answers is not known "
                f"yet: {command('virsh', 'domstate', dom_name, '--reason')} shows QEMU's state; "
                f"then {command('vshx', 'jobs', dom_name)} shows the job and "
                f"{command('vshx', 'recover', dom_name, disk)} finishes or rolls back this "
                "command (vshx refuses other changes to the disk until then)",
            )

        return answered(call, what, say, unanswered, deadline)

    def info(self, deadline: float | None = None) -> dict[str, int]:
        """The job's progress; {} when libvirt lists no job; StateUnknown when it cannot say.
        ``deadline``: the job's (--timeout), for a look that QEMU does not answer."""

        def look() -> dict[str, int]:
            try:
                return self.dom.blockJobInfo(self.disk, 0) or {}
            except libvirt.libvirtError as exc:
                raise StateUnknown(exc.get_error_message() or str(exc)) from exc

        return self.ask(look, "a look at the block job", deadline)

    def live_xml(self) -> str:
        try:
            xml: str = self.dom.XMLDesc(0)
            return xml
        except libvirt.libvirtError as exc:
            raise StateUnknown(exc.get_error_message() or str(exc)) from exc

    def is_ready(self) -> bool:
        """Live XML marks a mirror/active-commit job ready='yes' once it can pivot."""
        return "ready='yes'" in self.live_xml()

    def chain_shows_done(self) -> bool:
        """True when the live chain no longer holds any layer the job was to remove."""
        if not self.leaves:
            return False  # nothing to look for (keep-overlay): only an event can tell
        from vshx.storage.chain import canonical, disks_from_xml

        for disk in disks_from_xml(self.live_xml()):
            if disk.target == self.disk:
                now = {canonical(disk.source or "")} | {canonical(p) for p, _f, _i in disk.backing}
                return not (now & self.leaves)
        return False

    def wait(
        self, want: set[int], progress: Progress, deadline: float | None, gone: int | None = None
    ) -> int:
        """Block until one of ``want`` (or FAILED/CANCELED); fall back to polling if no event.
        ``gone``: what a job that libvirt no longer lists ended as, when that is already known
        (a synchronous abort returned: libvirt waited for the job's end; its event may lag).
        In a batch, the other lines work meanwhile (plans/overlap.py); Ctrl-C there reaches
        this wait as KeyboardInterrupt."""
        unwatch = overlap.watch(self.events)
        try:
            with overlap.parked():
                return self._wait(want, progress, deadline, gone)
        finally:
            unwatch()

    def _wait(
        self, want: set[int], progress: Progress, deadline: float | None, gone: int | None
    ) -> int:
        interval = TTY_REFRESH if progress.tty else SAFETY_POLL
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            timeout = interval if deadline is None else min(interval, deadline - time.monotonic())
            try:
                status = self.events.get(timeout=max(timeout, 0.0))
            except queue.Empty:
                info = self.info(deadline)
                if info:
                    progress.update(info.get("cur", 0), info.get("end", 0))
                    if READY in want and self.is_ready():
                        return READY
                    continue
                if not self.events.empty():
                    continue  # the event arrived meanwhile: take it
                if COMPLETED in want and self.chain_shows_done():
                    return COMPLETED  # no event, but the chain itself proves it
                if gone is not None:
                    return gone
                raise VshxError(
                    "the block job is gone, but neither an event nor the chain shows it completed",
                    "nothing was deleted; look at the chain with: chain DOMAIN DISK",
                ) from None
            if status == overlap.INTERRUPT:
                raise KeyboardInterrupt
            if status in want or status in (FAILED, CANCELED):
                return status

    def abort_requested(self) -> None:
        """virsh blockjob --abort --async: ask for the abort and do not wait for its end."""
        try:
            self.ask(
                lambda: self.dom.blockJobAbort(self.disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC),
                "the abort of the block job",
            )
        except libvirt.libvirtError:
            pass  # it may have finished meanwhile; `vshx jobs` and the chain tell

    def abort_and_settle(self) -> bool:
        """Abort the job and wait until libvirt no longer lists it.

        True when the job had completed before the abort took effect (the chain shows it).
        """
        try:
            self.ask(lambda: self.dom.blockJobAbort(self.disk, 0), "the abort of the block job")
        except libvirt.libvirtError:
            pass  # it may have finished meanwhile; the checks below tell
        for _ in range(600):
            if not self.info():
                break
            time.sleep(0.05)
        else:
            raise VshxError("the block job did not stop after the abort", "see: vshx jobs")
        return self.chain_shows_done()


def run_block_job(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    disk: str,
    start: Callable[[], None],
    *,
    label: str,
    leaves: frozenset[str] = frozenset(),
    active: bool = False,
    pivot: bool = True,
    timeout: int | None = None,
    wait: bool = True,
    abort_async: bool = False,
    stream: TextIO | None = None,
    quiet: bool = False,
    ready_only: bool = False,
    trace: TextIO | None = None,
) -> None:
    """Start a job with ``start`` and see it through; active jobs pivot or keep the overlay.

    ``wait=False`` (--background) returns once it started; ``abort_async`` (virsh's --async):
    a timeout or Ctrl-C requests the abort and returns without waiting for the job to end;
    ``ready_only``: an active job is left READY, for ``pivot_ready_job`` to end.
    ``trace``: print QEMU's QMP events and libvirt's job events there as they arrive."""
    tracer = None
    if trace is not None:
        from vshx.plans.trace import Trace

        tracer = Trace(conn, dom, trace)
    job = BlockJob(conn, dom, disk, leaves)
    job.tracer, job.label, job.stream = tracer, label, stream or sys.stderr
    progress = Progress(label, stream or sys.stderr, quiet)
    deadline = time.monotonic() + timeout if timeout else None
    restore = overlap.interrupt_on_signals()
    try:
        # Ctrl-C may land while start() returns (the job runs already): the same abort path
        try:
            try:
                with overlap.parked():  # libvirt starts the job: in a batch, the next line works
                    job.ask(start, "the start of the block job", deadline)
            except libvirt.libvirtError as exc:  # refused: no job started, nothing changed
                message = exc.get_error_message() or str(exc)
                raise VshxError(message, libvirt_hint(libvirt, exc), clean=True) from None
            if not wait:
                then = (
                    "; it then waits for a pivot: "
                    f"{command('vshx', 'recover', dom.name(), disk, '--pivot')} "
                    f"(or {command('virsh', 'blockjob', dom.name(), disk, '--pivot')})"
                    if active
                    else "; once it has ended, "
                    f"{command('vshx', 'recover', dom.name(), disk)} records where the "
                    "snapshots' moments went"
                )
                progress.finish(
                    "started (--background); follow it with: "
                    f"{command('vshx', 'jobs', dom.name())} "
                    f"({command('virsh', 'blockjob', dom.name(), disk, '--info')}){then}"
                )
                return
            if active:
                status = job.wait({READY}, progress, deadline)
                if status == READY and ready_only:
                    progress.finish("ready to pivot")
                    return
                if status == READY:
                    flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
                    # synchronous: libvirt waits for the end
                    job.ask(lambda: dom.blockJobAbort(disk, flags), "the pivot")
                    ended = None if pivot else CANCELED  # keep-overlay: the chain shows nothing
                    status = job.wait({COMPLETED, CANCELED}, progress, None, gone=ended)
                    if status == CANCELED and not pivot:
                        status = COMPLETED  # keep-overlay ends the job by cancelling it
            else:
                status = job.wait({COMPLETED}, progress, deadline)
        except (KeyboardInterrupt, TimeoutError) as exc:
            why = (
                "interrupted"
                if isinstance(exc, KeyboardInterrupt)
                else f"timed out after {timeout} s"
            )
            if abort_async:
                job.abort_requested()
                progress.finish(f"{why}; abort requested (--async)", stopped=True)
                raise VshxError(
                    f"{label} {why}: the abort was requested and not waited for (--async)",
                    f"the job may still be ending: {command('vshx', 'jobs', dom.name())} "
                    f"shows it; once it ended, {command('vshx', 'recover', dom.name(), disk)} "
                    "checks the chain it left and clears this command's journal (vshx refuses "
                    "other changes to the disk until then); nothing was deleted",
                ) from None
            before = job.info()  # what it had copied, asked before the abort ends it
            if not job.abort_and_settle():
                aborted = command("virsh", "blockjob", dom.name(), disk, "--abort")
                progress.finish(f"{why}; job aborted ({aborted})", stopped=True)
                if before.get("type") in COMMIT_TYPES and int(before.get("cur", 0)) > 0:
                    raise VshxError(
                        f"{label} {why}: the block job was aborted after it had copied data "
                        "into its base; the chain is as before and the guest sees the same "
                        "bytes, but the base keeps what was copied (the moment it showed is "
                        "no longer intact)",
                        f"run the command again to finish the merge; nothing was deleted "
                        f"({command('vshx', 'chain', dom.name(), disk)} shows the chain)",
                        clean=True,
                        partial=True,
                    ) from None
                raise VshxError(
                    f"{label} {why}: the block job was aborted and the chain is as before",
                    "nothing was deleted; run `chain` to see it",
                    clean=True,
                ) from None
            status = COMPLETED  # it had finished before the abort arrived: say so
            progress.finish(f"{why}, but the job had already completed")
        if status != COMPLETED:
            raise VshxError(
                f"{label} {STATUS_NAMES.get(status, status)}",
                job_failure_hint(dom, disk),
                clean=True,
            )
        progress.finish("done")
    except StateUnknown as exc:
        raise unknown_state(label, dom, disk, exc.message) from None
    finally:
        job.close()
        if tracer is not None:
            tracer.close()
        restore()


def pivot_ready_job(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    disk: str,
    *,
    label: str,
    leaves: frozenset[str] = frozenset(),
    stream: TextIO | None = None,
    quiet: bool = False,
    trace: TextIO | None = None,
) -> None:
    """Pivot a READY active job (left so by ``run_block_job(ready_only=True)``) and wait until
    libvirt reports it completed (or the chain shows it); ``trace`` as for run_block_job."""
    tracer = None
    if trace is not None:
        from vshx.plans.trace import Trace

        tracer = Trace(conn, dom, trace)
    job = BlockJob(conn, dom, disk, leaves)
    job.tracer, job.label, job.stream = tracer, label, stream or sys.stderr
    progress = Progress(label, stream or sys.stderr, quiet)
    try:
        try:
            job.ask(
                lambda: dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT),
                "the pivot",
            )
        except libvirt.libvirtError as exc:
            if job.info() or not job.chain_shows_done():
                raise VshxError(
                    f"{label}: the pivot failed: {exc.get_error_message()}",
                    job_failure_hint(dom, disk),
                ) from None
        status = job.wait({COMPLETED, CANCELED}, progress, None)
        if status != COMPLETED:
            raise VshxError(
                f"{label} {STATUS_NAMES.get(status, status)}", job_failure_hint(dom, disk)
            )
        progress.finish("pivoted")
    except StateUnknown as exc:
        raise unknown_state(label, dom, disk, exc.message) from None
    finally:
        job.close()
        if tracer is not None:
            tracer.close()


# libvirt's names (vshx.storage.virt.JOB_TYPES) of the jobs that end by themselves
ENDS_BY_ITSELF = ("commit", "pull")


def wait_step(
    session: Session,
    target: Target,
    entry: journal.Entry,
    job: dict[str, Any],
    leaves: list[str] | None = None,
) -> Step | None:
    """For recover: the Step that waits, as the killed vshx would have, for the block job
    ``job`` on the target's disk to end by itself (a commit below the active layer, a pull),
    when the interrupted step's journal ``entry`` says that job ends so; None otherwise (an
    older vshx's entry, another kind of job, a step that started no such job).  ``leaves``:
    the canonical paths the job takes out of the chain, where the caller read them from its
    own record (a plan over several disks keeps them per disk).  Ctrl-C or SIGTERM stops the
    waiting, never the job: it goes on, and recover says so."""
    dom, disk = target.dom, target.chain.disk or ""
    leaves = journal.completes(entry) if leaves is None else leaves
    if dom is None or leaves is None or entry.copied or job.get("type") not in ENDS_BY_ITSELF:
        return None
    kind = str(job["type"])
    listed = shell_line(virsh(session.uri, "blockjob", dom.name(), disk, "--info", "--raw"))

    def action() -> None:
        wait_for_end(
            session.conn,
            dom,
            disk,
            label=f"{kind} job on {disk}",
            leaves=frozenset(leaves),
            stream=session.err,
            quiet=session.quiet,
        )

    return Step(
        f"wait until the {kind} job on {disk} ends by itself, as the interrupted "
        f"{entry.get('plan', 'plan')} would have (libvirt lists no job on {disk} then)",
        virsh(session.uri, "blockjob", dom.name(), disk, "--info", "--raw"),
        action=action,
        shell=f"while {listed} | grep -q .; do sleep 1; done",
        changes=False,
    )


def wait_for_end(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    disk: str,
    *,
    label: str,
    leaves: frozenset[str],
    stream: TextIO | None = None,
    quiet: bool = False,
) -> None:
    """Wait until the block job on ``disk`` (one that ends by itself) has completed; raise when
    it failed or was cancelled.  Interrupted (Ctrl-C, SIGTERM), the job is left running."""
    job = BlockJob(conn, dom, disk, leaves)
    progress = Progress(label, stream or sys.stderr, quiet)
    restore = overlap.interrupt_on_signals()
    where = (dom.name(), disk)
    try:
        try:
            status = job.wait({COMPLETED}, progress, None)
        except KeyboardInterrupt:
            progress.finish("stopped waiting; the job still runs", stopped=True)
            raise VshxError(
                f"{label}: interrupted while waiting; the job was left running (it ends by "
                "itself) and the journal stays",
                f"{command('vshx', 'recover', *where)} waits for it again and then finishes; "
                f"{command('vshx', 'jobs', dom.name())} shows it; "
                f"{command('vshx', 'recover', *where, '--abort')} stops it instead",
            ) from None
        if status != COMPLETED:
            raise VshxError(
                f"{label} {STATUS_NAMES.get(status, status)}; the journal stays",
                job_failure_hint(dom, disk)
                + f"; then {command('vshx', 'recover', *where)} clears the journal",
            )
        progress.finish("ended by itself")
    except StateUnknown as exc:
        raise unknown_state(label, dom, disk, exc.message) from None
    finally:
        job.close()
        restore()


def job_failure_hint(dom: libvirt.virDomain, disk: str) -> str:
    """What to check when QEMU failed a job: most often a full file system or an I/O error."""
    return (
        "nothing was deleted and every layer names the backing file it named before the job "
        "(a commit's base may hold part of the copied data: snapshot-list then calls its moments "
        "unknown); check free space where the layers and their external data files live (a "
        f"full disk fails a job) and /var/log/libvirt/qemu/{dom.name()}.log, "
        f"then: {command('vshx', 'chain', dom.name(), disk)}"
    )
