"""The ledger: what vshx's own plans did to snapshots' moments, kept in the domain's metadata.

A commit moves a moment into another file and a pull leaves moments in files out of the chain;
neither leaves a trace libvirt keeps.  After a plan completes, vshx writes its verdicts (state,
the file that shows the moment, and when) under its own namespace, where vshx.storage.moments
reads them back; once that file, or one its view reads, is written later by anyone, the moment
is judged unknown rather than intact.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.journal import Entry, completion, set_metadata
from vshx.plans.plan import Step, shell_line, virsh
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.chain import canonical
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import (
    INTACT,
    LEDGER_KEY,
    LEDGER_NS,
    MERGED,
    UNKNOWN,
    Verdict,
    ledger_xml,
    read_ledger,
    stamp,
    unchanged_since,
)

if TYPE_CHECKING:
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target
    from vshx.storage.chain import Layer

# a plan that ended while its block job runs (--background): what it recorded and when, per
# disk, so that recover, when its own step ends that job (the pivot of an active commit),
# stamps the record then, as the plan waiting for its job would have
RUNNING_NS = "https://vshx.invalid/moments-running"
RUNNING_KEY = "vshxr"


def record(target: Target, verdicts: list[Verdict]) -> str:
    """Write ``verdicts`` (stamped now) over the domain's earlier record of the same moments;
    records of snapshots that no longer exist are dropped.  Returns the stamp."""
    assert target.dom is not None
    now = stamp()
    write(target.dom, merged(target, verdicts, now), target.journal_flags)
    return now


def commit_view_times(target: Target, writes: list[tuple[Layer, Layer]]) -> dict[str, int]:
    """Before a live commit's job starts: the write times of the layers below the active one
    other than the commit's base, for ``record_aborted_commit`` to tell the job's writes from
    anyone else's; empty where it would not record (another kind of plan, a remote host: a
    stat there is a round trip)."""
    if len(writes) != 1 or target.dom is None or not target.chain.live:
        return {}
    if not files.current().local:
        return {}
    base, top = writes[0]
    if top.position <= 0 or base.position <= top.position:
        return {}
    try:
        return {
            layer.path: files.stat(layer.path).st_mtime_ns
            for layer in target.chain.layers[1:]
            if layer.position != base.position
        }
    except OSError:
        return {}


def record_aborted_commit(target: Target, base: Layer, top: Layer, before: dict[str, int]) -> None:
    """After a commit's block job was aborted once it had copied data into its base: the
    moments ``top`` and the layers above it show (the active layer aside) are still theirs,
    since a commit writes only into its base and never changes its top's view; vshx records
    them so, stamped after the abort, where no file such a moment's view reads but the base
    was written meanwhile (``before``: those files' write times before the job; atk21 #1: a
    foreign write during the job is not taken for the moment's own).  The moments of the
    layers between base and top read the written base: with no record, they are unknown."""
    timeline, disk = target.timeline, target.chain.disk or ""
    if target.dom is None or timeline is None or top.position <= 0 or not before:
        return
    layers = target.chain.layers
    try:
        unchanged = {p for p, was in before.items() if files.stat(p).st_mtime_ns == was}
    except OSError:
        return
    # a holder at position P reads every layer from P down: all unchanged, the base aside
    still = {
        layer.canonical
        for layer in layers[1 : top.position + 1]
        if all(x.path in unchanged for x in layers[layer.position :] if x.position != base.position)
    }
    kept = [
        Verdict(
            snap.name, snap.created, disk, moment.state, moment.holder, moment.why, "", moment.file
        )  # fmt: skip
        for snap, moment in timeline.on_disk(disk)
        if moment.state in (INTACT, MERGED)
        and moment.holder is not None
        and canonical(moment.holder) in still
    ]
    if kept:
        record(target, kept)


def pending(target: Target, plan: Plan) -> list[Verdict]:
    """What a plan whose block job still runs (--background) records now: its verdicts, but
    every moment the job moves (merged, gone, or held in a file it writes) unknown until
    recover has seen the job end as planned (``recover_step``; atk21 #3: a job aborted once
    started left moments "merged" into a base that never took them in)."""
    verdicts = plan.verdicts or []
    if not any(step.background for step in plan.steps):
        return verdicts
    written = {w.canonical for w in plan.written}
    where = [target.chain.domain or "", *([target.chain.disk] if target.chain.disk else [])]
    why = (
        "a --background job moves it: once that job has ended, "
        f"{shell_line(['vshx', 'recover', *where])} records where it is"
    )
    return [
        v
        if v.state == INTACT and v.holder and canonical(v.holder) not in written
        else v._replace(state=UNKNOWN, holder=None, why=why)
        for v in verdicts
    ]


def remember_running(target: Target, plan: Plan, now: str) -> None:
    """After a plan whose block job still runs (--background) recorded its verdicts (stamped
    ``now``, while the guest still writes the layers the job merges): keep them with that
    stamp and the chain the job leaves, for ``recover_step`` when recover pivots the job."""
    dom, disk = target.dom, target.chain.disk or ""
    started = [n for n, step in enumerate(plan.steps, 1) if step.background]
    if dom is None or not started or not now:
        return
    done = completion(plan, started[-1])
    if done is None:
        return
    root = _running_root(dom)
    for node in root.findall("job"):
        if node.get("disk") == disk:
            root.remove(node)
    ET.SubElement(root, "job", {"disk": disk, "stamp": now, "ledger": done})
    _write_running(dom, root, target.journal_flags)


def _running_root(dom: libvirt.virDomain) -> ET.Element:
    """The domain's list of plans that ended while their job ran (a new one when none, or
    when it was written for another domain: a clone's copy)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, RUNNING_NS, 0)
        root = ET.fromstring(text)
    except (libvirt.libvirtError, ET.ParseError):
        root = None
    if root is None or root.get("uuid") != dom.UUIDString():
        root = ET.Element("running", {"uuid": dom.UUIDString()})
    return root


def _write_running(dom: libvirt.virDomain, root: ET.Element, flags: int | None = None) -> None:
    """Write that list (removed when empty), where the journal goes."""
    xml, key = (ET.tostring(root, encoding="unicode"), RUNNING_KEY) if len(root) else (None, None)
    _set(dom, RUNNING_NS, key, xml, flags)


def running_record(target: Target) -> str | None:
    """What a plan that ended while its job ran on the target's disk recorded (journal
    ``completion``'s JSON), while the domain's record still holds exactly that (the stamp it
    wrote: no plan recorded those moments since); None otherwise."""
    dom, disk = target.dom, target.chain.disk or ""
    if dom is None:
        return None
    node = next((n for n in _running_root(dom).findall("job") if n.get("disk") == disk), None)
    if node is None:
        return None
    text, then = node.get("ledger"), node.get("stamp", "")
    try:
        keys = [Verdict.from_json(v).key for v in json.loads(str(text))["verdicts"]]
    except (ValueError, TypeError, KeyError):
        return None
    timeline = target.timeline
    now = dict(timeline.ledger) if timeline is not None else read_ledger(dom)
    if not keys or not then or any(k not in now or now[k].stamp != then for k in keys):
        return None
    return str(text)


def forget_running(dom: libvirt.virDomain, disk: str) -> None:
    """Drop what ``remember_running`` kept for ``disk`` (recorded again since)."""
    root = _running_root(dom)
    found = [n for n in root.findall("job") if n.get("disk") == disk]
    if not found:
        return
    for node in found:
        root.remove(node)
    _write_running(dom, root)


def merged(target: Target, verdicts: list[Verdict], now: str) -> list[Verdict]:
    """The record after a plan: its ``verdicts`` stamped ``now`` over the earlier ones."""
    dom = target.dom
    assert dom is not None
    timeline = target.timeline
    old = dict(timeline.ledger) if timeline is not None else read_ledger(dom)
    living = {(s.name, s.created) for s in timeline.snapshots} if timeline is not None else None
    for verdict in verdicts:
        old[verdict.key] = verdict._replace(stamp=now)
    return [v for key, v in old.items() if living is None or (key[0], key[1]) in living]


def write(dom: libvirt.virDomain, verdicts: list[Verdict], flags: int | None = None) -> None:
    """Replace the domain's record with ``verdicts`` (removed when empty).  ``flags``: where
    the plan's journal was written (two round trips fewer); asked again if libvirt refuses
    them (the domain stopped since).  The domain's UUID goes with it: a clone's copy is
    known as one (vshx.storage.moments.read_ledger ignores it)."""
    xml, key = (ledger_xml(verdicts, dom.UUIDString()), LEDGER_KEY) if verdicts else (None, None)
    _set(dom, LEDGER_NS, key, xml, flags)


def _set(
    dom: libvirt.virDomain, ns: str, key: str | None, xml: str | None, flags: int | None
) -> None:
    """Set (``xml`` None: remove) vshx's element ``ns``: where ``flags`` say (where the plan's
    journal was written), asked again if libvirt refuses them (the domain stopped since), and
    in the live definition of a domain started meanwhile (journal.set_metadata)."""
    set_metadata(dom, ns, key, xml, flags)


def leaves(layers: list[Layer], after: list[str]) -> bool:
    """The chain of ``layers`` is the one a plan left (``after``: canonical paths, active
    first), or that one with newer overlays on top (a snapshot made since, atk10 F2): the
    files the plan's verdicts name are below them, as the plan left them."""
    now = [layer.canonical for layer in layers]
    return len(now) >= len(after) and now[len(now) - len(after) :] == after


def recover_step(
    uri: str, target: Target, entry: Entry | None, pivots: bool = False
) -> Step | None:
    """The record an interrupted plan would have written, for ``recover``: a block job goes on
    in libvirt after vshx was killed, and once it has completed the moments are where the
    plan said (journal.completion kept its verdicts and the chain it leaves).  Only when the
    disk's chain is that chain now, or that one under newer overlays (``leaves``), or once
    recover's step pivots the job (checked again then); otherwise None: the merge did not
    complete, and nothing is recorded.  Without an entry (a plan that ended while its job ran:
    --background, whose record left the moments its job moves unknown: ``pending``), once
    recover's step pivots that job or the job ended by itself leaving the planned chain: the
    verdicts that plan kept (``running_record``), stamped then, as the plan waiting for its
    job writes them."""
    dom, disk = target.dom, target.chain.disk or ""
    if entry is None:  # a --background plan's job, pivoted by recover or ended by itself
        text = running_record(target)
    else:
        text = None if entry.copied else entry.get("ledger")
    if dom is None or not text:
        return None
    try:
        saved = json.loads(str(text))
        verdicts = [Verdict.from_json(v) for v in saved["verdicts"]]
        after = [str(path) for path in saved["after"]]
    except (ValueError, TypeError, KeyError):
        return None  # not a record this vshx wrote: nothing is vouched for
    if not pivots and not leaves(target.chain.layers, after):
        return None
    if entry is None:  # vouched for only where nothing was written since that plan's record
        verdicts = still_proven(target, verdicts)

    def action() -> None:
        now = virt.domain_chain(dom, disk, definition=False).layers
        if not leaves(now, after):
            raise VshxError(
                f"the chain of {dom.name()} {disk} is not the one the interrupted merge leaves: "
                "no record of its moments is written",
                "see: vshx chain, vshx snapshot-list (its moments stay unknown)",
            )
        record(target, verdicts)
        forget_running(dom, disk)

    return Step(
        "record where the completed merge left the snapshots' moments (vshx's ledger)",
        record_argv(uri, target, verdicts),
        action=action,
        here=True,
    )


def still_proven(target: Target, verdicts: list[Verdict]) -> list[Verdict]:
    """A --background plan's verdicts, each kept where the file that holds the moment (and
    every file it reads) was not written after that plan recorded: its job wrote on after
    that, and so may anyone, up to now (atk22 #1: a write into a pulled-out file, or a commit
    into the base, before recover was vouched for).  A moment merged into a file the job
    wrote is unknown then: when the job stopped writing is not known."""
    assert target.dom is not None
    now = dict(target.timeline.ledger) if target.timeline is not None else read_ledger(target.dom)
    kept = []
    for verdict in verdicts:
        was = now.get(verdict.key)
        if verdict.state in (INTACT, MERGED) and verdict.holder:
            stamp = int(was.stamp) if was is not None and was.stamp.isdigit() else -1
            if not unchanged_since(verdict.holder, stamp, 0):
                name = os.path.basename(verdict.holder)
                why = (
                    f"{name} (or a file it reads) was written after the --background plan "
                    "recorded, by its job or another tool: not proven"
                )
                verdict = verdict._replace(state=UNKNOWN, holder=None, why=why)
        kept.append(verdict)
    return kept


def record_argv(uri: str, target: Target, verdicts: list[Verdict]) -> list[str]:
    """The ``virsh metadata`` line that writes ``verdicts`` as ``record`` does, printed for a
    recover step (the domain's journal flags: persistent and live where it is so)."""
    dom = target.dom
    assert dom is not None
    flags = ["--config"] if dom.isPersistent() else []
    flags += ["--live"] if dom.isActive() else []
    xml = ledger_xml(merged(target, verdicts, stamp()), dom.UUIDString())
    argv = virsh(uri, "metadata", dom.name(), "--uri", LEDGER_NS, "--key", LEDGER_KEY)
    return [*argv, "--set", xml, *flags]
