"""The snapshot model's pure logic: parsing, judging moments from chains, what a merge does to
them (no libvirt: the chains are built from real files in a temporary directory)."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vshx.merging.moments import after_writes, finish_command, repointed_xml
from vshx.storage.chain import Chain, Layer
from vshx.storage.moments import (
    GONE,
    INTACT,
    MERGED,
    UNKNOWN,
    Timeline,
    Verdict,
    in_time_order,
    judge,
    parse_snapshot,
    recorded,
    stamp,
)

NOW = int(time.time())


def snapshot_xml(name: str, parent: str | None, moments: dict[str, tuple[str, str]]) -> str:
    """A disk-only snapshot as libvirt 9.0 writes it: per disk (moment file, overlay)."""
    disks = "".join(
        f"<disk name='{d}' snapshot='external' type='file'><source file='{o}'/></disk>"
        for d, (_f, o) in moments.items()
    )
    devices = "".join(
        f"<disk type='file' device='disk'><source file='{f}'/><target dev='{d}'/></disk>"
        for d, (f, _o) in moments.items()
    )
    parent_xml = f"<parent><name>{parent}</name></parent>" if parent else ""
    return (
        f"<domainsnapshot><name>{name}</name><state>disk-snapshot</state>{parent_xml}"
        f"<creationTime>{NOW}</creationTime><memory snapshot='no'/><disks>{disks}</disks>"
        f"<domain><devices>{devices}</devices></domain></domainsnapshot>"
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """base, sn1..sn4 as files (their content does not matter to the structural rules)."""
    paths = {}
    for name in ("base", "sn1", "sn2", "sn3", "sn4"):
        path = tmp_path / f"{name}.qcow2"
        path.write_bytes(b"x")
        os.utime(path, (NOW, NOW))  # written before the snapshots were taken
        paths[name] = str(path)
    return paths


def chain_of(files: dict[str, str], names: list[str]) -> Chain:
    """A chain listed active first."""
    layers = [Layer(files[n], "qcow2", i) for i, n in enumerate(names)]
    return Chain(layers, "dom", "vda")


def lab_snapshots(files: dict[str, str]):
    """s1..s4 as virsh snapshot-create-as --disk-only leaves them: sK froze the file below snK."""
    below = ["base", "sn1", "sn2", "sn3"]
    return [
        parse_snapshot(
            snapshot_xml(
                f"s{k}",
                f"s{k - 1}" if k > 1 else None,
                {"vda": (files[below[k - 1]], files[f"sn{k}"])},
            ),
            current=k == 4,
        )
        for k in range(1, 5)
    ]


def test_parse_names_moment_file_and_overlay(files):
    snap = lab_snapshots(files)[1]
    assert snap.name == "s2" and snap.parent == "s1"
    moment = snap.moments["vda"]
    assert moment.file == files["sn1"] and moment.overlay == files["sn2"]
    assert not snap.has_memory


def test_a_disk_the_snapshot_skips_has_no_moment(files):
    xml = (
        snapshot_xml("s1", None, {"vda": (files["base"], files["sn1"])})
        .replace("</disks>", "<disk name='vdb' snapshot='no'/></disks>")
        .replace(
            "</devices>",
            f"<disk type='file' device='disk'><source file='{files['sn4']}'/>"
            "<target dev='vdb'/></disk></devices>",
        )
    )
    assert set(parse_snapshot(xml, False).moments) == {"vda"}


def test_overlay_on_its_file_is_intact(files):
    snaps = lab_snapshots(files)
    chain = chain_of(files, ["sn4", "sn3", "sn2", "sn1", "base"])
    for i, snap in enumerate(snaps):
        judged = judge(snap, snap.moments["vda"], chain, snaps[i + 1 :])
        assert judged.state == INTACT and judged.in_chain


def test_commit_outside_vshx_is_unknown_never_intact(files):
    """sn2 committed into sn1 by another tool: s2's file sn1 changed, s3's left the chain."""
    snaps = lab_snapshots(files)
    chain = chain_of(files, ["sn4", "sn3", "sn1", "base"])
    s2 = judge(snaps[1], snaps[1].moments["vda"], chain, snaps[2:])
    s3 = judge(snaps[2], snaps[2].moments["vda"], chain, snaps[3:])
    assert s2.state == UNKNOWN and s3.state == UNKNOWN


def test_a_newer_snapshot_on_the_same_file_means_the_older_moment_is_gone(files):
    """After re-pointing s3 at sn1 (its moment moved there), s2's moment in sn1 is gone."""
    snaps = lab_snapshots(files)
    snaps[2] = parse_snapshot(
        snapshot_xml("s3", "s2", {"vda": (files["sn1"], files["sn3"])}), current=False
    )
    chain = chain_of(files, ["sn4", "sn3", "sn1", "base"])
    assert judge(snaps[1], snaps[1].moments["vda"], chain, snaps[2:]).state == GONE
    assert judge(snaps[2], snaps[2].moments["vda"], chain, snaps[3:]).state == INTACT


def test_missing_file_and_active_file_are_gone(files):
    snaps = lab_snapshots(files)
    chain = chain_of(files, ["sn1", "base"])  # sn1 became active (an active commit pivoted)
    assert judge(snaps[1], snaps[1].moments["vda"], chain, []).state == GONE
    os.unlink(files["sn2"])
    assert judge(snaps[2], snaps[2].moments["vda"], chain, []).state == GONE


def test_a_deleted_file_whose_overlay_still_reads_through_a_file_is_unknown(files):
    """atk17 F3: `virsh blockcommit --delete` of sn3,sn2 into sn1 deletes s4's moment file
    (sn3), but sn4 (the overlay s4 made) now reads through sn1, which shows that moment: with
    no record of the commit, vshx cannot say it is gone (fail closed: unknown)."""
    snaps = lab_snapshots(files)
    os.unlink(files["sn2"])
    os.unlink(files["sn3"])
    chain = chain_of(files, ["sn4", "sn1", "base"])
    judged = judge(snaps[3], snaps[3].moments["vda"], chain, [])
    assert judged.state == UNKNOWN
    assert "sn3.qcow2 no longer exists" in judged.why and "through sn1.qcow2" in judged.why
    # s3's overlay (sn3) is gone too: nothing can show its moment
    assert judge(snaps[2], snaps[2].moments["vda"], chain, []).state == GONE
    # a pull that took everything into sn4: nothing below it, the moment is gone
    pulled = chain_of(files, ["sn4"])
    assert judge(snaps[3], snaps[3].moments["vda"], pulled, []).state == GONE


def test_commit_moves_the_top_moment_and_loses_the_ones_below(files):
    snaps = lab_snapshots(files)
    chain = chain_of(files, ["sn4", "sn3", "sn2", "sn1", "base"])
    judged = {s.name: judge(s, s.moments["vda"], chain, []) for s in snaps}
    top, base = chain.layers[1], chain.layers[3]  # commit sn3 (s4's moment) into sn1
    writes = [(base, top)]
    moved, lost = after_writes(judged["s4"], chain, writes)
    assert lost is None and moved.state == MERGED and moved.holder == files["sn1"]
    assert after_writes(judged["s3"], chain, writes)[1]  # sn2 sits on sn1, which changes
    assert after_writes(judged["s2"], chain, writes)[1]  # sn1 itself takes in sn3
    assert after_writes(judged["s1"], chain, writes) == (judged["s1"], None)


def test_active_commit_moves_no_moment(files):
    snaps = lab_snapshots(files)
    chain = chain_of(files, ["sn4", "sn3", "sn2", "sn1", "base"])
    s4 = judge(snaps[3], snaps[3].moments["vda"], chain, [])
    _moment, lost = after_writes(s4, chain, [(chain.layers[3], chain.layers[0])])
    assert lost  # sn3 sits on sn1, which takes in the active layer's data


def test_a_record_is_void_once_the_file_changed(files):
    snap = lab_snapshots(files)[2]
    chain = chain_of(files, ["sn4", "sn1", "base"])
    verdict = Verdict("s3", NOW, "vda", MERGED, files["sn1"], "moved", stamp(), files["sn2"])
    assert recorded(snap.moments["vda"], verdict, chain).state == MERGED
    later = time.time_ns() + 10 * 10**9  # written by someone else, well after the record
    os.utime(files["sn1"], ns=(later, later))
    assert recorded(snap.moments["vda"], verdict, chain).state == UNKNOWN


def test_parents_come_first_even_within_one_second(files):
    snaps = list(reversed(lab_snapshots(files)))
    assert [s.name for s in in_time_order(snaps)] == ["s1", "s2", "s3", "s4"]


def test_repointed_xml_names_the_holder(files):
    snap = lab_snapshots(files)[2]
    snap.moments["vda"] = snap.moments["vda"].__class__(
        "vda", files["sn2"], files["sn3"], MERGED, files["sn1"], "moved", True
    )
    xml = repointed_xml(snap)
    assert xml is not None and files["sn1"] in xml and f'file="{files["sn2"]}"' not in xml


def test_repointed_xml_names_the_holders_format(files):
    """sn2 (qcow2) committed into a raw file: the disk names it type='raw', no backing chain."""
    snap = parse_snapshot(
        snapshot_xml("s3", "s2", {"vda": (files["sn2"], files["sn3"])}).replace(
            "<source file", "<driver type='qcow2'/><source file", 2
        ),
        False,
    )
    snap.moments["vda"] = snap.moments["vda"].__class__(
        "vda", files["sn2"], files["sn3"], MERGED, files["base"], "moved", True
    )
    xml = repointed_xml(snap, {os.path.realpath(files["base"]): "raw"})
    assert xml is not None
    root = ET.fromstring(xml)
    assert root.find("./domain/devices/disk/driver").get("type") == "raw"  # type: ignore[union-attr]
    assert root.find("./domain/devices/disk/source").get("file") == files["base"]  # type: ignore[union-attr]


def test_repointed_xml_follows_merged_files_on_skipped_disks(files):
    """s2 skipped vdb (its <domain> names sn1, active then, a backing chain below it); sn1 was
    merged into base: vdb names base; vda's backing chain loses sn1; its moments stay."""
    xml = snapshot_xml("s2", "s1", {"vda": (files["sn2"], files["sn3"])})
    xml = xml.replace(
        "</devices>",
        f"<disk type='file' device='disk'><driver type='qcow2'/><source file='{files['sn1']}'/>"
        f"<backingStore type='file'><source file='{files['base']}'/></backingStore>"
        "<target dev='vdb'/></disk></devices>",
    ).replace(
        f"<source file='{files['sn2']}'/><target dev='vda'/>",
        f"<source file='{files['sn2']}'/><backingStore type='file'>"
        f"<source file='{files['sn1']}'/><backingStore type='file'>"
        f"<source file='{files['base']}'/></backingStore></backingStore><target dev='vda'/>",
    )
    snap = parse_snapshot(xml, False)
    assert set(snap.moments) == {"vda"}
    snap.moments["vda"] = snap.moments["vda"].__class__(
        "vda", files["sn2"], files["sn3"], INTACT, files["sn2"], "", True
    )
    sn1, base = os.path.realpath(files["sn1"]), files["base"]
    aliases = {f"vdb:{sn1}": base, f"vda:{sn1}": base}
    out = repointed_xml(snap, {os.path.realpath(base): "qcow2"}, aliases, moments=False)
    assert out is not None
    disks = {
        d.find("target").get("dev"): d  # type: ignore[union-attr]
        for d in ET.fromstring(out).findall("./domain/devices/disk")
    }
    assert disks["vdb"].find("source").get("file") == base  # type: ignore[union-attr]
    assert disks["vdb"].find("backingStore") is None
    assert disks["vda"].find("source").get("file") == files["sn2"]  # type: ignore[union-attr]
    chain = [n.get("file") for n in disks["vda"].iter("source")]
    assert chain == [files["sn2"], base]
    assert repointed_xml(snap, {}, {}, moments=False) is None


def test_finish_command_for_a_half_merged_snapshot(tmp_path: Path):
    """vda's sn2 was committed into sn1 (s3's moment now there); vdb still holds both."""
    paths = {}
    for name in ("a1", "a2", "a3", "b1", "b2", "b3"):
        paths[name] = str(tmp_path / name)
        Path(paths[name]).write_bytes(b"x")
    s2 = parse_snapshot(
        snapshot_xml(
            "s2", None, {"vda": (paths["a1"], paths["a2"]), "vdb": (paths["b1"], paths["b2"])}
        ),
        False,
    )
    s3 = parse_snapshot(
        snapshot_xml(
            "s3", "s2", {"vda": (paths["a2"], paths["a3"]), "vdb": (paths["b2"], paths["b3"])}
        ),
        False,
    )
    m = s2.moments
    s2 = s2._replace(
        moments={
            "vda": m["vda"].__class__("vda", paths["a1"], paths["a2"], GONE, None, "taken in"),
            "vdb": m["vdb"].__class__(
                "vdb", paths["b1"], paths["b2"], INTACT, paths["b1"], "", True
            ),
        }
    )
    n = s3.moments
    s3 = s3._replace(
        moments={
            "vda": n["vda"].__class__(
                "vda", paths["a2"], paths["a3"], MERGED, paths["a1"], "", True
            ),
            "vdb": n["vdb"].__class__(
                "vdb", paths["b2"], paths["b3"], INTACT, paths["b2"], "", True
            ),
        }
    )
    assert s2.half_merged and not s3.half_merged
    timeline = Timeline("dom", [s2, s3], {}, set(), {})
    line = finish_command(timeline, s2, "dom")
    assert line == f"vshx commit dom vdb --top {paths['b2']} --base {paths['b1']}"


def test_a_snapshot_read_twice_has_its_children_once():
    """read_snapshots(..., "both") lists a snapshot named with a line break once per reading
    of its XML (chain.readings): in time order its children still come once."""
    a1, a2, b = (
        parse_snapshot(snapshot_xml(name, parent, {"vda": ("/b", overlay)}), False)
        for name, parent, overlay in (
            ("a", None, "/a&#10;1"),
            ("a", None, "/a 1"),
            ("b", "a", "/c"),
        )
    )
    ordered = in_time_order([a1, a2, b])
    assert sorted(s.name for s in ordered) == ["a", "a", "b"] and ordered[0].name == "a"
    assert {s.moments["vda"].overlay for s in ordered if s.name == "a"} == {"/a\n1", "/a 1"}
