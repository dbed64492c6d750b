"""Disks that are not local files: vshx never takes a network disk's name for a path.

A ``<disk type='network'>`` names an export, image or volume on another server (``<source
protocol='nbd' name='x'>``); read as a file name it would point vshx at whatever ``x`` is in the
shell's directory (an outside attack had `commit --active` write into such a file's backing).
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, URI, define_domain, make_overlay, run_vshx, virsh
from vshx.storage.chain import disks_from_xml

DEVICES = """
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='{dir}/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='network' device='disk'><driver name='qemu' type='qcow2'/>
  <source protocol='nbd' name='x'><host name='127.0.0.1' port='10809'/></source>
  <target dev='vdb' bus='virtio'/></disk>
<disk type='block' device='disk'><driver name='qemu' type='raw'/>
  <source dev='/dev/null'/><target dev='vdc' bus='virtio'/></disk>
<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
  <source pool='default' volume='v.qcow2'/><target dev='vdd' bus='virtio'/></disk>
"""


def test_only_file_and_block_disks_name_a_path() -> None:
    xml = f"<domain><devices>{DEVICES.format(dir='/images')}</devices></domain>"
    found = {d.target: d for d in disks_from_xml(xml)}
    assert found["vda"].source == "/images/a.qcow2" and found["vda"].kind == "file"
    assert found["vdb"].source is None and found["vdb"].kind == "network"
    assert found["vdb"].remote == "nbd x"
    assert found["vdc"].source == "/dev/null" and found["vdc"].kind == "block"
    assert found["vdd"].source is None and found["vdd"].kind == "volume"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.libvirt
def test_a_network_disk_is_refused_never_read_as_a_file_here(tmp_path: Path) -> None:
    """A qcow2 file named like the nbd export, in the directory vshx runs in: `chain` shows
    the file disk and says the network disk is not read; chain/commit/pull of that disk refuse
    with error + hint, for a real run as for --dry-run, and no file changes."""
    images = tmp_path / "images"
    images.mkdir()
    for argv in (
        ["qemu-img", "create", "-q", "-f", "qcow2", str(images / "a.qcow2"), "16M"],
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "xb.qcow2"), "16M"],
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "xb.qcow2", "-F", "qcow2", "x"],
    ):
        subprocess.run(argv, check=True, cwd=tmp_path)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 64k", str(tmp_path / "x")], check=True
    )
    name = f"{LAB_PREFIX}net-{uuid.uuid4().hex[:6]}"
    devices = DEVICES.format(dir=images).split("<disk type='block'")[0]
    virsh(
        "define",
        "/dev/stdin",
        stdin=(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<devices>{devices}<memballoon model='none'/></devices></domain>"
        ),
    )
    try:
        before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
        shown = run_vshx("chain", name, cwd=str(tmp_path))
        assert shown.returncode == 0, shown.stderr
        assert "a.qcow2" in shown.stdout and "xb.qcow2" not in shown.stdout
        assert "vdb: a network disk (nbd x), not shown" in shown.stderr
        for words in (
            ["chain", name, "vdb"],
            ["commit", name, "vdb", "--active"],
            ["--dry-run", "commit", name, "vdb", "--active"],
            ["pull", name, "vdb"],
        ):
            proc = run_vshx(*words, cwd=str(tmp_path))
            assert proc.returncode == 1, (words, proc.stdout, proc.stderr)
            assert "is a network disk (nbd x)" in proc.stderr and "hint:" in proc.stderr
            assert "Traceback" not in proc.stderr and "qemu-img" not in proc.stdout
        assert {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()} == before
        assert "unfinished" not in run_vshx("chain", name, cwd=str(tmp_path)).stderr
    finally:
        subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)


@pytest.mark.libvirt
@pytest.mark.root  # a storage pool on the system daemon
def test_a_pool_volume_under_snapshots_is_refused_by_name(tmp_path: Path) -> None:
    """A disk made on a pool volume, then snapshotted: the live chain's bottom is
    ``<backingStore type='volume'>``, no path libvirt gives.  vshx says so (not "the definition
    disagrees with the headers", whose hint would rewrite the volume as a file) and changes
    nothing; libvirt's own commands work there."""
    pool, name = (
        f"{LAB_PREFIX}pool-{uuid.uuid4().hex[:6]}",
        f"{LAB_PREFIX}vol-{uuid.uuid4().hex[:6]}",
    )
    virsh("pool-create-as", pool, "dir", "--target", str(tmp_path))
    try:
        virsh("vol-create-as", pool, "v.qcow2", "16M", "--format", "qcow2")
        virsh(
            "create",
            "/dev/stdin",
            stdin=(
                f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
                "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source pool='{pool}' volume='v.qcow2'/><target dev='vda' bus='virtio'/>"
                "</disk><memballoon model='none'/></devices></domain>"
            ),
        )
        for n in (1, 2):
            virsh(
                "snapshot-create-as", name, f"s{n}", "--disk-only", "--atomic", "--no-metadata",
                "--diskspec", f"vda,file={tmp_path / f'a{n}.qcow2'}",
            )  # fmt: skip
        before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
        for words in (
            ["commit", name, "vda", "--top", "a1.qcow2"],
            ["--dry-run", "commit", name, "vda", "--active", "--pivot"],
            ["pull", name, "vda"],
        ):
            proc = run_vshx(*words)
            assert proc.returncode == 1, (words, proc.stdout, proc.stderr)
            assert f"(volume {pool}/v.qcow2)" in proc.stderr and "hint:" in proc.stderr
            assert "disagrees" not in proc.stderr and "Traceback" not in proc.stderr
        assert {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()} == before
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
        subprocess.run(["virsh", "-c", URI, "pool-destroy", pool], capture_output=True)


@pytest.mark.libvirt
def test_a_disk_whose_file_is_missing_does_not_hide_the_others(tmp_path: Path) -> None:
    """An outside tester: one disk's missing file made `chain DOMAIN` fail for every disk, with
    a hint pointing back at the failing command; an empty cdrom's error had no hint."""
    base = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    top = tmp_path / "t.qcow2"
    make_overlay(top, str(base))
    name = f"{LAB_PREFIX}missing-{uuid.uuid4().hex[:6]}"
    define_domain(name, {"vda": top, "vdb": tmp_path / "missing.qcow2"})
    try:
        whole = run_vshx("chain", name)
        assert whole.returncode == 0, whole.stderr
        assert "t.qcow2" in whole.stdout and "b.qcow2" in whole.stdout
        assert "vdb: not shown: " in whole.stderr and "missing.qcow2" in whole.stderr
        one = run_vshx("chain", name, "vdb")
        assert one.returncode == 1 and "missing.qcow2" in one.stderr, one.stderr
        assert "chain DOMAIN DISK shows which" not in one.stderr and "hint: " in one.stderr
        virsh("attach-disk", name, "", "hdc", "--type", "cdrom", "--config")
        empty = run_vshx("chain", name, "hdc")
        assert empty.returncode == 1 and "no source file" in empty.stderr, empty.stderr
        assert "hint: " in empty.stderr and "Traceback" not in empty.stderr
    finally:
        virsh("undefine", name)
