"""The ledger: what vshx's own plans did to snapshots' moments, kept in the domain's metadata.

A commit moves a moment into another file and a pull leaves moments in files out of the chain;
neither leaves a trace libvirt keeps.  After a plan completes, vshx writes its verdicts (state,
the file that shows the moment, and when) under its own namespace, where vshx.storage.moments
reads them back; once that file, or one its view reads, is written later by anyone, the moment
is judged unknown rather than intact.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.journal import Entry, metadata_flags
from vshx.plans.plan import Step, virsh
from vshx.storage import virt
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import (
    LEDGER_KEY,
    LEDGER_NS,
    Verdict,
    ledger_xml,
    read_ledger,
    stamp,
)

if TYPE_CHECKING:
    from vshx.plans.target import Target


def record(target: Target, verdicts: list[Verdict]) -> None:
    """Write ``verdicts`` (stamped now) over the domain's earlier record of the same moments;
    records of snapshots that no longer exist are dropped."""
    assert target.dom is not None
    write(target.dom, merged(target, verdicts, stamp()), target.journal_flags)


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
    if flags is not None:
        try:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, key, LEDGER_NS, flags)
            return
        except libvirt.libvirtError:
            pass
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, key, LEDGER_NS, metadata_flags(dom))


def recover_step(uri: str, target: Target, entry: Entry, pivots: bool = False) -> Step | None:
    """The record an interrupted plan would have written, for ``recover``: a block job goes on
    in libvirt after vshx was killed, and once it has completed the moments are where the
    plan said (journal.completion kept its verdicts and the chain it leaves).  Only when the
    disk's chain is that chain now (or once recover's step pivots the job: checked again
    then); otherwise None: the merge did not complete, and nothing is recorded."""
    dom, disk, text = target.dom, target.chain.disk or "", entry.get("ledger")
    if dom is None or not text or entry.copied:
        return None
    try:
        saved = json.loads(str(text))
        verdicts = [Verdict.from_json(v) for v in saved["verdicts"]]
        after = [str(path) for path in saved["after"]]
    except (ValueError, TypeError, KeyError):
        return None  # not a record this vshx wrote: nothing is vouched for
    if not pivots and [layer.canonical for layer in target.chain.layers] != after:
        return None

    def action() -> None:
        now = [layer.canonical for layer in virt.domain_chain(dom, disk, definition=False).layers]
        if now != after:
            raise VshxError(
                f"the chain of {dom.name()} {disk} is not the one the interrupted merge leaves: "
                "no record of its moments is written",
                "see: vshx chain, vshx snapshot-list (its moments stay unknown)",
            )
        record(target, verdicts)

    flags = ["--config"] if dom.isPersistent() else []
    flags += ["--live"] if dom.isActive() else []
    xml = ledger_xml(merged(target, verdicts, stamp()), dom.UUIDString())
    argv = virsh(uri, "metadata", dom.name(), "--uri", LEDGER_NS, "--key", LEDGER_KEY)
    return Step(
        "record where the completed merge left the snapshots' moments (vshx's ledger)",
        [*argv, "--set", xml, *flags],
        action=action,
        here=True,
    )
