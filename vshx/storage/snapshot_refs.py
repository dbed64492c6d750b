"""Files a domain names outside its disks: its snapshots' memory state and disk files, and its
managed-save image.  A file any of them names is a user's: vshx neither changes nor deletes it.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import NamedTuple

from vshx.errors import VshxError
from vshx.storage.chain import readings
from vshx.storage.libvirt_lazy import libvirt

# where libvirt's QEMU driver keeps managed-save images (its save_dir; not in the API)
SYSTEM_SAVE_DIR = "/var/lib/libvirt/qemu/save"


class Named(NamedTuple):
    """A file a domain names outside its disks."""

    label: str  # what names it, for messages ("domain D snapshot S (memory state)")
    path: str
    snapshot_of: str | None  # the domain, when one of its snapshots names it (not managed save)


def snapshot_files(xml: str) -> list[tuple[str, str]]:
    """(what, path) for every file one snapshot's XML names: its memory state, each disk's
    moment file with its ``<backingStore>`` chain, and the overlays it made.  A name with a
    line break or tab gives both files it may mean (chain.readings): this is another
    domain's snapshot, whose odd name must not stop an unrelated merge."""
    first, *more = (_files_named(ET.fromstring(reading)) for reading in readings(xml))
    found = first + [entry for other in more for entry in other if entry not in first]
    return [(what, path) for what, path in found if os.path.isabs(path)]


def _files_named(root: ET.Element) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    memory = root.find("memory")
    if memory is not None and memory.get("file"):
        found.append(("memory state", memory.get("file") or ""))
    for scope in ("domain", "inactiveDomain"):
        for disk in root.findall(f"./{scope}/devices/disk"):
            target = disk.find("target")
            dev = target.get("dev", "?") if target is not None else "?"
            for source in disk.iter("source"):
                path = source.get("file") or source.get("dev")
                if path:
                    found.append((f"{dev} moment", path))
    for disk in root.findall("./disks/disk"):
        made = disk.find("source")
        path = made.get("file") or made.get("dev") if made is not None else None
        if path:
            found.append((f"{disk.get('name', '?')} overlay", path))
    return found


def managed_save_path(uri: str, name: str) -> str | None:
    """The managed-save image of domain ``name`` where libvirt keeps it (qemu:///system and
    qemu:///session); None for a URI whose save directory vshx does not know."""
    if uri.startswith("qemu:///system"):
        return os.path.join(SYSTEM_SAVE_DIR, f"{name}.save")
    if uri.startswith("qemu:///session"):
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return os.path.join(config, "libvirt", "qemu", "save", f"{name}.save")
    return None


def named_by(
    conn: libvirt.virConnect, domains: list[libvirt.virDomain], skip: set[str] | None = None
) -> list[Named]:
    """What each domain's snapshots and managed save name (``skip``: the names of domains
    left out).  A domain libvirt cannot answer for makes it refuse."""
    found: list[Named] = []
    uri = conn.getURI()
    for dom in domains:
        name = dom.name()
        if skip and name in skip:
            continue
        try:
            for handle in dom.listAllSnapshots(0):
                try:
                    xml = handle.getXMLDesc(0)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                        continue  # deleted while we looked: it names nothing now
                    raise
                for what, path in snapshot_files(xml):
                    label = f"domain {name} snapshot {handle.getName()} ({what})"
                    found.append(Named(label, path, name))
            if dom.hasManagedSaveImage(0):
                saved = managed_save_path(uri, name)
                if saved is not None:
                    found.append(Named(f"domain {name} managed-save image", saved, None))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we looked: it names nothing now
            raise VshxError(
                f"cannot read the snapshots of domain {name}: {exc.get_error_message()}",
                "vshx refuses what it cannot check; try again",
            ) from None
    return found
