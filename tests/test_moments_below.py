"""``Verdict.below``: a moment recorded gone only because a file its view reads through (below
it) was written or deleted.  snapshot-cleanup --delete-files keeps such a moment's own file
while it is unchanged since the snapshot; the field says so, not the reason's text, and a
record written before the field existed is read as the text said then (nothing older is
deleted on a guess).  Pure logic: no libvirt."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vshx_plugins.snapshot_cleanup import gone_but_untouched

from vshx.storage.moments import (
    GONE,
    INTACT,
    LEDGER_KEY,
    LEDGER_NS,
    Moment,
    Verdict,
    ledger_xml,
    parse_snapshot,
    read_ledger,
)

NOW = int(time.time())
TEXT = "sn2.qcow2 reads through sn1.qcow2, which changes"


def domain_xml(moments: str) -> str:
    """A domain's XML whose metadata holds ``moments`` (vshx's record, no domain UUID)."""
    return (
        f"<domain><name>d</name><metadata>{moments}</metadata></domain>".replace(
            "<moments", f"<{LEDGER_KEY}:moments xmlns:{LEDGER_KEY}='{LEDGER_NS}'"
        )
        .replace("</moments>", f"</{LEDGER_KEY}:moments>")
        .replace("<moment ", f"<{LEDGER_KEY}:moment ")
    )


def test_an_older_record_says_below_only_in_its_reason():
    """A record written before ``below`` existed: its reason's text decides, as it did."""
    older = (
        "<moments>"
        f"<moment snapshot='s3' created='{NOW}' disk='vda' state='gone' why='{TEXT}' stamp='1'/>"
        f"<moment snapshot='s2' created='{NOW}' disk='vda' state='gone' "
        "why='sn1.qcow2 takes in sn2.qcow2' stamp='1'/>"
        "</moments>"
    )
    ledger = read_ledger(None, domain_xml(older))  # type: ignore[arg-type]  # no UUID: no dom
    assert ledger[("s3", NOW, "vda")].below is True
    assert ledger[("s2", NOW, "vda")].below is False


def test_a_new_record_keeps_below_whatever_its_reason_says():
    """The field is written and read back as it was made: a reason whose text happens to
    match the older rule (a file's name) says nothing."""
    verdicts = [
        Verdict("s3", NOW, "vda", GONE, None, "a reads through b.qcow2 takes in c", "1"),
        Verdict("s4", NOW, "vda", GONE, None, "changed below", "1", None, True),
    ]
    ledger = read_ledger(None, domain_xml(ledger_xml(verdicts)))  # type: ignore[arg-type]
    assert ledger[("s3", NOW, "vda")].below is False
    assert ledger[("s4", NOW, "vda")].below is True


def test_a_journals_older_verdicts_say_below_in_their_reason():
    """An interrupted plan's journal written before the field: read as the text said."""
    saved = json.loads(json.dumps(Verdict("s3", NOW, "vda", GONE, None, TEXT)._asdict()))
    del saved["below"]
    assert Verdict.from_json(saved).below is True
    saved["why"] = "sn1.qcow2 takes in sn2.qcow2"
    assert Verdict.from_json(saved).below is False
    saved["below"] = True
    assert Verdict.from_json(saved).below is True


def gone_snapshot(tmp_path: Path, below: bool, why: str):
    """s3, whose moment file sn2.qcow2 (unchanged since it was taken) is judged gone."""
    path = tmp_path / "sn2.qcow2"
    path.write_bytes(b"x")
    os.utime(path, (NOW - 60, NOW - 60))
    xml = (
        f"<domainsnapshot><name>s3</name><state>disk-snapshot</state>"
        f"<creationTime>{NOW}</creationTime><memory snapshot='no'/><disks>"
        f"<disk name='vda' snapshot='external'><source file='{tmp_path / 'sn3.qcow2'}'/></disk>"
        f"</disks><domain><devices><disk type='file' device='disk'><source file='{path}'/>"
        "<target dev='vda'/></disk></devices></domain></domainsnapshot>"
    )
    snap = parse_snapshot(xml, False)
    moment: Moment = snap.moments["vda"]
    snap.moments["vda"] = moment._replace(state=GONE, why=why, below=below)
    return snap, str(path)


def test_cleanup_keeps_a_file_gone_below_by_the_field(tmp_path: Path):
    snap, path = gone_snapshot(tmp_path, True, "changed below (vshx's record)")
    assert "sn2.qcow2 is unchanged since snapshot s3" in gone_but_untouched(snap, "vda", path)


def test_cleanup_does_not_read_the_reasons_text(tmp_path: Path):
    snap, path = gone_snapshot(tmp_path, False, "x reads through y.qcow2 takes in z")
    assert gone_but_untouched(snap, "vda", path) == ""
    snap.moments["vda"] = snap.moments["vda"]._replace(state=INTACT, below=True)
    assert gone_but_untouched(snap, "vda", path) == ""
