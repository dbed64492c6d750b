"""Files vshx made for a domain (snapshot-revert's new overlays), kept in the domain's metadata.

A file vshx created itself (``O_EXCL``, in the run that records it) is vshx's to remove later:
lab-destroy removes a lab's along with the files lab-create made.  The record keeps each file's
device, inode and birth time, so a file a user put under that name since is never taken for it.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import NamedTuple

from vshx.errors import VshxError
from vshx.plans.journal import metadata_flags
from vshx.plans.plan import Step, shell_line
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.allocation import holds_nothing
from vshx.storage.chain import canonical
from vshx.storage.identity import birth_ns
from vshx.storage.libvirt_lazy import libvirt

NS = "https://vshx.invalid/made"
KEY = "vshxf"


class Made(NamedTuple):
    """One file vshx made for the domain, as it was right after vshx made it."""

    path: str
    dev: int
    ino: int
    born: int  # birth time (ns); 0 where the file system (or a remote host) does not say


def read(dom: libvirt.virDomain) -> list[Made]:
    """The domain's record (empty when none, or when it was written for another domain: a
    clone's copy names files that are not its own)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, 0)
    except libvirt.libvirtError:
        return []
    root = ET.fromstring(text)
    if root.get("uuid") and root.get("uuid") != dom.UUIDString():
        return []
    found = []
    for node in root.findall("file"):
        try:
            numbers = [int(node.get(k, "")) for k in ("dev", "ino", "born")]
        except ValueError:
            continue
        found.append(Made(node.get("path", ""), *numbers))
    return [m for m in found if m.path]


def identity(path: str) -> Made:
    """``path`` as it is now (on the image host)."""
    st = files.stat(path, False)
    return Made(path, st.st_dev, st.st_ino, birth_ns(path, files.current().local) or 0)


def still_made(made: Made) -> bool:
    """The file at ``made.path`` is still the very file vshx made (same device and inode, and
    birth time where known: an inode freed and given to a new file is not it)."""
    try:
        now = identity(made.path)
    except OSError:
        return False
    return now[1:3] == made[1:3] and (not made.born or not now.born or now.born == made.born)


def record(dom: libvirt.virDomain, path: str) -> Made:
    """Add ``path`` (made by vshx just now) to the domain's record; records of files that are
    gone or no longer vshx's are dropped."""
    made = identity(path)
    kept = [m for m in read(dom) if m.path != path and still_made(m)] + [made]
    root = ET.Element("made", {"uuid": dom.UUIDString()})
    for m in kept:
        attrs = {"path": m.path, "dev": str(m.dev), "ino": str(m.ino), "born": str(m.born)}
        ET.SubElement(root, "file", attrs)
    xml = ET.tostring(root, encoding="unicode")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, KEY, NS, metadata_flags(dom))
    return made


def in_directory(dom: libvirt.virDomain, directory: str) -> list[Made]:
    """The recorded files directly in ``directory`` that are still the files vshx made."""
    where = files.realpath(directory)
    return [
        m for m in read(dom) if files.realpath(os.path.dirname(m.path)) == where and still_made(m)
    ]


def named(dom: libvirt.virDomain) -> set[str] | None:
    """The files (canonical paths) the domain's definitions (as it runs, and the persistent
    one it boots next) and its snapshots name; None when one of them cannot be read."""
    try:
        found: set[str] = set()
        for disk in virt.every_defined_disk(dom):
            found |= {canonical(p) for p in [disk.source or "", *(b[0] for b in disk.backing)] if p}
        for handle in dom.listAllSnapshots(0):
            sources = ET.fromstring(handle.getXMLDesc(0)).iter("source")
            found |= {canonical(f) for node in sources if (f := node.get("file"))}
    except (VshxError, libvirt.libvirtError, ET.ParseError):
        return None
    return found


def leftovers(dom: libvirt.virDomain, paths: list[str]) -> tuple[list[Made], list[str]]:
    """For ``recover``: of the files an interrupted plan was to make (``paths``, as its journal
    says), those still the very files vshx recorded making that no definition or snapshot of
    the domain names (the plan stopped before switching to them: overlays that hold nothing),
    and a note for each other one that is there, saying why it is kept.  Nothing is taken on a
    guess: a file made in the moment between vshx's create and its record is only named."""
    records = {m.path: m for m in read(dom)}
    removable: list[Made] = []
    notes: list[str] = []
    names = named(dom)
    for path in paths:
        if not files.lexists(path):
            continue
        record = records.get(path)
        if names is None or canonical(path) in names:
            why = "the domain names it" if names is not None else "the domain's files unread"
            notes.append(f"kept {path}, which the interrupted plan made: {why}")
        elif record is None or not still_made(record):
            rm = shell_line(["rm", "--", path])
            notes.append(
                f"kept {path}: the interrupted plan was to make it, and vshx cannot prove that "
                f"this file is the one it made; if nothing uses it: {rm}"
            )
        elif not empty(path):
            notes.append(
                f"kept {path}, which the interrupted plan made: it holds data of its own "
                "(written since), or vshx cannot read its tables here"
            )
        else:
            removable.append(record)
    return removable, notes


def empty(path: str) -> bool:
    """A new overlay nothing has written since it was made: no cluster of its own (read on
    this machine only: a remote host's file cannot be proven so)."""
    return files.current().local and holds_nothing(path)


def removal_step(dom: libvirt.virDomain, record: Made, users: Callable[[], list[str]]) -> Step:
    """Remove the file of ``record`` (one of ``leftovers``), looking again first: while it is
    still that file, nothing of the domain names it and ``users()`` finds no other user."""

    def action() -> None:
        names = named(dom)
        found = users()
        mine = still_made(record) and empty(record.path)
        if names is None or canonical(record.path) in names or found or not mine:
            why = f"used by {'; '.join(found)}" if found else "named, written, or not vshx's file"
            raise VshxError(
                f"{record.path} was kept: {why}",
                "see: vshx chain, vshx snapshot-list",
                clean=True,
            )
        files.unlink(record.path)

    return Step(
        f"delete {os.path.basename(record.path)}: the interrupted plan made it, and nothing "
        "uses it (an overlay it never switched to)",
        ["rm", "-f", "--", record.path],
        action=action,
    )
