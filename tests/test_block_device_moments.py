"""Snapshots whose moment is a block device (a qcow2 on a loop device), as the fifth outside
attack left them: snapshot-revert made its new overlay in /dev (devtmpfs, where QEMU's mount
namespace cannot follow it: the domain did not start), and a merge that moved a moment onto
the device wrote ``type='file'`` ``<source file='/dev/loopN'/>`` into the snapshots' saved
definitions (libvirt names a device ``type='block'`` ``<source dev=...>``)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import chain_files, domain_on_loop_device, run_vshx, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # losetup


@pytest.fixture
def block_domain(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A shut-off domain on a qcow2 on a loop device, with disk-only snapshots s1, s2, s3
    (libvirt's offline external snapshots: overlays s1.qcow2... in ``tmp_path``), each after a
    write into the layer it freezes; (domain, device)."""
    with domain_on_loop_device(tmp_path, 32 << 20, "block") as (name, device):
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
