"""Snapshots whose moment is a block device (a qcow2 on a loop device), as the fifth outside
attack left them: snapshot-revert made its new overlay in /dev (devtmpfs, where QEMU's mount
namespace cannot follow it: the domain did not start), and a merge that moved a moment onto
the device wrote ``type='file'`` ``<source file='/dev/loopN'/>`` into the snapshots' saved
definitions (libvirt names a device ``type='block'`` ``<source dev=...>``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, chain_files, loop_over, run_vshx, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # losetup


@pytest.fixture
def block_domain(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A shut-off domain on a qcow2 on a loop device, with disk-only snapshots s1, s2, s3
    (libvirt's offline external snapshots: overlays s1.qcow2... in ``tmp_path``), each after a
    write into the layer it freezes; (domain, device)."""
    backing = tmp_path / "device.img"
    backing.write_bytes(b"")
    os.truncate(backing, 32 << 20)
    name = f"{LAB_PREFIX}block-{uuid.uuid4().hex[:8]}"
    with loop_over(backing) as device, undefined_at_end(name):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", device, "16M"], check=True)
        virsh(
            "define",
            "/dev/stdin",
            stdin=f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices>"
            "<disk type='block' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source dev='{device}'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>",
        )
        active = device
        for number in (1, 2, 3):
            write = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{number}1 1M 64k", active]
            subprocess.run(write, check=True, capture_output=True)
            active = str(tmp_path / f"s{number}.qcow2")
            virsh(
                "snapshot-create-as", name, f"s{number}", "--disk-only",
                "--diskspec", f"vda,snapshot=external,file={active}",
            )  # fmt: skip
        yield name, device


@contextlib.contextmanager
def undefined_at_end(name: str) -> Iterator[None]:
    try:
        yield
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )


def test_revert_to_a_block_device_moment_puts_the_overlay_beside_the_active_layer(
    block_domain: tuple[str, str], tmp_path: Path
):
    name, device = block_domain
    proc = run_vshx("snapshot-revert", name, "s1")
    assert proc.returncode == 0, proc.stderr
    overlay = tmp_path / f"{Path(device).name}.s1-revert.qcow2"
    assert overlay.is_file(), (proc.stdout, proc.stderr)
    assert not list(Path("/dev").glob("*-revert*.qcow2"))
    assert chain_files(overlay) == [overlay.name, Path(device).name]
    assert str(overlay) in virsh("domblklist", name).stdout
    virsh("start", name)
    virsh("destroy", name)


def test_a_moment_moved_onto_a_device_is_named_as_a_device(block_domain: tuple[str, str]):
    name, device = block_domain
    proc = run_vshx("snapshot-delete", name, "s1")
    assert proc.returncode == 0, proc.stderr
    saved = ET.fromstring(virsh("snapshot-dumpxml", name, "s2").stdout)
    disk = saved.find("./domain/devices/disk")
    assert disk is not None
    source = disk.find("source")
    assert source is not None
    shown = ET.tostring(disk, encoding="unicode")
    named = (disk.get("type"), source.get("dev"), source.get("file"))
    assert named == ("block", device, None), shown
