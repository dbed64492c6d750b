"""The two Steps that change libvirt's snapshot metadata and nothing else.

``snapshot-create --redefine`` re-points a snapshot at the files that hold its moment now (as
libvirt's own snapshot-delete does for the snapshots it keeps); ``snapshot-delete --metadata``
forgets one.  snapshot-cleanup and snapshot-delete both print and run exactly these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.plans.plan import Step, virsh
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.storage.moments import Snapshot


def redefine_step(
    session: Session, dom: libvirt.virDomain, snap: Snapshot, xml: str, why: str
) -> Step:
    """Redefine ``snap`` from ``xml``; a disk-only snapshot stays one, the current stays current
    (unless a snapshot taken while the plan ran is current now: it stays so).  A snapshot
    someone deleted while the plan ran is not brought back (looked up first)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    extra = []
    if snap.state == "disk-snapshot":
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        extra.append("--disk-only")
    if snap.current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        extra.append("--current")

    def action() -> None:
        try:
            dom.snapshotLookupByName(snap.name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise
            session.warn(
                f"snapshot {snap.name} was deleted by someone else while vshx ran: not brought back"
            )
            return
        now = current_name(dom) if snap.current else None
        if now is not None and now != snap.name:  # taken while vshx ran: the newest stays so
            session.warn(
                f"snapshot {now} was taken while vshx ran and is current: {snap.name} is "
                "re-defined without --current"
            )
            dom.snapshotCreateXML(xml, flags & ~libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT)
            return
        dom.snapshotCreateXML(xml, flags)

    return Step(
        f"re-define snapshot {snap.name}: {why}",
        virsh(session.uri, "snapshot-create", dom.name(), "/dev/stdin", "--redefine", *extra),
        action=action,
        stdin=xml,
    )


def current_name(dom: libvirt.virDomain) -> str | None:
    """The name of the domain's current snapshot; None when none is."""
    try:
        return str(dom.snapshotCurrent(0).getName())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def forget_step(session: Session, dom: libvirt.virDomain, name: str, why: str) -> Step:
    """Forget snapshot ``name`` (``virsh snapshot-delete --metadata``: files untouched)."""

    def action() -> None:
        dom.snapshotLookupByName(name, 0).delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)

    return Step(
        f"forget snapshot {name}: {why}",
        virsh(session.uri, "snapshot-delete", dom.name(), name, "--metadata"),
        action=action,
    )
