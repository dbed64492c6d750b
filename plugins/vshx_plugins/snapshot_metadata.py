"""snapshot-delete, after the merges: the remaining snapshots re-pointed at the files that
hold their moments and re-parented, the deleted ones' metadata dropped, the definition,
merged-away files and memory state."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vshx.api import (
    Layer,
    Plan,
    Session,
    Snapshot,
    Step,
    canonical,
    definition_steps,
    delete_steps,
    forget_step,
    libvirt,
    memory_steps,
    redefine_step,
    repoint_disk,
    splice_backing,
    xml_text,
)
from vshx.api import (
    files as api_files,
)
from vshx_plugins.snapshot_layers import DiskWork, layer_at


def moment_files(snap: Snapshot, works: dict[str, DiskWork]) -> dict[str, str]:
    """Per disk, the file that holds ``snap``'s moment after the merges, where its metadata
    names another (a moment the merges move, or one an earlier merge moved: a diverged
    snapshot is re-pointed to the file vshx can prove holds it)."""
    found = {}
    for disk, moment in snap.moments.items():
        work = works.get(disk)
        moves = work.moves if work is not None else {}
        if moment.file and canonical(moment.file) in moves:
            now = moves[canonical(moment.file)]  # the metadata names a layer that goes
        elif moment.kept and moment.holder:
            now = moves.get(canonical(moment.holder), moment.holder)
        else:
            continue
        if canonical(now) != canonical(moment.file or ""):
            found[disk] = now
    return found


def removed_now(works: dict[str, DiskWork]) -> dict[str, str]:
    """``DISK:canonical path`` -> the file that holds its content after the merges, for every
    layer the plan removes: a commit's base, or the active layer a pull copied it into."""
    found = {}
    for disk, work in works.items():
        for layer in work.removed:
            now = work.moves.get(layer.canonical)
            if now is None and work.route == "pull" and work.top is not None:
                now = work.top.path
            if now is not None:
                found[f"{disk}:{layer.canonical}"] = now
    return found


def chain_formats(works: dict[str, DiskWork]) -> dict[str, str]:
    """Canonical path -> format of every layer of the disks the plan reads."""
    return {
        layer.canonical: layer.format
        for work in works.values()
        for layer in work.target.chain.layers
        if layer.format
    }


def redefined_xml(
    snap: Snapshot, works: dict[str, DiskWork], parent: str | None, reparent: bool
) -> str | None:
    """``snap``'s XML naming, on each disk, the file that holds its moment after the merges,
    without the removed layers in its ``<backingStore>`` chains, and (``reparent``) with
    ``parent`` as its parent; None when nothing changes.  A disk whose source names a removed
    layer without a moment there (``snapshot='no'``: the file that was active then) names the
    file that holds that layer's content now, as libvirt's own snapshot-delete re-points it;
    every re-pointed disk gets the new file's format as its driver type."""
    root = ET.fromstring(snap.xml)
    changed = False
    files = moment_files(snap, works)
    removed = removed_now(works)
    formats = chain_formats(works)
    for scope in ("domain", "inactiveDomain"):
        for disk in root.findall(f"./{scope}/devices/disk"):
            target = disk.find("target")
            dev = target.get("dev", "") if target is not None else ""
            source = disk.find("source")
            now = files.get(dev)
            if source is not None and now is None:
                now = removed.get(f"{dev}:{canonical(source.get('file') or '')}")
            if source is not None and now is not None:
                repoint_disk(disk, now, formats)
                changed = True
                continue
            work = works.get(dev)
            if work is not None and work.removed:
                gone = {layer.canonical for layer in work.removed}
                rewritten = {layer.canonical for layer in work.target.chain.layers}
                changed = splice_backing(disk, gone, rewritten) or changed
    for disk in root.findall("./disks/disk"):
        work = works.get(disk.get("name", ""))
        source = disk.find("source")
        if work is None or work.route != "pull" or work.top is None or source is None:
            continue
        if canonical(source.get("file") or "") in {canonical(p) for p in work.files}:
            source.set("file", work.top.path)  # its overlay is now the layer that sits on it
            changed = True
    if reparent:
        node = root.find("parent")
        if node is not None:
            root.remove(node)
        if parent is not None:
            new = ET.Element("parent")
            ET.SubElement(new, "name").text = parent
            root.insert(2, new)
        changed = True
    return xml_text(root, snap.xml) if changed else None


def nearest_kept(parents: dict[str, str | None], name: str | None) -> str | None:
    """The nearest ancestor that stays (``parents``: the deleted snapshots' parents)."""
    seen = set()
    while name is not None and name in parents and name not in seen:
        seen.add(name)
        name = parents[name]
    return name


def finish_steps(
    session: Session,
    dom: libvirt.virDomain,
    remaining: list[Snapshot],
    gone: list[tuple[str, str | None, str | None]],
    works: dict[str, DiskWork],
    notes: list[str] | None = None,
    recovering: bool = False,
) -> list[Step]:
    """After the merges: the definition (offline), the remaining snapshots re-pointed and
    re-parented, the deleted ones' metadata dropped, merged-away files and memory removed
    (``notes``: where to say which memory files stay, and who names them).  ``recovering``: a
    roll-forward from the journal, which refuses a paused domain (a plan of its own keeps the
    files it cannot have flushed, with a warning)."""
    steps: list[Step] = []
    moving = [w for w in works.values() if w.files]
    for work in moving:
        sub = Plan("definition", target=work.target)
        sub.before = work.target.chain
        sub.after = work.target.chain.without(work.removed)
        steps += definition_steps(session, work.target, sub)
    parents = {name: parent for name, parent, _memory in gone}
    existing = set(dom.snapshotListNames(0))
    for other in remaining:
        parent = nearest_kept(parents, other.parent)
        if parent is not None and parent not in existing:
            parent = None  # deleted by someone else meanwhile: a root, as libvirt would make it
        reparent = other.parent in parents
        xml = redefined_xml(other, works, parent, reparent)
        if xml is not None:
            why = "names the files that hold its moment now"
            if reparent:
                why += f", parent {parent or '(none)'}"
            steps.append(redefine_step(session, dom, other, xml, why))
    for name, _parent, _memory in reversed(gone):  # children first: each is a leaf then
        if name in existing:
            # deleted because the user asked (the snapshot, or a child of it with --children):
            # its moment may well live on in a file kept out of the chain (a note says which)
            why = "the snapshot this command deletes"
            steps.append(forget_step(session, dom, name, why))
    for work in moving:
        files = []
        for path in work.files:
            layer = layer_at(work.target, path)
            if layer is None and api_files.exists(path):
                layer = Layer(path, "", -1, allocated=api_files.stat(path).st_blocks * 512)
            if layer is not None:
                files.append(layer)
        steps += delete_steps(
            session,
            files,
            work.target.chain,
            refuse_paused=recovering,
        )
    removals, kept = memory_steps(session, dom, [(name, memory) for name, _p, memory in gone])
    if notes is not None:
        notes += kept
    return steps + removals
