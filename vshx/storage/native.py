"""Whether libvirt itself could merge a layer away: ``virsh snapshot-delete`` of an external
snapshot (libvirt >= 9.0), predicted with the checks libvirt 9.0 makes before it starts.

libvirt's qemuSnapshotDeleteExternalPrepare refuses, for each disk of the snapshot: an overlay
(the snapshot's disk file) that is not in the disk's current chain ("VM disk source and
snapshot disk source are not the same"); one whose backing file there is not the disk the
snapshot's own domain definition names ("snapshot VM disk source and parent disk source are
not the same", as for snapshot metadata written by hand with --redefine); a snapshot with
more than one child; and an internal parent.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vshx.storage.chain import Chain, canonical
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.storage.moments import Snapshot

NATIVE_DELETE = 9_000_000  # libvirt 9.0 deletes external snapshots itself


def native_snapshot_deletes(
    dom: libvirt.virDomain,
    chain: Chain,
    merged: list[str],
    snapshots: Sequence[Snapshot] | None = None,
) -> list[str] | None:
    """The snapshots whose overlay is one of ``merged`` (paths) and that libvirt would delete
    by merging it; None when libvirt is older than 9.0 or any of them would be refused (or no
    snapshot names those layers), so no native route is taught.  ``snapshots``: the domain's
    snapshots as the plan read them (Target.snapshots), else read here."""
    if dom.connect().getLibVersion() < NATIVE_DELETE:
        return None
    if snapshots is None:
        read = [(snap.getName(), snap.getXMLDesc(0)) for snap in dom.listAllSnapshots(0)]
    else:
        read = [(snap.name, snap.xml) for snap in snapshots]
    disk = chain.disk or ""
    layers = [canonical(layer.path) for layer in chain.layers]
    wanted = {canonical(path) for path in merged}
    found: dict[str, str] = {}
    children: dict[str, int] = {}
    internal: set[str] = set()
    parsed = []
    for name, xml in read:
        root = ET.fromstring(xml)
        parent = root.findtext("./parent/name")
        if parent:
            children[parent] = children.get(parent, 0) + 1
        kinds = {d.get("snapshot") for d in root.findall("./disks/disk")}
        if "internal" in kinds:
            internal.add(name)
        parsed.append((name, parent, root))
    for name, parent, root in parsed:
        overlay = _disk_file(root.findall("./disks/disk"), disk, external=True)
        if overlay is None or canonical(overlay) not in wanted:
            continue
        before = _disk_file(root.findall("./domain/devices/disk"), disk, external=False)
        position = layers.index(canonical(overlay)) if canonical(overlay) in layers else -1
        if (
            position < 0
            or position + 1 >= len(layers)
            or before is None
            or layers[position + 1] != canonical(before)
            or children.get(name, 0) > 1
            or (parent is not None and parent in internal)
        ):
            return None
        found[canonical(overlay)] = name
    if set(found) != wanted:
        return None
    return [found[path] for path in layers if path in found]


def _disk_file(disks: list[ET.Element], target: str, *, external: bool) -> str | None:
    """The file a snapshot's ``<disks>`` (external) or ``<domain>`` names for ``target``."""
    for disk in disks:
        name = disk.get("name") if external else _target(disk)
        if name != target:
            continue
        if external and disk.get("snapshot") != "external":
            return None
        source = disk.find("source")
        return source.get("file") if source is not None else None
    return None


def _target(disk: ET.Element) -> str | None:
    node = disk.find("target")
    return node.get("dev") if node is not None else None
