"""libvirt snapshot metadata compared with the chains the domain's disks have now."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from vshx.errors import VshxError
from vshx.storage import virt
from vshx.storage.background import Background
from vshx.storage.chain import Chain, canonical
from vshx.storage.libvirt_lazy import libvirt


@dataclass
class SnapshotInfo:
    """A snapshot's name, the disk files it names, and whether it holds memory state."""

    name: str
    files: list[str] = field(default_factory=list)
    has_memory: bool = False
    parent: str | None = None
    created: int = 0  # seconds since the epoch, as libvirt records it
    state: str = ""
    snapshot: libvirt.virDomainSnapshot | None = None


Read = list[tuple["libvirt.virDomainSnapshot", ET.Element]]


def read_all(dom: libvirt.virDomain) -> Read:
    """Every snapshot of ``dom`` with its parsed XML: one ``listAllSnapshots`` and one
    ``getXMLDesc`` per snapshot.  A plan reads this once (``Target.snapshots``) and every
    check of that plan answers from it; what runs after a step reads again."""
    return [(snap, ET.fromstring(snap.getXMLDesc(0))) for snap in dom.listAllSnapshots(0)]


def read_snapshots_ahead(dom: libvirt.virDomain) -> Background[Read]:
    """``read_all(dom)`` started now on a thread: its round trips (each waits while libvirt
    holds the domain) overlap the caller's other work."""
    return Background(lambda: read_all(dom), name="vshx-snapshots")


def domain_snapshots(dom: libvirt.virDomain, read: Read | None = None) -> list[SnapshotInfo]:
    """The snapshots of ``dom`` (from ``read`` when the caller has read them already)."""
    found = []
    for snap, root in read_all(dom) if read is None else read:
        files = []
        for disk in root.findall("./disks/disk"):
            src = disk.find("source")
            if disk.get("snapshot") == "external" and src is not None and src.get("file"):
                files.append(src.get("file", ""))
        memory = root.find("memory")
        has_memory = (memory is not None and memory.get("snapshot") not in (None, "no")) or (
            root.findtext("state") not in ("disk-snapshot", "shutoff")
        )
        found.append(
            SnapshotInfo(
                snap.getName(),
                files,
                has_memory,
                root.findtext("./parent/name"),
                int(root.findtext("creationTime") or 0),
                root.findtext("state") or "",
                snap,
            )
        )
    return found


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


def stale_reason(info: SnapshotInfo, in_chain: set[str]) -> str | None:
    """Why a snapshot's metadata no longer matches the disks, or None when it still does."""
    if not info.files:
        return None
    missing = [f for f in info.files if not os.path.exists(f)]
    if missing:
        return f"file {missing[0]} no longer exists"
    merged = [f for f in info.files if canonical(f) not in in_chain]
    if merged:
        return f"file {os.path.basename(merged[0])} was merged out of the chain"
    return None


def stale_snapshots(
    dom: libvirt.virDomain, known: Chain | None = None
) -> list[tuple[SnapshotInfo, str]]:
    in_chain = current_chain_files(dom, known)
    result = []
    for info in domain_snapshots(dom):
        reason = stale_reason(info, in_chain)
        if reason:
            result.append((info, reason))
    return result


def memory_moments(dom: libvirt.virDomain, read: Read | None = None) -> list[tuple[str, str, str]]:
    """(snapshot, disk, file) for each snapshot with memory state and each disk: the file that
    was active when it was taken (the disk's source in the snapshot's ``<domain>`` block),
    which its saved RAM goes with (from ``read`` when the caller has read them already)."""
    found = []
    for snap, root in read_all(dom) if read is None else read:
        memory = root.find("memory")
        state = root.findtext("state")
        saved = memory.get("snapshot") in ("internal", "external") if memory is not None else False
        if not saved and state in (None, "disk-snapshot", "shutoff"):
            continue
        for disk in root.findall("./domain/devices/disk"):
            target = disk.find("target")
            src = disk.find("source")
            path = src.get("file") or src.get("dev") if src is not None else None
            if target is not None and path:
                found.append((snap.getName(), target.get("dev", ""), path))
    return found
