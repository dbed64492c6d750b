"""What a merge plan does to snapshots' moments: which it keeps, which it loses, and the record.

Every merge is, for the views of the disk's files, a list of writes ``(W, S)``: file ``W`` shows
what layer ``S`` showed before (a commit of ``S`` into ``W``; ``W`` is ``S`` for a pull or a
rebase, whose target keeps its own view).  A commit changes the view of ``W`` and of every layer
between ``W`` and ``S`` (their backing file changed), and moves ``S``'s moment into ``W``.  Layers
that leave the chain otherwise keep their view until they are deleted.  From that and the
snapshot timeline before the plan, the plan says ``# keeps:`` and ``# loses:``, refuses to lose
a moment that saved RAM goes with, and records the new verdicts for ``vshx.plans.ledger``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.plans import journal
from vshx.plans.ledger import record, record_argv
from vshx.plans.plan import Step, shell_line
from vshx.storage import definition, qemuimg, virt
from vshx.storage.chain import Chain, Layer, canonical
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import (
    GONE,
    INTACT,
    MERGED,
    NO_DISK,
    UNKNOWN,
    Moment,
    Read,
    Snapshot,
    Timeline,
    Verdict,
    read_timeline,
)
from vshx.storage.qcow2 import chain_paths
from vshx.storage.xml_text import xml_text

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target


def timeline_of(session: Session, target: Target) -> Timeline | None:
    """The target domain's timeline, read once per plan (None for a bare image or no snapshot)."""
    if target.dom is None:
        return None
    if target.timeline is None:
        known = {target.chain.disk or "": target.chain}
        target.timeline = read_domain_timeline(
            target.dom,
            known,
            snapshots=target.snapshots(),
            xml=target.xml,
            ledger=predicted_record(session, target.dom),
        )
    return target.timeline if target.timeline.snapshots else None


def predicted_record(
    session: Session, dom: libvirt.virDomain
) -> dict[tuple[str, int, str], Verdict] | None:
    """In a batch --dry-run, the record of moments the lines planned so far leave on ``dom``
    (their merges' verdicts, as each would write them); None: read the domain's own."""
    if not session.planning_ahead:
        return None
    verdicts = session.predicted_records.get(dom.name())
    return None if verdicts is None else {v.key: v for v in verdicts}


def read_domain_timeline(
    dom: libvirt.virDomain,
    known: dict[str, Chain],
    strict: bool = False,
    snapshots: Read | None = None,
    xml: str | None = None,
    ledger: dict[tuple[str, int, str], Verdict] | None = None,
) -> Timeline:
    """``dom``'s timeline; the chains of ``known`` disks as given, the others read when a
    snapshot covers them.  An unreadable chain makes its moments unknown, or, ``strict``
    (a command that changes metadata), refuses.  ``ledger``: the record of moments to judge
    by instead of the domain's (vshx.storage.moments.read_timeline)."""

    unread: dict[str, str] = {}
    read: list[str] = []  # the domain's XML, read once for every disk's chain

    def domain_xml() -> str:
        if not read:
            read.append(xml if xml is not None else dom.XMLDesc(0))
        return read[0]

    def chain_of(disk: str) -> Chain | None:
        if disk in known:
            return known[disk]
        failed: VshxError | None = None
        try:
            chain: Chain = virt.domain_chain(dom, disk, definition=False, xml=domain_xml())
        except VshxError as exc:
            failed = exc
        else:
            defined = virt.find_disk(dom, disk, domain_xml()).format
            if not defined or chain.active.format == defined or chain.live:
                return chain
        # the active layer may be what cannot be read (missing, a damaged header): the
        # moments below it are judged on the chain the definition names, where the headers
        # below it agree (virt.chain_past_active)
        try:
            past = virt.chain_past_active(dom, disk, domain_xml())
        except VshxError:
            past = None
        if past is None and failed is None:
            return chain  # the definition's format aside, the active layer reads as it is
        if isinstance(past, virt.PastActive) and not strict:
            return past.chain
        why = past if isinstance(past, str) else past.why if past is not None else None
        if why is None:
            why = failed.message if failed is not None else "its chain cannot be read"
        if strict:
            raise VshxError(
                f"cannot read the chain of {dom.name()} disk {disk}: {why}",
                "no snapshot is judged while a chain is unreadable; repair or restore the "
                "layer (qemu-img check), then run the command again",
            ) from failed
        if failed is not None and "has no disk" in failed.message:
            why = NO_DISK
        unread[disk] = why
        return None  # judged unknown: a moment is never taken as intact unread

    return read_timeline(dom, chain_of, snapshots, xml, ledger, unread)


class Loss(NamedTuple):
    """Why a plan loses a moment; ``below``: only because a file the holder's view reads
    through (below it) changes or is deleted, not the holder itself (Verdict.below)."""

    why: str
    below: bool = False


def after_writes(
    moment: Moment, chain: Chain, writes: list[tuple[Layer, Layer]]
) -> tuple[Moment, Loss | None]:
    """The moment after the writes: (new moment, why it is lost or None)."""
    if not moment.kept or moment.holder is None:
        return moment, None
    holder = canonical(moment.holder)
    in_chain = any(layer.canonical == holder for layer in chain.layers)
    for written, shows in writes:
        if written.canonical == shows.canonical:
            continue  # a pull/rebase into ``written``: its view stays what it was
        if not in_chain and holder != shows.canonical and reads_through(holder, written):
            if shadowed(holder, shows, written):
                continue  # every cluster the commit writes is read from ``shows`` first
            why = f"{os.path.basename(holder)} reads through {written.name}, which changes"
            return moment, Loss(why, below=True)
        low, high = shows.position, written.position  # active first: shows sits above
        changed = {layer.canonical for layer in chain.layers[low + 1 : high + 1]}
        if holder == shows.canonical and shows.position > 0:
            moment = moment._replace(state=MERGED, holder=written.path, in_chain=True)
            holder = written.canonical
            moment = moment._replace(why=f"{shows.name} was committed into {written.name}")
        elif holder in changed:
            if holder == written.canonical:
                return moment, Loss(f"{written.name} takes in {shows.name}")
            return moment, Loss(f"{os.path.basename(holder)} sits on {written.name}, which changes")
    return moment, None


def shadowed(path: str, shows: Layer, written: Layer) -> bool:
    """``path``'s view reads the commit's top ``shows`` (and so every layer between it and
    ``written``: its backing chain) before ``written``: the commit writes into ``written``
    only clusters those layers hold, and keeps them (``qemu-img commit -b`` implies ``-d``,
    a block commit empties nothing), so that view does not change.  False when unreadable."""
    try:
        paths = chain_paths(path)
    except VshxError:
        return False  # cannot tell: counted as changed, never as kept
    if shows.canonical not in paths or written.canonical not in paths:
        return False
    return paths.index(shows.canonical) < paths.index(written.canonical)


def moments_reading(snapshots: list[Snapshot], chain: Chain, changed: list[Layer]) -> list[str]:
    """Kept moments held outside ``chain`` (a branch a revert left, files a pull took out)
    whose files read one of ``changed`` (files a plan writes or deletes) in their backing
    chains: ``SNAP (DISK: FILE reads through LAYER)``, one per moment.  Such a moment would
    change under the plan; one whose file cannot be read counts too (fail closed)."""
    inside = {layer.canonical for layer in chain.layers}
    found = []
    for snap in snapshots:
        for disk, moment in snap.moments.items():
            if not moment.kept or not moment.holder or canonical(moment.holder) in inside:
                continue
            for layer in changed:
                if reads_through(moment.holder, layer):
                    name = os.path.basename(moment.holder)
                    found.append(f"{snap.name} ({disk}: {name} reads through {layer.name})")
                    break
    return found


def reads_through(path: str, layer: Layer) -> bool:
    """``path``'s view reads ``layer`` (its backing chain names it); True when unreadable."""
    try:
        return layer.canonical in chain_paths(path)
    except VshxError:
        return True  # cannot tell: counted as changed, never as kept


def snapshots_held_in(session: Session, target: Target, layers: list[Layer]) -> list[str]:
    """The snapshots whose moment on the target's disk one of ``layers`` holds now (intact or
    merged there): what a route that overwrites or removes those files loses, where one
    leaving them as they are keeps it (flatten's commit and pull)."""
    timeline = timeline_of(session, target)
    if timeline is None:
        return []
    files = {layer.canonical for layer in layers}
    return [
        snap.name
        for snap, moment in timeline.on_disk(target.chain.disk or "")
        if moment.kept and moment.holder and canonical(moment.holder) in files
    ]


def account(
    session: Session,
    target: Target,
    plan: Plan,
    deleted: list[str] | None = None,
) -> None:
    """Add ``# keeps:``/``# loses:`` to ``plan`` (from ``plan.writes``, ``plan.after`` and the
    files it ``deleted``), refuse losing a memory snapshot's moment, and set the verdicts the
    plan records when it completes."""
    timeline = timeline_of(session, target)
    if timeline is None or plan.after is None:
        return
    chain, disk = target.chain, target.chain.disk or ""
    after = {layer.canonical for layer in plan.after.layers}
    removed = {canonical(path) for path in deleted or []}
    keeps: list[str] = []
    loses: list[str] = []
    unknown: list[str] = []
    verdicts: list[Verdict] = []
    undeleted: list[Verdict] = []  # as they stand before its rm steps: what recover records
    for snap, moment in timeline.on_disk(disk):
        if moment.state == UNKNOWN:
            moving = moves_unproven(moment, plan.writes)
            unknown.append(f"{snap.name} ({moment.why}{moving})")
            held = unknown_after(target, snap, moment, moving, removed)
            if held is not None:
                if held.state == GONE:
                    loses.append(f"{snap.name} ({held.why})")
                verdicts.append(held)
                undeleted.append(held)
            continue
        if moment.state == GONE:
            continue
        new, lost = after_writes(moment, chain, plan.writes)
        kept = Verdict(
            snap.name, snap.created, disk, new.state, new.holder, new.why, "", moment.file
        )
        deleted_only = lost is None and bool(new.holder) and canonical(new.holder or "") in removed
        if deleted_only:
            lost = Loss(f"{os.path.basename(new.holder or '')} is deleted")
        elif lost is None and new.holder and removed and canonical(new.holder) not in after:
            below = reads_removed(new.holder, removed)
            if below:
                why = f"{os.path.basename(new.holder)} reads through {below}, which is deleted"
                lost = Loss(why, below=True)  # (or its chain is unreadable: fail closed)
        if lost is not None:
            refuse_losing_memory(target, snap, lost.why)
            loses.append(f"{snap.name} ({lost.why})")
            gone = Verdict(
                snap.name, snap.created, disk, GONE, None, lost.why, "", moment.file, lost.below
            )
            verdicts.append(gone)
            undeleted.append(kept if deleted_only else gone)
            continue
        assert new.holder is not None
        in_chain = canonical(new.holder) in after
        where = os.path.basename(new.holder)
        if new.state == MERGED and moment.state == INTACT:
            keeps.append(f"{snap.name} (moves into {where})")
        else:
            keeps.append(f"{snap.name} ({where}{'' if in_chain else ', out of the chain'})")
        verdicts.append(kept)
        undeleted.append(kept)
    suffix = f" on {disk}" if any(len(s.moments) > 1 for s in timeline.snapshots) else ""
    plan.keeps = [f"keeps{suffix}: {', '.join(keeps) or 'no snapshot'}"]
    plan.keeps.append(f"loses{suffix}: {', '.join(loses) or 'no snapshot'}")
    if unknown:
        plan.keeps.append(f"unknown{suffix}: {', '.join(unknown)}")
    losing = {v.snapshot for v in verdicts if v.state == GONE}
    plan.losing = sorted(losing)
    plan.notes += half_merge_notes(target, timeline, losing)
    plan.notes += leaving_note(verdicts, after)
    plan.verdicts = verdicts
    plan.undeleted = undeleted


def unknown_after(
    target: Target, snap: Snapshot, moment: Moment, moving: str, removed: set[str]
) -> Verdict | None:
    """What the plan records of a moment vshx could not judge before it, where its files
    change (atk10 F1): moved by a commit (``moving``), it stays unknown, in the record, so
    that the deletion of its old file does not make it "gone" (the moved view may hold it);
    deleted, or read through a deleted file, and not moved, it is gone whatever it was (a
    memory snapshot's is refused, as for a moment vshx knew).  None: the plan leaves it as
    the files show it."""
    file = moment.file or ""
    if not file:
        return None
    name = os.path.basename(file)
    if moving:
        why = f"{moment.why}{moving}"
        return Verdict.unknown(snap, moment.disk, why, file)
    below = reads_removed(file, removed) if canonical(file) not in removed else ""
    if canonical(file) not in removed and not below:
        return None
    why = f"{name} is deleted" if not below else f"{name} reads through {below}, which is deleted"
    refuse_losing_memory(target, snap, why)
    return Verdict(snap.name, snap.created, moment.disk, GONE, None, why, "", file, bool(below))


def unproven_step(session: Session, target: Target, entry: journal.Entry) -> Step | None:
    """For ``recover`` of a plan that did not complete (no record of its own to write): the
    moments held in, or read through, a file its data steps were writing (atk11 F1: a kill
    moments after ``qemu-img commit`` started; the file's times may still fall within the
    snapshot's own settling window) recorded ``unknown``, so that nothing later takes them
    for intact, and nothing forgets them either.  None when no judged moment is there."""
    paths = journal.written(entry)
    timeline = timeline_of(session, target)
    if not paths or timeline is None or target.dom is None:
        return None
    keys = {canonical(p) for p in paths}
    disk = target.chain.disk or ""
    verdicts = []
    for snap, moment in timeline.on_disk(disk):
        if moment.state not in (INTACT, MERGED) or not moment.holder:
            continue
        try:
            view = {canonical(p) for p in chain_paths(moment.holder)}
        except VshxError:
            view = {canonical(moment.holder)}
        hit = sorted(view & keys)
        if hit:
            name = os.path.basename(hit[0])
            why = f"vshx's interrupted merge was writing {name}: not proven since"
            verdicts.append(Verdict.unknown(snap, disk, why, moment.file))
    if not verdicts:
        return None
    names = ", ".join(v.snapshot for v in verdicts)

    def action() -> None:
        record(target, verdicts)

    return Step(
        f"record {names} unknown: the interrupted merge was writing their files (vshx's ledger)",
        record_argv(session.uri, target, verdicts),
        action=action,
        here=True,
    )


def reads_removed(path: str, removed: set[str]) -> str:
    """The first file of ``path``'s backing chain that a plan deletes ("" when none; the
    file itself when its chain cannot be read: fail closed)."""
    try:
        paths = chain_paths(path)
    except VshxError:
        return os.path.basename(path)
    return next((os.path.basename(p) for p in paths[1:] if p in removed), "")


def moves_unproven(moment: Moment, writes: list[tuple[Layer, Layer]]) -> str:
    """``; moves into W, still unknown`` for an unknown moment whose file a commit moves: a
    plan moves only what was there, it proves nothing (no record says more after it)."""
    key = canonical(moment.file or "")
    into = [w.name for w, s in writes if s.canonical == key and w.canonical != key]
    return f"; moves into {into[-1]}, still unknown" if into else ""


def leaving_note(verdicts: list[Verdict], after: set[str]) -> list[str]:
    """Moments a plan leaves in files out of the chain: revertible only while those stay, and
    the classic mistake of judging snapshots by the overlay they created."""
    out = [v for v in verdicts if v.state != GONE and v.holder and canonical(v.holder) not in after]
    if not out:
        return []
    names = ", ".join(v.snapshot for v in out)
    files = ", ".join(sorted({os.path.basename(v.holder or "") for v in out}))
    first = out[0]
    return [
        f"{names} {'stays' if len(out) == 1 else 'stay'} revertible only in {files}, out of "
        "the chain (snapshot-cleanup --delete-files forgets those snapshots and removes those of "
        "the files that vshx's record vouches for and nothing else uses). A snapshot is its "
        f"moment, not the overlay it created: {first.snapshot} goes with "
        f"{os.path.basename(first.holder or '')}, the file that holds its moment"
    ]


def refuse_losing_memory(target: Target, snap: Snapshot, lost: str) -> None:
    """Saved RAM goes with its disk moment: a plan that destroys that moment is refused."""
    if not snap.has_memory:
        return
    assert target.dom is not None
    name = target.dom.name()
    raise VshxError(
        f"snapshot {snap.name} of {name} holds memory state; this plan destroys its disk moment "
        f"({lost}), so reverting to it would pair its RAM with other disk contents",
        f"delete that snapshot first ({shell_line(['virsh', 'snapshot-delete', name, snap.name])}"
        "), or merge so that its moment is kept",
    )


def half_merge_notes(target: Target, timeline: Timeline, losing: set[str]) -> list[str]:
    """Snapshots that also cover other disks, whose moment there this plan leaves in place."""
    disk = target.chain.disk or ""
    notes = []
    for snap in timeline.snapshots:
        if snap.name not in losing:
            continue
        others = [d for d, m in snap.moments.items() if d != disk and m.state != GONE]
        if others:
            notes.append(
                f"snapshot {snap.name} also covers {', '.join(others)}: its moment stays there, "
                f"so it is half-merged afterwards (snapshot-cleanup reports it; merge the same "
                f"layers of {', '.join(others)} to finish)"
            )
    return notes


def domain_timeline(session: Session, dom: libvirt.virDomain, strict: bool = False) -> Timeline:
    """A domain's timeline against every disk's chain (a batch --dry-run's predicted ones)."""
    known = {c.disk or "": c for c in session.predicted.values() if c.domain == dom.name()}
    timeline = read_domain_timeline(dom, known, strict, ledger=predicted_record(session, dom))
    if timeline.snapshots and dom.isActive():
        writing = {str(j["disk"]): str(j["type"]) for j in virt.block_jobs(dom)}
        for snap in timeline.snapshots:
            for disk, moment in list(snap.moments.items()):
                kind = writing.get(disk, "")
                if kind.endswith("commit") and moment.kept and moment.in_chain:
                    why = f"a block {kind} job runs on {disk}: it writes the files of its chain"
                    snap.moments[disk] = moment._replace(state=UNKNOWN, why=why)
    return timeline


def repointed_xml(
    snap: Snapshot,
    formats: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
    moments: bool = True,
    in_chains: set[str] | None = None,
) -> str | None:
    """The snapshot's XML naming, for each disk, the file that shows its moment now; None
    when every disk already names it.  ``formats``: canonical path -> format, as the chains
    read them (else the file's header says).  ``aliases``: ``DISK:canonical path`` -> the file
    other snapshots' moments in that file were merged into (that file left the chain): a disk
    this snapshot did not cover (``snapshot='no'``) still names the file that was active then
    and, like libvirt, names the file that holds its content instead; every disk's
    ``<backingStore>`` chain loses such files, as libvirt's own snapshot-delete splices them
    out, below the files of the disks' chains (``in_chains``, canonical paths; a file out of
    them still names them in its header).  ``moments=False``: only those changes (a snapshot
    kept as it is, whose own moments stay named where they are)."""
    root = ET.fromstring(snap.xml)
    changed = False
    aliases = aliases or {}
    disks = root.findall("./domain/devices/disk") + root.findall("./inactiveDomain/devices/disk")
    for disk in disks:
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        moment = snap.moments.get(dev)
        source = disk.find("source")
        if source is None:
            continue
        now = None
        if moment is None:
            now = aliases.get(f"{dev}:{canonical(source.get('file') or '')}")
        elif moments and moment.state == MERGED and moment.holder:
            now = moment.holder
        if now is not None and source.get("file") != now:
            repoint_disk(disk, now, formats or {})
            changed = True
            continue
        gone = {key.split(":", 1)[1] for key in aliases if key.startswith(f"{dev}:")}
        changed = splice_backing(disk, gone, in_chains) or changed
    return xml_text(root, snap.xml) if changed else None


def splice_backing(disk: ET.Element, gone: set[str], rewritten: set[str] | None = None) -> bool:
    """Take the ``gone`` files (canonical paths) out of a ``<disk>``'s ``<backingStore>``
    chain, the entries below them moved up; True when one was there.  ``rewritten``: the
    files whose headers the plan rewrites (the layers of the disk's chain); a gone file below
    any other file stays, as that file's header still names it (nu14 #2: a pull left files out
    of the chain reading through it, and their snapshots' definitions lost it)."""
    changed = False
    holder = disk
    node = holder.find("backingStore")
    while node is not None:
        below = node.find("source")
        above = holder.find("source")
        kept_by_header = (
            rewritten is not None
            and above is not None
            and canonical(above.get("file") or "") not in rewritten
        )
        if below is not None and canonical(below.get("file") or "") in gone and not kept_by_header:
            at = list(holder).index(node)
            holder.remove(node)
            for child in node.findall("backingStore"):
                holder.insert(at, child)
            changed = True
            node = holder.find("backingStore")
            continue
        holder, node = node, node.find("backingStore")
    return changed


def merged_aliases(timeline: Timeline) -> dict[str, str]:
    """``DISK:canonical moment file`` -> the file a commit moved that moment into, for every
    merged moment of ``timeline`` (for ``repointed_xml``'s disks a snapshot did not cover)."""
    found = {}
    for snap in timeline.snapshots:
        for disk, moment in snap.moments.items():
            if moment.state == MERGED and moment.holder and moment.file:
                found[f"{disk}:{canonical(moment.file)}"] = moment.holder
    return found


def repoint_disk(disk: ET.Element, path: str, formats: dict[str, str]) -> None:
    """Make a snapshot ``<domain>``'s ``<disk>`` name ``path`` as libvirt's own snapshot-delete
    does: no ``index``, no ``<backingStore>`` (libvirt reads the new file's chain itself), and
    the driver type of the file now named, never the old file's (a qcow2 overlay committed
    into a raw base leaves ``type='qcow2'`` on a raw file: QEMU refuses to open it).
    ``formats``: canonical path -> format, as the disk's chain reads it; else the header."""
    source = disk.find("source")
    assert source is not None
    source.attrib.pop("index", None)
    definition.name_source(disk, source, path)
    for below in disk.findall("backingStore"):
        disk.remove(below)
    fmt = formats.get(canonical(path)) or format_of(path)
    driver = disk.find("driver")
    if fmt and driver is not None:
        driver.set("type", fmt)


def format_of(path: str) -> str | None:
    """A file's format as qemu-img reads it (a qcow2 header is certain; else probed), None when
    it cannot be read (the entry keeps the type it had)."""
    try:
        fmt = qemuimg.info_chain(path)[0].get("format")
    except (VshxError, OSError, ValueError, IndexError):
        return None
    return str(fmt) if fmt else None


def finish_command(timeline: Timeline, snap: Snapshot, domain: str) -> str | None:
    """The layer command that does, on the disks where ``snap``'s moment stays, what a merge
    did on the disk where it is gone (the same moments merged); None when vshx cannot tell."""
    gone = [d for d, m in snap.moments.items() if m.state == GONE and m.file]
    kept = [d for d, m in snap.moments.items() if m.kept and m.holder]
    if not gone or not kept:
        return None
    where = snap.moments[gone[0]].file or ""
    into = timeline.holding(gone[0], where)
    lines = []
    for disk in kept:
        base = snap.moments[disk].holder or ""
        if into:
            other = into[-1].moments.get(disk)
            if other is None or not other.kept or not other.holder:
                return None
            argv = ["vshx", "commit", domain, disk, "--top", other.holder, "--base", base]
        else:
            argv = ["vshx", "commit", domain, disk, "--base", base, "--active", "--pivot"]
        lines.append(shell_line(argv))
    return "; ".join(lines)
