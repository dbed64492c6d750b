"""QEMU writes its caches down before vshx deletes a file a running domain's chain read.

A block job completing (a pull above all) does not flush: the qcow2 metadata that makes
the merged data part of the chain can still be only in QEMU's memory (cache=writeback)
while the merged-away file is the only durable copy of that data.  libvirt has no flush
call, but pausing the vCPUs does it: QEMU's ``stop`` (virDomainSuspend) drains and flushes
every block device.  So a plan that deletes such a file suspends and resumes the running
domain right before its first ``rm`` of one (once per plan).

The journal is written before that step too (``pauses="yes"``), though it changes nothing: a
vshx killed between its suspend and its resume leaves the domain paused, and ``jobs`` and
``recover`` then say that the pause is probably vshx's; recover does not resume it itself
(``refuse_left_paused``): it cannot tell that pause from one its user made since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans import underneath
from vshx.plans.plan import Plan, Step, shell_line, virsh
from vshx.storage import virt
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.journal import Entry


def running(state: int) -> bool:
    """Running or blocked (``dom.state()[0]``): a suspend stops it and flushes its disks."""
    return state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)


def shut_off(state: int) -> bool:
    """Shut off: its QEMU is gone, nothing of it is left to write down."""
    return bool(state == libvirt.VIR_DOMAIN_SHUTOFF)


def not_flushable(dom: libvirt.virDomain) -> str:
    """Why a suspend cannot make ``dom``'s QEMU write its caches down now, or "" when it
    can (running) or need not (shut off)."""
    state, reason = dom.state()
    if running(state) or shut_off(state):
        return ""
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_STARTING_UP:
        return f"{dom.name()} is starting up"  # paused only until libvirt starts its CPUs
    return f"{dom.name()} is {virt.state_name(dom)}"


def left_paused(dom: libvirt.virDomain, entry: Entry | None) -> bool:
    """``dom`` is paused by a suspend (reason "user") while its journal says a vshx, gone now,
    was at its flush step (journaled before its suspend): that pause is probably vshx's own
    (or its user's, made after resuming it by hand: nothing tells the two apart)."""
    if entry is None or entry.copied or entry.get("pauses") != "yes" or entry.still_running():
        return False
    state, reason = dom.state()
    return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_USER)


# the domains that run or are shut off, by UUID (not the state's name, which virsh translates);
# --all too: without it virsh 9.0 lists only the shut-off ones of the two states asked for
RUNNING_LIST = ["list", "--all", "--state-running", "--state-shutoff", "--uuid"]


class PausedError(VshxError):
    """recover refuses a paused domain whose files wait for a flush (``refuse_paused``)."""


def refuse_paused(dom: libvirt.virDomain, files: list[str]) -> PausedError:
    """For recover: ``dom`` is paused, not by vshx as far as its journal shows, and ``files``
    wait for a flush before they are deleted: nothing is done; resume it, then recover."""
    name = dom.name()
    recover = shell_line(["vshx", "recover", name])
    return PausedError(
        f"{name} is {virt.state_name(dom)} and its journal does not show that vshx paused it, "
        f"so recover does not resume it; and it cannot delete {', '.join(files)} while QEMU "
        "may hold in its cache the only record that the merged data is in the chain",
        f"nothing was changed; resume it ({shell_line(['virsh', 'resume', name])}) or shut it "
        f"down, then {recover}",
    )


def insert(session: Session, plan: Plan) -> None:
    """Put the flush step right before the plan's first step marked ``flush`` (an rm of a
    file a domain's chain read), when that domain runs; once per plan."""
    if any(step.flush_step for step in plan.steps):
        return
    for number, step in enumerate(plan.steps):
        if step.flush:
            dom = virt.lookup_domain(session.conn, step.flush)
            if dom.isActive():
                plan.steps[number:number] = [
                    running_step(session.uri, dom),
                    flush_step(session, dom),
                ]
            return


def refuse_unflushable(dom: libvirt.virDomain) -> bool:
    """Whether ``dom`` runs (its QEMU can be made to flush); False when it is shut off (a
    shut-down QEMU flushed; one that crashed did not, and then the rm steps' own checks see
    the chain as it is left); refused in any other state (paused by its user: vshx does not
    resume a pause it did not make, and cannot flush without)."""
    state = dom.state()[0]
    if shut_off(state):
        return False
    if not running(state):
        name = dom.name()
        raise VshxError(
            f"not deleting the merged-away files: {name} is {virt.state_name(dom)}, so "
            "vshx cannot make QEMU write down what the merge changed (its cache may "
            "hold the only record that the merged data is in the chain)",
            f"nothing was deleted; once {name} has been resumed and paused again (virsh "
            f"resume, virsh suspend: pausing writes the cache down) or shut off, delete them "
            "(rm)",
            clean=True,
        )
    return True


def running_step(uri: str, dom: libvirt.virDomain) -> Step:
    """Stop unless ``dom`` runs or is shut off, as the flush step decides: a printed script
    reaches its ``virsh suspend``/``resume`` only then (atk17 F1: run on a domain its user
    had paused since, the script resumed it, where vshx keeps the files and the pause).
    virsh lists the domain's UUID among those in either state; a paused one is not."""
    argv = virsh(uri, *RUNNING_LIST)

    def action() -> None:
        refuse_unflushable(dom)

    return Step(
        f"check: {dom.name()} runs or is shut off (paused: vshx neither resumes it nor "
        "deletes what it cannot flush)",
        argv,
        action=action,
        changes=False,
        shell=f"{shell_line(argv)} | {shell_line(['grep', '-qxF', '--', dom.UUIDString()])}",
    )


def pasted_running(uri: str, conn: libvirt.virConnect, rest: list[str]) -> Step | None:
    """That check line, pasted back (its words after ``virsh -c URI``); None for another."""
    tail = ["|", "grep", "-qxF", "--"]
    if len(rest) == len(RUNNING_LIST) + 5 and rest[:-1] == RUNNING_LIST + tail:
        return running_step(uri, virt.lookup_domain(conn, rest[-1]))
    return None


def flush_step(session: Session, dom: libvirt.virDomain) -> Step:
    """Suspend then resume ``dom``: QEMU's stop drains and flushes every disk."""
    name = dom.name()
    suspend, resume = virsh(session.uri, "suspend", name), virsh(session.uri, "resume", name)

    def action() -> None:
        if refuse_unflushable(dom):
            dom.suspend()  # stopped: QEMU drained and flushed every disk before this returns
            dom.resume()

    step = Step(
        f"pause and resume {name}: pausing makes QEMU write its disk caches down, so what "
        "the merge changed is on disk before the file it came from is deleted",
        suspend,
        action=action,
        shell=f"{shell_line(suspend)}\n{shell_line(resume)}",
        underneath=underneath.flush(),
        changes=False,
    )
    step.flush_step = True
    return step


def refuse_left_paused(dom: libvirt.virDomain, entry: Entry | None) -> None:
    """For recover: refuse while ``dom`` is paused as a vshx killed at its flush step leaves
    it (``left_paused``): resuming it could undo a pause its user made since, and deleting
    its files needs it running; its user says which by resuming it."""
    if not left_paused(dom, entry):
        return
    name = dom.name()
    raise PausedError(
        f"{name} is paused, and its journal shows the interrupted vshx was at its pause-and-"
        "resume step (pausing makes QEMU write its caches down): the pause is probably "
        "vshx's, but vshx cannot tell it from one made since, so it does not resume it",
        f"nothing was changed; resume it ({shell_line(['virsh', 'resume', name])}) unless you "
        f"paused it on purpose, then {shell_line(['vshx', 'recover', name])}",
    )
