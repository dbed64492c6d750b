"""Refuse, before anything changes, a plan whose snapshot metadata step libvirt would refuse.

libvirt's QEMU driver refuses every ``snapshot-create`` -- ``--redefine`` with any flags, and
so ``snapshot-current`` too -- on a domain that has checkpoints while it is shut off
("cannot perform block operations while checkpoint exists": qemuSnapshotCreateXML checks
qemuDomainSupportsCheckpointsBlockjobs before it even parses the XML).  Seen on libvirt 9.0:
refused shut off, allowed on the same domain running (QEMU 7.2); ``snapshot-delete
--metadata``, ``define``/``update-device``, ``checkpoint-create --redefine`` and
``checkpoint-delete --metadata`` are allowed shut off, ``checkpoint-delete`` is not.  A plan
that re-defines a snapshot there would fail half-way, after its merges and definition changes:
it is refused whole, naming the checkpoints and the way on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.plan import shell_line
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan, Step


def snapshot_create_domain(step: Step) -> str | None:
    """The domain a ``virsh snapshot-create`` step names; None for any other step."""
    argv = step.argv
    if len(argv) < 5 or argv[0] != "virsh" or "snapshot-create" not in argv:
        return None
    rest = argv[argv.index("snapshot-create") + 1 :]
    if rest[:1] == ["--domain"]:
        rest = rest[1:]
    return rest[0] if rest else None


def refuse_offline_redefine(session: Session, plan: Plan) -> None:
    """Refuse ``plan`` when one of its steps defines snapshot metadata on a shut-off domain
    that has checkpoints (libvirt would refuse that step after the earlier ones ran)."""
    names = {name for step in plan.steps if (name := snapshot_create_domain(step))}
    for name in sorted(names):
        try:
            dom = session.conn.lookupByName(name)
            if dom.isActive():
                continue
            checkpoints = sorted(c.getName() for c in dom.listAllCheckpoints(0))
        except libvirt.libvirtError:
            continue  # no such domain (yet): the plan's own checks answer
        if checkpoints:
            raise VshxError(*refusal(session, plan, name, checkpoints))


def refusal(session: Session, plan: Plan, name: str, checkpoints: list[str]) -> tuple[str, str]:
    """The error and hint for a refused plan: what libvirt refuses, and the way on."""
    from vshx.plans import journal

    listed = ", ".join(checkpoints)
    which = f"checkpoint{'s' if len(checkpoints) > 1 else ''} {listed}"
    why = (
        f"{name} is shut off and has {which}: libvirt refuses to re-define snapshot metadata "
        'then (snapshot-create --redefine: "cannot perform block operations while checkpoint '
        'exists")'
    )
    start = shell_line(["virsh", "start", name])
    dom = session.conn.lookupByName(name)
    if journal.read_domain(dom) is not None:
        return (
            f"cannot finish the interrupted plan ({plan.title}): {why}; nothing was changed now",
            f"start it ({start}): its disks show the guest the same data whichever step the "
            "plan stopped at, and a running domain's snapshots can be re-defined while "
            f"checkpoints exist; then run {shell_line(['vshx', 'recover', name])}",
        )
    command = session.command.name if session.command is not None else ""
    deletes = [
        ["virsh", "checkpoint-delete", name, checkpoint, "--metadata"] for checkpoint in checkpoints
    ]
    forget = "; ".join(shell_line(argv) for argv in deletes)
    if command == "snapshot-revert":
        return (
            f"refusing: {why}, and the new overlays would carry none of their bitmaps; "
            "nothing was changed",
            f"keep the checkpoints and do not revert, or drop them first (an incremental "
            f"backup from them is then impossible): {forget}; then run this again",
        )
    native = (
        "; or let libvirt do it offline (virsh snapshot-delete, libvirt >= 9.0)"
        if command == "snapshot-delete"
        else ""
    )
    return (
        f"refusing: {why}; nothing was changed",
        f"start it ({start}) and run this again: on a running domain libvirt allows it and "
        f"block commits carry the checkpoints' bitmaps{native}; or drop the checkpoints "
        f"(an incremental backup from them is then impossible): {forget}",
    )
