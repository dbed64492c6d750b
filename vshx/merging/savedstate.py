"""Saved state is a user: a saved RAM image goes with the disk contents it was taken on.

A managed-save image (``virsh managedsave``) restores onto the domain's chain as it is; a
snapshot with memory state restores onto its disk moment (the file that was active when it was
taken).  A plan that changes what such RAM would find on disk is refused before anything runs.

An internal snapshot (``virsh snapshot-create-as`` on qcow2 without --disk-only, or
``qemu-img snapshot -c``) lives inside one qcow2 file and reads what that file does not hold
from the file's backing chain as it is: a plan that writes into that file, changes its backing,
merges it away or deletes it is refused too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.plans.plan import shell_line
from vshx.storage import host as files
from vshx.storage import qemuimg, virt
from vshx.storage.chain import Layer, canonical
from vshx.storage.identity import identity
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.qcow2 import chain_files, internal_snapshot_count
from vshx.storage.snapshots import memory_moments

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from vshx.plans.context import Context as Session
    from vshx.plans.target import Target
    from vshx.storage.identity import FileKey


def refuse_saved_state(
    target: Target,
    changed: list[Layer],
    deleting: Collection[str] = (),
    *,
    read_only: list[Layer] | None = None,
    moved: Collection[tuple[str, str]] = (),
) -> None:
    """Refuse a plan on ``target`` that changes ``changed`` (files it writes into, merges out
    of the chain or deletes) while saved RAM depends on them (``deleting``: snapshots the plan
    deletes, whose RAM goes with them).  ``read_only``: layers a pull takes out of the chain
    without writing them: a memory snapshot's moment there stays intact (out of the chain),
    but their internal snapshots are still refused.  ``moved``: (snapshot, disk) whose proven
    moment the plan moves whole into another file and re-points the snapshot's metadata at
    (snapshot-delete): its RAM finds the same disk contents there, as after libvirt's own
    snapshot-delete, which re-points a memory snapshot's disk the same way."""
    dom = target.dom
    for layer in [*changed, *(read_only or [])]:
        refuse_internal_snapshots(layer.path, dom, "this plan changes or removes that file")
    if dom is None:
        return
    name, disk = dom.name(), target.chain.disk or ""
    if not target.live and dom.hasManagedSaveImage(0):
        raise VshxError(
            f"{name} has saved state (a managed-save image, virsh managedsave): its RAM "
            f"restores onto {disk}'s chain as it is now, so vshx does not change that chain",
            f"either start it ({shell_line(['virsh', 'start', name])} restores the RAM) and shut "
            f"it down cleanly ({shell_line(['virsh', 'shutdown', name])}), or discard the saved "
            f"RAM: {shell_line(['virsh', 'managedsave-remove', name])}",
        )
    changing = {layer.canonical for layer in changed}
    for snap, snap_disk, path in memory_moments(dom, target.snapshots()):
        if (snap, snap_disk) in moved or snap in deleting:
            continue
        if snap_disk == disk and canonical(path) in changing:
            delete = shell_line(["virsh", "snapshot-delete", name, snap])
            raise VshxError(
                f"snapshot {snap} of {name} holds memory state taken on {path} ({disk}); this "
                "merge changes that file, so reverting to it would pair its RAM with other "
                "disk contents",
                f"delete that snapshot first ({delete}, or with --metadata to keep its files), "
                "or merge so that this file is left as it is",
            )


def refuse_saved_ram(
    session: Session,
    written: list[str],
    doing: str,
    users: Mapping[str, list[tuple[libvirt.virDomain, str]]] | None = None,
) -> None:
    """Files a bare-image plan or a typed or pasted ``qemu-img`` line writes (``doing`` says
    which), against saved RAM: the managed-save image of every shut-off domain whose disk chain
    holds one (its RAM restores onto that chain as it is), and each snapshot with memory state,
    of any domain, whose disk moment shows what a written file holds (the moment's file
    itself, or a file below it in its backing chain; on the current chain or on a branch a
    revert left behind).  VshxError before anything runs; ``--force`` does not pass it.

    Why: such a write bypasses the domain form's ``refuse_saved_state`` (vshx cannot plan it
    as that domain's command), yet destroys the same saved state: ``qemu-img commit -b BASE``
    into the base under a memory snapshot's moment changes what that moment shows.

    ``users``: the domain disks using each written file (``preflight.domains_using`` of them,
    read already by a caller whose other checks want them too); read here when not given."""
    if users is None:
        users = preflight.domains_using(session, written)
    for path in written:
        for dom, disk in users[path]:
            if virt.is_running(dom):  # QEMU has it open: refused as a running domain's file
                continue
            name = dom.name()
            if dom.hasManagedSaveImage(0):
                raise VshxError(
                    f"{name} has saved state (a managed-save image, virsh managedsave): its RAM "
                    f"restores onto {disk}'s chain as it is now, and {doing} writes {path} of "
                    "that chain",
                    f"either start it ({shell_line(['virsh', 'start', name])} restores the "
                    f"RAM) and shut it down cleanly, or discard the saved RAM: "
                    f"{shell_line(['virsh', 'managedsave-remove', name])}; nothing was changed",
                )
    keys = {identity(path): path for path in written}
    for dom in session.conn.listAllDomains(0):
        for snap, disk, moment, shown in _memory_moments_showing(dom):
            for key in shown & keys.keys():
                name, path = dom.name(), keys[key]
                delete = shell_line(["virsh", "snapshot-delete", name, snap])
                shows = "that file" if identity(moment) == key else f"{path}, below it,"
                raise VshxError(
                    f"snapshot {snap} of {name} holds memory state taken on {moment} ({disk}); "
                    f"{doing} changes {shows} so reverting to it would pair its RAM with "
                    "other disk contents (--force does not change that)",
                    f"delete that snapshot first ({delete}, or with --metadata to keep its "
                    "files), or leave that file as it is; nothing was changed",
                )


def _memory_moments_showing(
    dom: libvirt.virDomain,
) -> list[tuple[str, str, str, set[FileKey]]]:
    """(snapshot, disk, moment file, every file the moment's view reads) for each of the
    domain's snapshots with memory state; none for one undefined meanwhile.  Asked of every
    domain for a bare plan or a typed line: a moment file named with a line break or tab gives
    both files it may mean (chain.Blurred "both"), not a refusal of the plan."""
    try:
        moments = memory_moments(dom, blurred="both")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return []
        raise
    return [
        (snap, disk, moment, {identity(f) for f in chain_files(moment) if files.lexists(f)})
        for snap, disk, moment in moments
        if files.lexists(moment)
    ]


def _snapshot_names(path: str) -> list[str]:
    """The internal snapshots' names (for the message only; the header decides)."""
    try:
        found = qemuimg.info(path).get("snapshots") or []
    except VshxError:
        return []
    return [str(snap.get("name", "")) for snap in found if isinstance(snap, dict)]


def refuse_internal_snapshots(path: str, dom: libvirt.virDomain | None, doing: str) -> None:
    """Refuse when the qcow2 file ``path`` holds internal snapshots (its header's count, read
    now): they read the file's backing chain as it is, and go when the file goes."""
    count = internal_snapshot_count(path)
    if not count:
        return
    names = _snapshot_names(path)
    libvirt_names: set[str] = set()
    if dom is not None:
        libvirt_names = set(dom.snapshotListNames(0))
    deletes = [
        shell_line(["virsh", "snapshot-delete", dom.name(), snap])
        if dom is not None and snap in libvirt_names
        else shell_line(["qemu-img", "snapshot", "-d", snap, path])
        for snap in names
    ]
    listed = ", ".join(names) if names else f"{count} (qemu-img could not list them)"
    how = "; ".join(deletes) if deletes else shell_line(["qemu-img", "snapshot", "-l", "-U", path])
    raise VshxError(
        f"{path} holds internal snapshots ({listed}); {doing}, and an internal snapshot "
        "reads what it does not hold from that file's backing chain and goes with the file, so "
        "reverting to it would show other bytes or fail",
        f"delete those snapshots first ({how}), or leave that layer out of the merge",
    )
