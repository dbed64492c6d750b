"""A lesson's end state, judged from the outside: what the student's own commands left.

Nothing here changes anything: it reads the qcow2 headers, the domain's live and persistent
definitions, libvirt's block jobs and snapshots, and the guest's data (``qemu-img convert -U``
of a disk's view, hashed, after asking a running QEMU to flush).  ``record`` runs when the lab
is built; ``check`` compares the lab now with that record and with the lesson's goal.

Only the end state is judged, never the route: one block job or two, virsh or vshx, live or on
the shut-off domain with qemu-img and a definition edit all pass when they leave the goal chain
(headers and definitions), the guest's bytes, true snapshot metadata and no job behind.  The
end state includes which files took the data (``Lesson.holds``): a pull and a commit reach the
same chain, but only a commit writes the layer below (and destroys the moments it held).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from vshx.api import Lesson, Session, VshxError, canonical, domain_timeline, libvirt, virt
from vshx_plugins.lesson_i18n import N_, _

if TYPE_CHECKING:
    import libvirt as libvirt_t

DISK = "vda"  # the lab's disk every lesson works on
HMP = 1  # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
KEPT = ("intact", "merged")
RESET = N_("`lesson reset` builds the lab again")
DEFINITION_KINDS = (N_("live"), N_("persistent"))


@dataclass(frozen=True)
class Finding:
    """One way the lab differs from the goal: what, and the hint that fixes it."""

    reason: str
    hint: str
    kind: str = ""  # what a lesson's ``mistakes`` may name: extra:LAYER, missing:LAYER,
    # ready, job, data, definition, stale:SNAPSHOT, forgotten:SNAPSHOT, unchanged:LAYER,
    # holds:LAYER, changed:LAYER


class Judgement(NamedTuple):
    """What ``check`` found: the findings (empty when done), the lab as it is now (to tell an
    untouched lab), and the snapshots whose moments only the lab's record of their data shows
    (vshx's own model, which knows only its own merges, calls them unknown or gone)."""

    findings: list[Finding]
    chain: tuple[str, ...] = ()  # vda's layers now, base first (layer names)
    snapshots: tuple[str, ...] = ()  # the snapshots left, by name
    by_data: tuple[tuple[str, str], ...] = ()  # (snapshot, vshx's state of its moment)

    @property
    def kinds(self) -> list[str]:
        return sorted({finding.kind for finding in self.findings})

    def state(self) -> dict[str, list[str]]:
        """The lab as ``lesson start`` records it once built and set up (``untouched``)."""
        return {"chain": list(self.chain), "snapshots": sorted(self.snapshots), "kinds": self.kinds}


def untouched(rec: dict[str, Any], judged: Judgement) -> bool:
    """The lab is as ``lesson start`` left it: the same chain, snapshots and findings (False for
    a record made before vshx kept that state: nothing is assumed then)."""
    start = rec.get("start")
    return isinstance(start, dict) and start == judged.state()


def mistake(finding: Finding, kinds: set[str], mistakes: tuple[tuple[str, str], ...]) -> str:
    """The hint a lesson gives for ``finding`` when the lab shows that mistake (``""`` when
    none applies).  A mistake's key names the finding's kind first, then any further kinds the
    lab must show too, and ``!KIND`` for one it must not: ``extra:sn3 !extra:sn2`` (sn3 is
    still in the chain and sn2 is not: the commit stopped one layer short)."""
    for key, hint in mistakes:
        terms = key.split()
        wanted = [term for term in terms if not term.startswith("!")]
        unwanted = [term[1:] for term in terms if term.startswith("!")]
        if not wanted or wanted[0] != finding.kind:
            continue
        if all(term in kinds for term in wanted) and not any(t in kinds for t in unwanted):
            return hint
    return ""


def layer_name(path: str) -> str:
    """``/x/sn1.qcow2`` -> ``sn1``: layers are named after their roles."""
    return os.path.basename(path).removesuffix(".qcow2")


def aliases(dom: libvirt_t.virDomain) -> dict[str, str]:
    """Each disk's device alias in the live XML (``vda`` -> ``virtio-disk0``)."""
    found = {}
    for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk"):
        target, alias = disk.find("target"), disk.find("alias")
        if target is not None and alias is not None:
            found[target.get("dev", "")] = alias.get("name", "")
    return found


def flush(dom: libvirt_t.virDomain) -> None:
    """Ask a running QEMU to write back its caches, so a reader with -U sees the guest's data."""
    if not virt.is_running(dom):
        return
    import libvirt_qemu  # type: ignore[import-untyped]

    for alias in aliases(dom).values():
        try:
            libvirt_qemu.qemuMonitorCommand(dom, f'qemu-io -d {alias}/virtio-backend "flush"', HMP)
        except libvirt.libvirtError as exc:
            raise VshxError(
                f"cannot ask QEMU to flush {dom.name()} {alias}: {exc.get_error_message()}",
                "the check reads the guest's data only after a flush; try again",
            ) from exc


@contextmanager
def scratch() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="vshx-lesson-") as where:
        yield where


def view_hash(path: str, where: str) -> str:
    """sha256 of what an image shows (its whole backing chain), read with -U (in use)."""
    raw = os.path.join(where, "view.raw")
    proc = subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", "--", path, raw],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise VshxError(
            _("cannot read {path}: {said}").format(path=path, said=said),
            _("is the chain below it complete?"),
        )
    digest = hashlib.sha256()
    with open(raw, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    os.unlink(raw)
    return digest.hexdigest()


def header_chain(dom: libvirt_t.virDomain, disk: str = DISK) -> list[str]:
    """The disk's layers as the qcow2 headers chain them, active first (full paths)."""
    return [layer.path for layer in virt.domain_chain(dom, disk, definition=False).layers]


def record(session: Session, dom: libvirt_t.virDomain) -> dict[str, Any]:
    """What the lab shows when built: each disk's guest data and chain, and each snapshot's
    moment (the data of the file it names) on each disk."""
    flush(dom)
    guest, chains, moments = {}, {}, {}
    views: dict[str, str] = {}  # what each file of vda's chain showed (a Lesson's ``holds``)
    with scratch() as where:
        for disk in virt.domain_disks(dom):
            chain = header_chain(dom, disk.target)
            chains[disk.target] = chain
            guest[disk.target] = view_hash(chain[0], where)
            if disk.target == DISK:
                views = {path: view_hash(path, where) for path in chain}
        for snap in domain_timeline(session, dom).snapshots:
            moments[snap.name] = {
                disk: {"file": m.file, "hash": views.get(m.file) or view_hash(m.file, where)}
                for disk, m in snap.moments.items()
                if m.file and os.path.exists(m.file)
            }
    backing = {
        layer_name(chain[i]): layer_name(chain[i + 1])
        for chain in chains.values()
        for i in range(len(chain) - 1)
    }
    shown = {layer_name(path): digest for path, digest in views.items()}
    return {
        "guest": guest,
        "chains": chains,
        "backing": backing,
        "moments": moments,
        "views": shown,
    }


def defined_files(xml: str, disk: str) -> tuple[list[str], bool] | None:
    """A definition's source and pinned backing files for ``disk``, top first, and whether
    it pins any (None when the disk is not there)."""
    for node in ET.fromstring(xml).findall("./devices/disk"):
        target = node.find("target")
        if target is None or target.get("dev") != disk:
            continue
        files: list[str] = []
        cursor: ET.Element | None = node
        pinned = False
        while cursor is not None:
            source = cursor.find("source")
            if source is None:
                break
            files.append(source.get("file") or source.get("dev") or "")
            cursor = cursor.find("backingStore")
            pinned = pinned or cursor is not None and cursor.find("source") is not None
        return files, pinned
    return None


def definition_findings(dom: libvirt_t.virDomain, chain: list[str]) -> list[Finding]:
    """The live definition (running) and the persistent one must name the headers' chain."""
    name = dom.name()
    found = []
    which = [("persistent", dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))]
    if virt.is_running(dom):
        which.insert(0, ("live", dom.XMLDesc(0)))
    headers = [canonical(p) for p in chain]
    for kind, xml in which:
        named = defined_files(xml, DISK)
        if named is None:
            found.append(
                Finding(
                    _("the {kind} definition of {name} has no disk {disk}").format(
                        kind=_(kind), name=name, disk=DISK
                    ),
                    "",
                )
            )
            continue
        files, pinned = named
        wanted = headers if pinned else headers[:1]
        have = [canonical(p) for p in files]
        if have[: len(wanted)] == wanted and (not pinned or len(have) == len(wanted)):
            continue
        shown = " <- ".join(layer_name(p) for p in reversed(files))
        headers_shown = " <- ".join(layer_name(p) for p in reversed(chain))
        fix = _(
            "virsh update-device {name} disk.xml --config, with a <disk> whose source is "
            "{active} and whose <backingStore> chain (if any) names {chain}; or virsh dumpxml "
            "--inactive {name} > d.xml, edit the <disk>, virsh define d.xml"
        ).format(name=name, active=os.path.basename(chain[0]), chain=headers_shown)
        why = _(
            "the {kind} definition of {name} {disk} names {shown}, but the qcow2 headers "
            "chain {chain}"
        ).format(kind=_(kind), name=name, disk=DISK, shown=shown, chain=headers_shown)
        if kind == "live":
            fix = _("the running QEMU opened other files: let the block job finish (or pivot)")
        else:
            why += _(" (libvirt starts the domain on the chain its definition names)")
        found.append(Finding(why, fix, "definition"))
    return found


def job_findings(dom: libvirt_t.virDomain) -> list[Finding]:
    """A block job left on a disk: READY waiting for a pivot, or still copying."""
    found = []
    for job in virt.block_jobs(dom):
        disk, kind = str(job["disk"]), str(job["type"])
        if job["ready"]:
            found.append(
                Finding(
                    _(
                        "the {kind} job on {disk} is still READY: it waits for --pivot (the "
                        "guest still writes the old top layer)"
                    ).format(kind=kind, disk=disk),
                    _(
                        "virsh blockjob {name} {disk} --pivot   (next time: blockcommit ... "
                        "--active --wait --pivot)"
                    ).format(name=dom.name(), disk=disk),
                    "ready",
                )
            )
        else:
            found.append(
                Finding(
                    _("a {kind} job still runs on {disk} ({progress}%)").format(
                        kind=kind, disk=disk, progress=job["progress"]
                    ),
                    _("wait for it: virsh blockjob {name} {disk} --info").format(
                        name=dom.name(), disk=disk
                    ),
                    "job",
                )
            )
    return found


def chain_findings(chain: list[str], goal: tuple[str, ...]) -> list[Finding]:
    """The headers' chain against the goal (both as layer names)."""
    now = [layer_name(p) for p in reversed(chain)]
    if tuple(now) == goal:
        return []
    arrows, wanted = " <- ".join(now), " <- ".join(goal)
    extra = [n for n in now if n not in goal]
    missing = [n for n in goal if n not in now]
    found = []
    for name in extra:
        found.append(
            Finding(
                _("{name}.qcow2 is still in the chain of {disk} ({arrows})").format(
                    name=name, disk=DISK, arrows=arrows
                ),
                _("the goal is {goal} (active): merge {name} away").format(goal=wanted, name=name),
                f"extra:{name}",
            )
        )
    for name in missing:
        found.append(
            Finding(
                _(
                    "{name}.qcow2 is no longer in the chain of {disk} ({arrows}), but the goal "
                    "keeps it: {goal} (active)"
                ).format(name=name, disk=DISK, arrows=arrows, goal=wanted),
                _(RESET),
                f"missing:{name}",
            )
        )
    if not found:
        found.append(
            Finding(
                _("the chain of {disk} is {arrows}, the goal is {goal}").format(
                    disk=DISK, arrows=arrows, goal=wanted
                ),
                _(RESET),
            )
        )
    return found


def data_findings(
    dom: libvirt_t.virDomain, chain: list[str], rec: dict[str, Any], where: str
) -> list[Finding]:
    """The guest must see the bytes it saw when the lab was built."""
    if view_hash(chain[0], where) == rec["guest"].get(DISK):
        return []
    moved = []
    for i, path in enumerate(chain):
        layer = layer_name(path)
        below = layer_name(chain[i + 1]) if i + 1 < len(chain) else ""
        before = rec["backing"].get(layer)
        if before and before != below:
            moved.append((layer, before, below))
    why = _("the guest sees other data than when the lab was built")
    hint = _(
        "`qemu-img compare` of the old and new views shows where; a merge never changes "
        "what the guest sees. `lesson reset` builds the lab again"
    )
    for layer, before, below in moved:
        if below:
            why = _(
                "guest data on {disk} changed: {layer}.qcow2 now backs onto {below}.qcow2 (it "
                "was {before}.qcow2), which does not show what {before}.qcow2 showed"
            ).format(disk=DISK, layer=layer, below=below, before=before)
        else:
            why = _(
                "guest data on {disk} changed: {layer}.qcow2 now has no backing file (it was "
                "{before}.qcow2), yet it does not hold the data the layers below showed"
            ).format(disk=DISK, layer=layer, before=before)
        hint = _(
            "`qemu-img rebase -u` only rewrites the pointer: it is right only when the new "
            "backing file shows the same data as the old (check with qemu-img compare); "
            "without -u, rebase copies the difference into {layer}.qcow2. "
            "`lesson reset` builds the lab again"
        ).format(layer=layer)
    return [Finding(why, hint, "data")]


def holds_findings(
    chain: list[str], lesson: Lesson, rec: dict[str, Any], where: str
) -> list[Finding]:
    """Which files took the data (``Lesson.holds``), judged on the goal's chain: a commit and
    a pull reach the same chain, the guest sees the same bytes, yet one wrote the layer below
    and the other the active layer (and a commit destroys moments a pull keeps)."""
    views = rec.get("views") or {}
    files = {layer_name(path): path for path in chain}
    found = []
    for layer, was in lesson.holds:
        then, wanted = views.get(layer), views.get(was)
        if layer not in files or not then or not wanted:
            continue  # a record made before vshx kept each layer's view: nothing is assumed
        now, _said = moment_view(files[layer], where)
        if now == wanted:
            continue
        if layer == was:
            found.append(
                Finding(
                    _(
                        "{layer}.qcow2 took data in: it no longer shows what it showed when the "
                        "lab was built, and the goal leaves it as it was"
                    ).format(layer=layer),
                    _(RESET),
                    f"changed:{layer}",
                )
            )
        elif now == then:
            found.append(
                Finding(
                    _(
                        "{layer}.qcow2 still shows what it showed when the lab was built: no data "
                        "went down into it, yet the goal has it show what {was}.qcow2 showed "
                        "(the data down to {was} merged into it)"
                    ).format(layer=layer, was=was),
                    _(RESET),
                    f"unchanged:{layer}",
                )
            )
        else:
            found.append(
                Finding(
                    _(
                        "{layer}.qcow2 does not show what {was}.qcow2 showed when the lab was "
                        "built (the goal: the data down to {was} merged into it)"
                    ).format(layer=layer, was=was),
                    _(RESET),
                    f"holds:{layer}",
                )
            )
    return found


def moment_view(path: str, where: str) -> tuple[str | None, str]:
    """What a snapshot's file shows now (its hash), or None and why it cannot be read (a
    student's merge may have removed a file below it): a finding, never the end of the check."""
    if not os.path.exists(path):
        return None, ""
    try:
        return view_hash(path, where), ""
    except VshxError as exc:
        return None, exc.message


def metadata_findings(
    session: Session,
    dom: libvirt_t.virDomain,
    lesson: Lesson,
    rec: dict[str, Any],
    where: str,
) -> tuple[list[Finding], list[tuple[str, str]]]:
    """Every snapshot left must still have its moment somewhere (by vshx's model, or shown
    by the file it names, read now); snapshots the lesson keeps must still be there.  Also the
    snapshots whose moments only the file's data shows (vshx's model cannot tell), with the
    state vshx gives them."""
    name = dom.name()
    timeline = domain_timeline(session, dom)
    found = []
    by_data: list[tuple[str, str]] = []
    for snap in timeline.snapshots:
        for disk, moment in snap.moments.items():
            if moment.state in KEPT:
                continue
            recorded = rec["moments"].get(snap.name, {}).get(disk)
            named = moment.file or ""
            file = os.path.basename(named)
            shown, said = moment_view(named, where)
            if not os.path.exists(named):
                why = _("snapshot {snap} ({disk}) names {file}, which no longer exists")
            elif shown is None:
                why = _(
                    "snapshot {snap} ({disk}) names {file}, which can no longer be read (a file "
                    "below it is gone or changed: {said})"
                )
            elif recorded and shown == recorded["hash"]:
                # the file it names still shows its moment: by the lab's data, not by vshx's
                # model (which records only its own merges)
                by_data.append((snap.name, moment.state))
                continue
            else:
                why = _(
                    "snapshot {snap} ({disk}) names {file}, which no longer shows its moment "
                    "(its data differs from when the lab was built; vshx: {state}, {model})"
                )
            why = why.format(
                snap=snap.name,
                disk=disk,
                file=file,
                state=moment.state,
                model=moment.why,
                said=said,
            )
            found.append(
                Finding(
                    why + _(": its metadata is stale"),
                    _("forget it: virsh snapshot-delete {name} {snap} --metadata").format(
                        name=name, snap=snap.name
                    ),
                    f"stale:{snap.name}",
                )
            )
    left = {snap.name for snap in timeline.snapshots}
    for keep in lesson.keep or ():
        if keep not in left:
            recorded = rec["moments"].get(keep, {}).get(DISK, {})
            held = recorded.get("file") or ""
            if moment_view(held, where)[0] == recorded.get("hash"):
                why = _(
                    "snapshot {snap} was deleted, yet its moment still existed ({file}): a "
                    "point in time to go back to is forgotten"
                )
            else:
                why = _(
                    "snapshot {snap} was deleted, and its moment with it ({file} no longer "
                    "shows it), yet the goal keeps it"
                )
            found.append(
                Finding(
                    why.format(snap=keep, file=os.path.basename(held) or "?"),
                    _(
                        "delete only the snapshots whose moments are gone; `lesson reset` "
                        "builds the lab again"
                    ),
                    f"forgotten:{keep}",
                )
            )
    return found, by_data


def check(session: Session, lesson: Lesson, lab: str, rec: dict[str, Any]) -> Judgement:
    """Everything that differs from the goal, most telling first (no findings when done)."""
    try:
        dom = virt.lookup_domain(session.conn, lab)
    except VshxError as exc:
        raise VshxError(exc.message, _("build it again: lesson reset")) from None
    found = job_findings(dom)
    if found:
        return Judgement(found)  # the chain is in flux while a job is on it
    chain = header_chain(dom)
    flush(dom)
    with scratch() as where:
        found += data_findings(dom, chain, rec, where)
        found += chain_findings(chain, lesson.goal)
        if not found:  # the goal's chain and the guest's bytes: which files took the data
            found += holds_findings(chain, lesson, rec, where)
        found += definition_findings(dom, chain)
        stale, by_data = metadata_findings(session, dom, lesson, rec, where)
        found += stale
    snapshots = tuple(snap.getName() for snap in dom.listAllSnapshots(0))
    names = tuple(layer_name(path) for path in reversed(chain))
    return Judgement(found, names, snapshots, tuple(by_data))
