"""The files a domain's disks use now, and the ones its memory snapshots' RAM goes with."""

from __future__ import annotations

from vshx.errors import VshxError
from vshx.storage import virt
from vshx.storage.chain import Blurred, Chain
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import Read, read_snapshots


def current_chain_files(
    dom: libvirt.virDomain, known: Chain | list[Chain] | None = None
) -> set[str]:
    """Canonical paths of every layer of every disk of the domain, as it is now.

    ``known``: chains the caller has just read (or a batch dry-run predicted), so those disks
    are not read again.
    Fails closed: a chain that cannot be read raises, because every file it would have named
    would otherwise look merged away (and its snapshots stale).
    """
    given = [known] if isinstance(known, Chain) else list(known or [])
    files: set[str] = {layer.canonical for chain in given for layer in chain.layers}
    done = {chain.disk for chain in given}
    for disk in virt.domain_disks(dom):
        if not disk.source or disk.device != "disk" or disk.target in done:
            continue
        try:
            chain = virt.domain_chain(dom, disk.target)
        except VshxError as exc:
            raise VshxError(
                f"cannot read the chain of {dom.name()} disk {disk.target}: {exc.message}",
                "no snapshot is judged stale while a chain is unreadable; repair or restore "
                "the layer (qemu-img check), then run the command again",
            ) from exc
        files |= {layer.canonical for layer in chain.layers}
    return files


def memory_moments(
    dom: libvirt.virDomain, read: Read | None = None, blurred: Blurred = "refuse"
) -> list[tuple[str, str, str]]:
    """(snapshot, disk, file) for each snapshot with memory state and each disk: the file that
    was active when it was taken (the disk's source in the snapshot's ``<domain>`` block),
    which its saved RAM goes with (from ``read`` when the caller has read them already, else
    read now: ``blurred`` as for read_snapshots)."""
    return [
        (snap.name, disk, moment.file)
        for snap in (read_snapshots(dom, blurred) if read is None else read)
        if snap.has_memory
        for disk, moment in snap.moments.items()
        if moment.file
    ]
