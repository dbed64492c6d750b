"""Snapshots as points in time: for each snapshot and each disk, which file shows its moment now.

A disk-only external snapshot freezes, on every disk it covers, the file that was active (the
disk's source in the snapshot's ``<domain>`` block: its *moment file*) and puts a new overlay on
it (the source in its ``<disks>`` block).  Merges move, keep or destroy those moments; libvirt's
metadata does not follow them.  This module reads the snapshot tree once and judges each moment:

- ``intact``: a file still shows exactly that moment (in the disk's chain, or, after a pull,
  out of it but unchanged),
- ``merged``: a commit moved it into another file, which shows it now (``holder``),
- ``gone``: no file shows it any more,
- ``unknown``: vshx cannot prove either (changed by a tool it has no record of): never taken
  as intact.

The proof comes from the chains (the overlay a snapshot made still sits on its moment file: no
commit can have written into that file, since a commit into a file always takes the layer right
above it out) and from vshx's own record of what its merges did (the ledger, kept in the domain's
metadata; see vshx.plans.ledger), checked against the files as they are now.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage import qcow2, virt
from vshx.storage.chain import Blurred, canonical, is_json_name, readings, refuse_blurred_names
from vshx.storage.identity import birth_ns
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from collections.abc import Callable

    from vshx.storage.background import Background
    from vshx.storage.chain import Chain

LEDGER_NS = "https://vshx.invalid/moments"
LEDGER_KEY = "vshxm"

INTACT, MERGED, GONE, UNKNOWN = "intact", "merged", "gone", "unknown"


class Moment(NamedTuple):
    """One snapshot's point in time on one disk, and where it is now."""

    disk: str
    file: str | None  # the moment file the metadata names (<domain> disk source)
    overlay: str | None  # the overlay the snapshot created (<disks> source); None if internal
    state: str = UNKNOWN
    holder: str | None = None  # the file that shows the moment now (intact or merged)
    why: str = ""
    in_chain: bool = False  # the holder is one of the disk's current layers
    internal: bool = False  # a qcow2 internal snapshot inside ``file``
    # gone only because a file its view reads through (below it) was written or deleted by a
    # merge: its own bytes may still be the moment's (as vshx's record says: Verdict.below)
    below: bool = False

    @property
    def kept(self) -> bool:
        return self.state in (INTACT, MERGED)

    def describe(self) -> str:
        """``sn1.qcow2 (intact)``, ``now in base.qcow2 (merged)``, ``gone (...)``."""
        if self.state == INTACT:
            where = "" if self.in_chain else ", out of the chain"
            return f"{os.path.basename(self.holder or '')} (intact{where})"
        if self.state == MERGED:
            return f"now in {os.path.basename(self.holder or '')} (merged)"
        return f"{self.state} ({self.why})" if self.why else self.state


class Snapshot(NamedTuple):
    """A libvirt snapshot with its moment on every disk it covers."""

    name: str
    parent: str | None
    created: int
    state: str
    memory: str  # "no", "internal" or "external" (saved RAM goes with its disk moments)
    memory_file: str | None
    current: bool
    xml: str
    moments: dict[str, Moment]  # filled in as the disks are read

    @property
    def has_memory(self) -> bool:
        return self.memory in ("internal", "external") or self.state not in (
            "disk-snapshot",
            "shutoff",
        )

    @property
    def gone_everywhere(self) -> bool:
        return bool(self.moments) and all(m.state == GONE for m in self.moments.values())

    @property
    def state_unknown(self) -> bool:
        """vshx cannot tell where the moment is on some disk."""
        return any(m.state == UNKNOWN for m in self.moments.values())

    @property
    def half_merged(self) -> bool:
        """Gone on some disk but still kept (or unknown) on another."""
        states = {m.state for m in self.moments.values()}
        return GONE in states and len(states) > 1


class Verdict(NamedTuple):
    """What vshx recorded after one of its own plans about one snapshot's moment on one disk."""

    snapshot: str
    created: int
    disk: str
    state: str
    holder: str | None
    why: str
    stamp: str = (
        ""  # when vshx recorded it (ns): a file of the holder's chain written later voids it
    )
    named: str | None = None  # the file the metadata named then: redefined since voids it
    # gone only because a file its holder's view reads through (below it) was written or
    # deleted by the plan, not its own file: its own bytes may still be the moment's
    below: bool = False

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.snapshot, self.created, self.disk)

    @classmethod
    def unknown(cls, snap: Snapshot, disk: str, why: str, named: str | None) -> Verdict:
        """A moment vshx cannot vouch for (held nowhere it can prove): kept by every command."""
        return cls(snap.name, snap.created, disk, UNKNOWN, None, why, "", named)

    @classmethod
    def from_json(cls, saved: dict[str, object]) -> Verdict:
        """A verdict as a journal saved it (``_asdict``); one saved before ``below`` existed
        reads it from its reason (``older_below``).  TypeError when it is not a verdict."""
        fields = dict(saved)
        if "below" not in fields:
            fields["below"] = older_below(str(fields.get("why", "")))
        return cls(**fields)  # type: ignore[arg-type]


# libvirt records a snapshot's creation in whole seconds, before QEMU's last flush of the file
# it freezes; a write later than this after the moment is a change (after vshx's own record,
# which follows the plan's last write, any write is: ``recorded``)
SETTLE_NS = 3 * 10**9
# where the snapshot's own overlay says when it was made (statx birth, in ns), the frozen
# file's last write by QEMU follows that within the snapshot's transaction: a write later than
# this after the overlay's birth is a change (a tighter window than whole seconds allow)
OVERLAY_SETTLE_NS = 10**9


# the image host's clock, as a command there prints it (a printed script runs it too)
CLOCK = ["date", "+%s%N"]


def stamp() -> str:
    """When vshx records a verdict (ns): a file of the holder's chain written later voids it.
    By the clock of the host that holds the files, whose write times are by that clock (a
    remote host's may differ from this machine's); "" (proves nothing) when it cannot tell."""
    host = files.current()
    if host.local:
        import time

        return str(time.time_ns())
    import subprocess

    try:
        said = subprocess.run(
            host.runnable(CLOCK), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    digits = said.stdout.strip()
    return digits if said.returncode == 0 and digits.isdigit() else ""


def unchanged_since(path: str, limit_ns: int, settle_ns: int = SETTLE_NS) -> bool:
    """The file and every file its view reads (backing chain, data files) were last written no
    later than ``limit_ns`` (+ ``settle_ns``); False when that cannot be read (fail closed)."""
    try:
        paths = qcow2.chain_paths(path)
        return all(files.stat(f).st_mtime_ns <= limit_ns + settle_ns for f in paths)
    except (OSError, VshxError):
        return False


def frozen_until(snap: Snapshot, overlay: str) -> int:
    """The latest time (ns) a snapshot's frozen file may have been written by the snapshot
    itself: its creation (whole seconds) + SETTLE_NS, or, tighter, its overlay's birth +
    OVERLAY_SETTLE_NS where the overlay was made by it (born no earlier than the snapshot)."""
    created = snap.created * 10**9
    latest = created + SETTLE_NS
    born = birth_ns(overlay, files.current().local)
    if born is not None and born >= created:
        latest = min(latest, born + OVERLAY_SETTLE_NS)
    return latest


# how a record older than ``Verdict.below`` said so: only in its reason's text
# (vshx.merging.moments: "X reads through W, which changes" / "..., which is deleted")
OLDER_BELOW_TEXT = " reads through "


def older_below(why: str) -> bool:
    """``Verdict.below`` of a record written before vshx recorded it: read from the reason's
    text, as vshx did then (fail closed: nothing older is deleted on a guess)."""
    return OLDER_BELOW_TEXT in why


def read_ledger(
    dom: libvirt.virDomain, xml: str | None = None
) -> dict[tuple[str, int, str], Verdict]:
    """vshx's record of what its merges did to this domain's moments (empty when none, and
    when it was written for another domain: a clone's copy vouches for nothing here, so its
    moments are judged from the files alone, unknown where they prove nothing).  ``xml``: the
    domain's ``XMLDesc(0)`` read just now (its metadata is the record; one round trip fewer)."""
    if xml is not None:
        root = virt.metadata_in(xml, LEDGER_NS)
        if root is None:
            return {}
        moment = f"{{{LEDGER_NS}}}moment"
    else:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, LEDGER_NS, 0)
        except libvirt.libvirtError:
            return {}
        root, moment = ET.fromstring(text), "moment"
    if root.get("uuid") and root.get("uuid") != dom.UUIDString():
        return {}  # copied with the definition from another domain (a clone): not this one's
    found = {}
    for node in root.findall(moment):
        why, below = node.get("why", ""), node.get("below")
        try:
            verdict = Verdict(
                node.get("snapshot", ""),
                int(node.get("created", "0")),
                node.get("disk", ""),
                node.get("state", UNKNOWN),
                node.get("holder"),
                why,
                node.get("stamp", ""),
                node.get("named"),
                older_below(why) if below is None else below == "yes",
            )
        except ValueError:
            continue
        found[verdict.key] = verdict
    return found


def ledger_xml(verdicts: list[Verdict], uuid: str = "") -> str:
    """The record's XML; ``uuid``: the domain's it is written for."""
    root = ET.Element("moments", {"uuid": uuid} if uuid else {})
    for v in verdicts:
        attrs = {
            "snapshot": v.snapshot,
            "created": str(v.created),
            "disk": v.disk,
            "state": v.state,
            # a name's byte that is not UTF-8 shown as \xff: libvirt keeps UTF-8 text only
            "why": v.why.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
            "stamp": v.stamp,
            "below": "yes" if v.below else "no",
        }
        if v.holder:
            attrs["holder"] = v.holder
        if v.named:
            attrs["named"] = v.named
        ET.SubElement(root, "moment", attrs)
    return ET.tostring(root, encoding="unicode")


def _source(node: ET.Element | None) -> str | None:
    if node is None:
        return None
    src = node.find("source")
    if src is None:
        return None
    return src.get("file") or src.get("dev")


def parse_snapshot(xml: str, current: bool) -> Snapshot:
    """One snapshot's XML: name, parent, memory state, and per disk its moment file/overlay
    (refused where a disk's file name has a line break or tab: chain.refuse_blurred_names)."""
    refuse_blurred_names(xml, "a snapshot of this domain")
    return _snapshot(xml, current)


def _snapshot(xml: str, current: bool) -> Snapshot:
    """``parse_snapshot`` of one reading of the XML (chain.readings), nothing refused."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    snap = Snapshot(
        root.findtext("name") or "",
        root.findtext("./parent/name"),
        int(root.findtext("creationTime") or 0),
        root.findtext("state") or "",
        memory.get("snapshot", "no") if memory is not None else "no",
        memory.get("file") if memory is not None else None,
        current,
        xml,
        {},
    )
    files: dict[str, str | None] = {}
    for disk in root.findall("./domain/devices/disk"):
        target = disk.find("target")
        if target is not None and disk.get("device", "disk") == "disk":
            files[target.get("dev", "")] = _source(disk)
    covered = {}
    for disk in root.findall("./disks/disk"):
        covered[disk.get("name", "")] = (disk.get("snapshot") or "external", _source(disk))
    for name, moment_file in files.items():
        kind, overlay = covered.get(name, ("external" if not covered else "no", None))
        if kind == "no":
            continue
        snap.moments[name] = Moment(name, moment_file, overlay, internal=kind == "internal")
    return snap


def read_snapshots(dom: libvirt.virDomain, blurred: Blurred = "refuse") -> list[Snapshot]:
    """The domain's snapshots, parents first, each XML read once.  A snapshot whose XML names
    a file with a line break or tab (``blurred``, chain.Blurred): "refuse" (``parse_snapshot``),
    or "both": listed once per reading of its XML (chain.readings), each with the files it
    names so read: for another domain's snapshots, looked at for the files they name."""
    found = []
    current = None
    try:
        if dom.hasCurrentSnapshot(0):
            current = dom.snapshotCurrent(0).getName()
    except libvirt.libvirtError:
        current = None
    for handle in dom.listAllSnapshots(0):
        try:
            xml = handle.getXMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                continue  # deleted since it was listed: it is no snapshot any more
            raise
        is_current = handle.getName() == current
        if blurred == "refuse":
            found.append(parse_snapshot(xml, is_current))
        else:
            found += [_snapshot(reading, is_current) for reading in readings(xml)]
    return in_time_order(found)


Read = list[Snapshot]  # a domain's snapshots as one plan read them (Target.snapshots)


def read_snapshots_ahead(dom: libvirt.virDomain) -> Background[Read]:
    """``read_snapshots(dom)`` started now on a thread: its round trips (each waits while
    libvirt holds the domain) overlap the caller's other work."""
    from vshx.storage.background import Background

    return Background(lambda: read_snapshots(dom))


def in_time_order(snapshots: list[Snapshot]) -> list[Snapshot]:
    """Parents before their children (creation times tie within a second), siblings by time;
    a snapshot listed once per reading of its XML (read_snapshots) has its children once."""
    names = {s.name for s in snapshots}
    children: dict[str | None, list[Snapshot]] = {}
    for snap in snapshots:
        children.setdefault(snap.parent if snap.parent in names else None, []).append(snap)
    ordered: list[Snapshot] = []
    todo = sorted(children.get(None, []), key=lambda s: (s.created, s.name), reverse=True)
    placed: set[str] = set()
    while todo:
        snap = todo.pop()
        ordered.append(snap)
        if snap.name not in placed:
            placed.add(snap.name)
            todo += sorted(
                children.get(snap.name, []), key=lambda s: (s.created, s.name), reverse=True
            )
    return ordered


class Timeline(NamedTuple):
    """A domain's snapshots with every moment judged; read once per plan."""

    domain: str
    snapshots: list[Snapshot]
    ledger: dict[tuple[str, int, str], Verdict]
    in_chains: set[str]  # every layer of the disks read
    formats: dict[str, str]  # canonical layer -> its format

    def find(self, name: str) -> Snapshot | None:
        return next((s for s in self.snapshots if s.name == name), None)

    def on_disk(self, disk: str) -> list[tuple[Snapshot, Moment]]:
        return [(s, s.moments[disk]) for s in self.snapshots if disk in s.moments]

    def current_line(self) -> set[str]:
        """The current snapshot and its ancestors: the history the disks grew from.  Any other
        snapshot is on a branch (a revert left it behind); empty when none is current."""
        line: set[str] = set()
        snap = next((s for s in self.snapshots if s.current), None)
        while snap is not None and snap.name not in line:
            line.add(snap.name)
            snap = self.find(snap.parent) if snap.parent else None
        return line

    def holding(self, disk: str, path: str) -> list[Snapshot]:
        """Snapshots whose moment on ``disk`` the file ``path`` shows now."""
        key = canonical(path)
        return [
            s
            for s, m in self.on_disk(disk)
            if m.kept and m.holder is not None and canonical(m.holder) == key
        ]


NO_DISK = "the domain has no such disk now"


def judge(
    snap: Snapshot,
    moment: Moment,
    chain: Chain | None,
    newer: list[Snapshot],
    unread: str = NO_DISK,
) -> Moment:
    """A moment judged from the files and chain alone (no record of vshx's); ``unread``: why
    there is no chain (``chain`` None)."""
    path = moment.file
    if moment.internal:
        return moment._replace(state=UNKNOWN, why="an internal snapshot: vshx does not judge it")
    if not path:
        return moment._replace(state=UNKNOWN, why="the snapshot names no file for this disk")
    name = os.path.basename(path)
    if not files.exists(path):
        through = reads_through(moment.overlay, chain)
        if through is None:
            return moment._replace(state=GONE, why=f"{name} no longer exists")
        overlay = os.path.basename(moment.overlay or "")
        return moment._replace(
            state=UNKNOWN,
            why=f"{name} no longer exists, but {overlay} (the overlay the snapshot made) still "
            f"reads through {through}, which may show the moment now (a commit that deleted "
            "its files, by a tool vshx has no record of)",
        )
    if chain is None:
        return moment._replace(state=UNKNOWN, why=unread)
    key = canonical(path)
    layer = next((lay for lay in chain.layers if lay.canonical == key), None)
    if layer is None:
        return moment._replace(
            state=UNKNOWN,
            why=f"{name} left the chain and vshx has no record of how (another tool's merge, "
            "or one of vshx's while its moment was already unknown)",
        )
    if layer.position == 0:
        return moment._replace(state=GONE, why=f"{name} is the active layer: the guest writes it")
    above = chain.above(layer)
    assert above is not None
    if moment.overlay and above.canonical == canonical(moment.overlay):
        # the overlay still sits on it; a commit that kept its top (qemu-img commit, an
        # active commit that keeps the overlay) would still have written the file: its mtime
        if not unchanged_since(path, frozen_until(snap, moment.overlay), 0):
            return moment._replace(
                state=UNKNOWN,
                why=f"{name} (or a file below it) was written after the snapshot, by a merge "
                "that did not finish or a tool vshx has no record of",
            )
        return moment._replace(state=INTACT, holder=path, in_chain=True)
    for later in newer:
        other = later.moments.get(moment.disk)
        if (
            other is not None
            and other.file
            and other.overlay
            and canonical(other.file) == key
            and canonical(other.overlay) == above.canonical
        ):
            return moment._replace(state=GONE, why=f"{name} now shows {later.name}'s moment")
    return moment._replace(
        state=UNKNOWN,
        why=f"{above.name} sits on {name}, not the overlay the snapshot made: changed by a "
        "tool vshx has no record of, or by a merge while its moment was already unknown",
    )


def reads_through(overlay: str | None, chain: Chain | None) -> str | None:
    """What the overlay a snapshot made still reads through (a file's name), when the file
    the snapshot names is gone: where its moment may be now.  None when nothing can be: the
    overlay is gone too, or it is in the chain with nothing below it (a pull took all)."""
    if not overlay or not files.exists(overlay):
        return None
    layer = chain.layer_of_file(overlay) if chain is not None else None
    if layer is not None:
        assert chain is not None
        below = chain.below(layer)
        return below.name if below is not None else None
    try:  # out of the chain: its own header says what it reads through
        names = qcow2.header_names(overlay)
    except VshxError:
        return "a file vshx cannot read"
    backing = names[0] if names else None
    if not backing:  # raw, or a qcow2 on no backing file: its moment cannot be below it
        return None
    if is_json_name(backing):
        return backing
    found = os.path.join(os.path.dirname(overlay), backing)
    return os.path.basename(found) if files.exists(found) else None


def still_named(moment: Moment, verdict: Verdict) -> bool:
    """The metadata names what it named when vshx recorded the verdict (or the holder, after
    snapshot-cleanup re-pointed it); else someone redefined it since (libvirt's own
    snapshot-delete re-points the remaining snapshots) and the record no longer applies."""
    if not moment.file:
        return False
    now = canonical(moment.file)
    return any(path and canonical(path) == now for path in (verdict.named, verdict.holder))


def record_for(
    ledger: dict[tuple[str, int, str], Verdict], snap: Snapshot, moment: Moment
) -> Verdict | None:
    """vshx's record of this moment: same snapshot (by name, or by creation time if it was
    redefined under another name), same disk, and the metadata still naming that file."""
    exact = ledger.get((snap.name, snap.created, moment.disk))
    if exact is not None:  # its own record: a record of another name is never its
        return exact if still_named(moment, exact) else None
    return next(
        (
            v
            for v in ledger.values()
            if v.created == snap.created
            and v.disk == moment.disk
            and v.named
            and moment.file
            and canonical(v.named) == canonical(moment.file)
        ),
        None,
    )


def recorded(moment: Moment, verdict: Verdict, chain: Chain | None) -> Moment:
    """A moment as vshx's record says, as long as the file it names has not changed since."""
    if verdict.state == GONE:
        return moment._replace(state=GONE, holder=None, why=verdict.why, below=verdict.below)
    if verdict.state not in (INTACT, MERGED) or not verdict.holder:
        return moment._replace(state=UNKNOWN, why=verdict.why or "no usable record")
    name = os.path.basename(verdict.holder)
    if not files.exists(verdict.holder):
        return moment._replace(state=GONE, holder=None, why=f"{name} no longer exists")
    try:
        recorded_at = int(verdict.stamp)
    except ValueError:
        recorded_at = -SETTLE_NS - 1  # no usable time: nothing proves it unchanged
    # vshx records after the plan's last write (a block job's base is flushed before its end
    # is reported): any write later than the record is a change, with no settle (atk20 #2: a
    # `virsh blockcommit` into the file a pulled-out moment reads, 2 s after a pull, passed)
    if not unchanged_since(verdict.holder, recorded_at, 0):
        return moment._replace(
            state=UNKNOWN,
            why=f"{name} (or a file below it) changed after vshx recorded that it holds this "
            "moment",
        )
    key = canonical(verdict.holder)
    in_chain = chain is not None and any(lay.canonical == key for lay in chain.layers)
    if chain is not None and chain.active.canonical == key:
        return moment._replace(state=GONE, why=f"{name} is the active layer: the guest writes it")
    # merged, then re-pointed (snapshot-cleanup): the metadata names the holder again
    state = INTACT if moment.file and canonical(moment.file) == key else verdict.state
    return moment._replace(state=state, holder=verdict.holder, why=verdict.why, in_chain=in_chain)


def still_gone(judged: Moment, own: Verdict | None, chain: Chain | None) -> Moment:
    """A moment vshx recorded gone stays gone when the metadata was re-pointed since to a file
    of the disk's chain that proves nothing (libvirt re-points a child to its parent's file
    when the parent's metadata is deleted); a file out of the chain is judged afresh, so
    nothing a user restored there is ever taken for gone."""
    if judged.state != UNKNOWN or own is None or own.state != GONE or chain is None:
        return judged
    key = canonical(judged.file or "")
    if not any(lay.canonical == key for lay in chain.layers):
        return judged
    why = f"{own.why} (vshx's record; the metadata was re-pointed since)"
    return judged._replace(state=GONE, holder=None, why=why, below=own.below)


def read_timeline(
    dom: libvirt.virDomain,
    chain_of: Callable[[str], Chain | None],
    snapshots: Read | None = None,
    xml: str | None = None,
    ledger: dict[tuple[str, int, str], Verdict] | None = None,
    unread: dict[str, str] | None = None,
) -> Timeline:
    """Every snapshot of ``dom`` with its moments judged against the disks' chains
    (``chain_of(disk)``: asked once per disk a snapshot covers; None when unreadable, and
    then why in ``unread[disk]``, which ``chain_of`` may fill);
    ``snapshots``: as the plan read them already (judged in place); ``xml``: the domain's
    XML as the plan read it, with vshx's record in it; ``ledger``: the record to judge by
    instead of the domain's (a batch --dry-run's predicted one)."""
    snapshots = read_snapshots(dom) if snapshots is None else snapshots
    if ledger is None:
        ledger = read_ledger(dom, xml) if snapshots else {}
    chains: dict[str, Chain | None] = {}
    for i, snap in enumerate(snapshots):
        newer = snapshots[i + 1 :]
        for disk, moment in list(snap.moments.items()):
            if disk not in chains:
                chains[disk] = chain_of(disk)
            chain = chains[disk]
            verdict = record_for(ledger, snap, moment)
            if verdict is not None:
                snap.moments[disk] = recorded(moment, verdict, chain)
            else:
                why = (unread or {}).get(disk, NO_DISK)
                judged = judge(snap, moment, chain, newer, why)
                snap.moments[disk] = still_gone(
                    judged, ledger.get((snap.name, snap.created, disk)), chain
                )
    layers = [lay for c in chains.values() if c is not None for lay in c.layers]
    in_chains = {lay.canonical for lay in layers}
    formats = {lay.canonical: lay.format for lay in layers if lay.format}
    return Timeline(dom.name(), snapshots, ledger, in_chains, formats)
