"""The ``<domain>`` block of the snapshots vshx re-points, next to libvirt's own on a twin.

Two domains are built the same way (virsh define/start, guest writes through QEMU, ``virsh
snapshot-create-as --disk-only --atomic``); libvirt's ``virsh snapshot-delete`` runs on one, vshx
on the other, and every remaining snapshot's ``<domain>`` must name, per disk, the same file with
the same ``<driver type>`` as libvirt's.  A domain defined from such a ``<domain>`` (renamed, no
UUID, its disks read-only) must start: a raw file named with ``type='qcow2'`` ("Image is not in
qcow2 format"), or a file vshx deleted, does not.
"""

from __future__ import annotations

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, URI, run_vshx, virsh

pytestmark = pytest.mark.libvirt

DISKS = ("vda", "vdb")
LETTER = {"vda": "a", "vdb": "b"}


@dataclass
class Dom:
    name: str
    dir: Path
    running: bool
    raw: bool  # vdb's base is raw (vdb-base.raw)

    def base(self, disk: str) -> Path:
        ext = "raw" if disk == "vdb" and self.raw else "qcow2"
        return self.dir / f"{disk}-base.{ext}"

    def overlay(self, disk: str, k: int) -> Path:
        return self.dir / f"{LETTER[disk]}{k}.qcow2"


def write(dom: Dom, disk: str, pattern: int, offset: int) -> None:
    device = f"virtio-disk{DISKS.index(disk)}/virtio-backend"
    for command in (f"write -q -P {pattern:#x} {offset} 65536", "flush"):
        virsh("qemu-monitor-command", dom.name, "--hmp", f'qemu-io -d {device} "{command}"')


def build(tmp: Path, label: str, running: bool, raw: bool, skip: tuple[str, str] | None) -> Dom:
    """vda-base.qcow2 <- a1 <- a2 <- a3 and vdb-base.(raw|qcow2) <- b1 <- b2 <- b3 from
    snapshots s1, s2, s3 with guest writes between; ``skip`` (snapshot, disk): that snapshot
    is made with ``--diskspec DISK,snapshot=no``."""
    name = f"{LAB_PREFIX}snapxml-{label}-{uuid.uuid4().hex[:6]}"
    directory = tmp / name
    directory.mkdir()
    dom = Dom(name, directory, running, raw)
    devices = ""
    for disk in DISKS:
        base = dom.base(disk)
        fmt = base.suffix[1:]
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(base), "16M"], check=True)
        devices += (
            f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
            f"<source file='{base}'/><target dev='{disk}' bus='virtio'/></disk>"
        )
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{devices}<memballoon model='none'/></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    virsh("start", name)
    for disk in DISKS:
        write(dom, disk, 0x10 + DISKS.index(disk), 0)
    for k in range(1, 4):
        snap = f"s{k}"
        specs = []
        for disk in DISKS:
            if skip == (snap, disk):
                specs += ["--diskspec", f"{disk},snapshot=no"]
            else:
                specs += ["--diskspec", f"{disk},file={dom.overlay(disk, k)}"]
        virsh("snapshot-create-as", name, snap, "--disk-only", "--atomic", *specs)
        for disk in DISKS:
            write(dom, disk, 0x20 + 2 * k + DISKS.index(disk), k * 65536)
    if not running:
        virsh("destroy", name)
    return dom


def destroy(dom: Dom) -> None:
    for args in (["destroy", dom.name], ["undefine", dom.name, "--snapshots-metadata"]):
        subprocess.run(["virsh", "-c", URI, *args], capture_output=True, check=False)


@pytest.fixture
def made() -> Iterator[list[Dom]]:
    doms: list[Dom] = []
    try:
        yield doms
    finally:
        for dom in doms:
            destroy(dom)


def snapshot_names(dom: Dom) -> list[str]:
    return sorted(virsh("snapshot-list", dom.name, "--name").stdout.split())


def domain_block(dom: Dom, snap: str) -> ET.Element:
    root = ET.fromstring(virsh("snapshot-dumpxml", dom.name, snap).stdout)
    block = root.find("domain")
    assert block is not None, f"{snap} has no <domain>"
    return block


def disk_parts(dom: Dom, snap: str) -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    """Per disk of ``snap``'s ``<domain>``: (file, driver type, [(backing file, format)]),
    file names relative to the domain's directory (the twins' directories differ)."""

    def local(path: str | None) -> str:
        return Path(path or "").name if Path(path or "").parent == dom.dir else path or ""

    found = {}
    for disk in domain_block(dom, snap).findall("./devices/disk"):
        target, source, driver = disk.find("target"), disk.find("source"), disk.find("driver")
        assert target is not None and source is not None and driver is not None
        chain = []
        node = disk.find("backingStore")
        while node is not None and node.find("source") is not None:
            below, fmt = node.find("source"), node.find("format")
            assert below is not None
            chain.append((local(below.get("file")), fmt.get("type", "") if fmt is not None else ""))
            node = node.find("backingStore")
        found[target.get("dev", "")] = (local(source.get("file")), driver.get("type", ""), chain)
    return found


def starts_from_snapshot(dom: Dom, snap: str) -> None:
    """Define a domain from ``snap``'s ``<domain>`` (renamed, no UUID, read-only disks) and
    start it: QEMU opens every file it names with the format it names."""
    block = domain_block(dom, snap)
    name_node, uuid_node = block.find("name"), block.find("uuid")
    assert name_node is not None
    name = f"{dom.name}-from-{snap}"
    name_node.text = name
    if uuid_node is not None:
        block.remove(uuid_node)
    for disk in block.findall("./devices/disk"):
        if disk.find("readonly") is None:
            ET.SubElement(disk, "readonly")
    virsh("define", "/dev/stdin", stdin=ET.tostring(block, encoding="unicode"))
    try:
        proc = subprocess.run(
            ["virsh", "-c", URI, "start", name], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"a domain defined from {snap}'s <domain>: {proc.stderr}"
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True, check=False)
        subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True, check=False)


def formats_named(dom: Dom, snap: str) -> None:
    """Every file a snapshot's ``<domain>`` names exists and has the format named there."""
    for disk, (path, kind, chain) in disk_parts(dom, snap).items():
        for name, fmt in [(path, kind), *chain]:
            file = dom.dir / name
            assert file.exists(), f"{snap} {disk}: names {name}, which is gone"
            info = subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", str(file)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f'"format": "{fmt}"' in info, f"{snap} {disk}: {name} named as {fmt}"


def twins(
    made: list[Dom], tmp: Path, running: bool, raw: bool, skip: tuple[str, str] | None
) -> tuple[Dom, Dom]:
    made.append(build(tmp, "native", running, raw, skip))
    made.append(build(tmp, "vshx", running, raw, skip))
    return made[0], made[1]


def compare(native: Dom, ours: Dom, disks: tuple[str, ...] = DISKS) -> None:
    """Each remaining snapshot's ``<domain>`` disks: the file, driver type and backing chain
    (files and formats) libvirt names."""
    for snap in snapshot_names(native):
        theirs, mine = disk_parts(native, snap), disk_parts(ours, snap)
        for disk in disks:
            assert mine[disk] == theirs[disk], (snap, disk, mine[disk], theirs[disk])
        formats_named(ours, snap)
        starts_from_snapshot(ours, snap)


# each case in one domain state, the states alternating (make test's time budget): the
# re-pointing does not depend on it; the twins and the started copies are what cost
@pytest.mark.parametrize("running", [False], ids=["shut-off"])
def test_delete_over_a_raw_base_names_it_raw(
    made: list[Dom], tmp_path: Path, running: bool
) -> None:
    """snapshot-delete s1 commits b1 into vdb-base.raw: s2's <domain> names it type='raw'."""
    native, ours = twins(made, tmp_path, running, raw=True, skip=None)
    virsh("snapshot-delete", native.name, "s1")
    proc = run_vshx("snapshot-delete", ours.name, "s1")
    assert proc.returncode == 0, proc.stderr
    assert snapshot_names(ours) == snapshot_names(native) == ["s2", "s3"]
    assert disk_parts(ours, "s2")["vdb"][:2] == ("vdb-base.raw", "raw")
    compare(native, ours)


@pytest.mark.parametrize(
    ("running", "raw", "skip", "delete"),
    [(True, True, None, False), (False, False, ("s2", "vdb"), True)],
    ids=["raw-running", "skipped-shut-off-delete"],
)
def test_commit_then_cleanup_names_what_native_names(
    made: list[Dom],
    tmp_path: Path,
    running: bool,
    raw: bool,
    skip: tuple[str, str] | None,
    delete: bool,
) -> None:
    """commit b1 into vdb's base (``--delete``: b1 removed), then snapshot-cleanup: on vdb, s2
    and s3 name what libvirt's own snapshot-delete of s1 names there: s2 the base, type='raw'
    for a raw base (s2 made with vdb,snapshot=no names b1, the active file then, whose content
    is now in the base), s3's backing chain without b1."""
    native, ours = twins(made, tmp_path, running, raw=raw, skip=skip)
    virsh("snapshot-delete", native.name, "s1")
    top, base = ours.overlay("vdb", 1), ours.base("vdb")
    words = ["--top", str(top), "--base", str(base)] + (["--delete"] if delete else [])
    proc = run_vshx("commit", ours.name, "vdb", *words)
    assert proc.returncode == 0, proc.stderr
    assert top.exists() != delete
    proc = run_vshx("snapshot-cleanup", ours.name)
    assert proc.returncode == 0, proc.stderr
    assert disk_parts(ours, "s2")["vdb"][:2] == (base.name, "raw" if raw else "qcow2")
    for snap in ("s2", "s3"):
        assert disk_parts(ours, snap)["vdb"] == disk_parts(native, snap)["vdb"], snap
    for snap in snapshot_names(ours):
        formats_named(ours, snap)
        starts_from_snapshot(ours, snap)


@pytest.mark.parametrize("running", [True], ids=["running"])
def test_delete_repoints_a_snapshot_that_skipped_the_disk(
    made: list[Dom], tmp_path: Path, running: bool
) -> None:
    """s2 was taken with vdb,snapshot=no: its <domain> names b1.qcow2 for vdb, which the delete
    of s1 merges into vdb-base.qcow2 and removes; libvirt re-points it there, so must vshx."""
    native, ours = twins(made, tmp_path, running, raw=False, skip=("s2", "vdb"))
    virsh("snapshot-delete", native.name, "s1")
    proc = run_vshx("snapshot-delete", ours.name, "s1")
    assert proc.returncode == 0, proc.stderr
    assert snapshot_names(ours) == snapshot_names(native) == ["s2", "s3"]
    assert disk_parts(ours, "s2")["vdb"][0] == "vdb-base.qcow2"
    compare(native, ours)
