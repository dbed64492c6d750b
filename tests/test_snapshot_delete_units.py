"""snapshot-delete and snapshot-revert: the pure parts (no libvirt): names, XML re-pointing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vshx_plugins.snapshot_layers import DiskWork
from vshx_plugins.snapshot_metadata import (
    moment_files,
    nearest_kept,
    redefined_xml,
)

from vshx.merging.moments import splice_backing
from vshx.plans.target import Target
from vshx.storage.chain import Chain, Layer
from vshx.storage.moments import Moment, parse_snapshot

SNAP = """<domainsnapshot><name>s3</name><state>disk-snapshot</state>
<parent><name>s2</name></parent><creationTime>5</creationTime><memory snapshot='no'/>
<disks><disk name='vda' snapshot='external' type='file'><source file='/d/sn3.qcow2'/></disk>
</disks><domain type='qemu'><name>d</name><devices>
<disk type='file' device='disk'><source file='/d/sn2.qcow2'/>
<backingStore type='file'><source file='/d/sn1.qcow2'/>
<backingStore type='file'><source file='/d/base.qcow2'/></backingStore></backingStore>
<target dev='vda'/></disk></devices></domain></domainsnapshot>"""


def chain() -> Chain:
    names = ["sn3", "sn2", "sn1", "base"]
    return Chain([Layer(f"/d/{n}.qcow2", "qcow2", i) for i, n in enumerate(names)], "d", "vda")


def work_moving_sn2_into_sn1() -> DiskWork:
    target = Target(chain())
    layers = target.chain.layers
    work = DiskWork("vda", target, top=layers[1], base=layers[2], removed=[layers[1]])
    work.files = [layers[1].path]
    work.moves = {layers[1].canonical: layers[2].path}
    return work


def test_nearest_kept_skips_deleted_ancestors() -> None:
    parents = {"s3": "s2", "s2": "s1"}
    assert nearest_kept(parents, "s3") == "s1"
    assert nearest_kept(parents, "s1") == "s1"
    assert nearest_kept({"s1": None}, "s1") is None


def test_a_child_is_repointed_at_the_file_that_holds_its_moment() -> None:
    snap = parse_snapshot(SNAP, current=False)
    snap.moments["vda"] = Moment("vda", "/d/sn2.qcow2", "/d/sn3.qcow2", "intact", "/d/sn2.qcow2")
    works = {"vda": work_moving_sn2_into_sn1()}
    assert moment_files(snap, works) == {"vda": "/d/sn1.qcow2"}
    xml = redefined_xml(snap, works, "s1", reparent=True)
    assert xml is not None
    root = ET.fromstring(xml)
    disk = root.find("./domain/devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/d/sn1.qcow2"  # type: ignore[union-attr]
    assert disk.find("backingStore") is None  # libvirt reads the new file's chain itself
    assert root.findtext("./parent/name") == "s1"


def test_an_unknown_moment_named_by_a_removed_file_follows_the_merge() -> None:
    snap = parse_snapshot(SNAP, current=False)
    snap.moments["vda"] = Moment("vda", "/d/sn2.qcow2", "/d/sn3.qcow2", "unknown")
    assert moment_files(snap, {"vda": work_moving_sn2_into_sn1()}) == {"vda": "/d/sn1.qcow2"}


def test_removed_layers_leave_backing_chains() -> None:
    disk = ET.fromstring(
        "<disk><source file='/d/sn3.qcow2'/><backingStore><source file='/d/sn2.qcow2'/>"
        "<backingStore><source file='/d/sn1.qcow2'/></backingStore></backingStore></disk>"
    )
    assert splice_backing(disk, {"/d/sn2.qcow2"})
    below = disk.find("backingStore")
    assert below is not None
    assert below.find("source").get("file") == "/d/sn1.qcow2"  # type: ignore[union-attr]
    assert not splice_backing(disk, {"/d/other.qcow2"})


SKIPPED = """<domainsnapshot><name>s2</name><state>disk-snapshot</state>
<parent><name>s1</name></parent><creationTime>5</creationTime><memory snapshot='no'/>
<disks><disk name='vda' snapshot='no'/></disks><domain type='qemu'><name>d</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/d/sn2.qcow2'/>
<backingStore type='file'><format type='qcow2'/><source file='/d/sn1.qcow2'/></backingStore>
<target dev='vda'/></disk></devices></domain></domainsnapshot>"""


def test_a_disk_the_snapshot_skipped_follows_the_layer_it_names() -> None:
    """snapshot='no' on vda: no moment there, but its <domain> names sn2, the file active then;
    the delete merges sn2 into sn1 (raw here): vda names sn1, type='raw', as libvirt writes."""
    snap = parse_snapshot(SKIPPED, current=False)
    assert "vda" not in snap.moments
    work = work_moving_sn2_into_sn1()
    layers = work.target.chain.layers
    layers[2] = Layer(layers[2].path, "raw", 2)
    work.base = layers[2]
    xml = redefined_xml(snap, {"vda": work}, "s1", reparent=False)
    assert xml is not None
    disk = ET.fromstring(xml).find("./domain/devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/d/sn1.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert disk.find("backingStore") is None


def test_a_skipped_disk_naming_a_pulled_file_names_the_active_layer() -> None:
    """A pull copies sn2 up into the active sn3 and removes it: sn3 holds its content now."""
    snap = parse_snapshot(SKIPPED, current=False)
    target = Target(chain())
    layers = target.chain.layers
    work = DiskWork("vda", target, top=layers[0], base=layers[1], removed=[layers[1]])
    work.route, work.files = "pull", [layers[1].path]
    xml = redefined_xml(snap, {"vda": work}, None, reparent=False)
    assert xml is not None
    disk = ET.fromstring(xml).find("./domain/devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/d/sn3.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_a_name_and_current_together_are_refused_as_in_virsh() -> None:
    import pytest
    from vshx_plugins.snapshot_delete import pick_name

    from vshx.errors import UsageError
    from vshx.spec.spec import Args

    with pytest.raises(UsageError, match="mutually exclusive"):
        pick_name(None, Args(snapshotname="s2", current=True))  # type: ignore[arg-type]
