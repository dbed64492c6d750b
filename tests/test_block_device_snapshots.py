"""A snapshot's saved definition names a block device as libvirt does (type='block',
``<source dev=...>``) after a merge moved its moment onto the device (it kept type='file' and
wrote ``<source file='/dev/loopN'/>``; found by the fifth outside attack)."""

from __future__ import annotations

import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, run_vshx, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # losetup


def test_a_moment_moved_onto_a_device_is_named_as_a_device(tmp_path: Path):
    backing = tmp_path / "device.img"
    backing.write_bytes(b"")
    os.truncate(backing, 32 << 20)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = f"{LAB_PREFIX}blocksnap-{uuid.uuid4().hex[:8]}"
    try:
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
        for snap in ("s1", "s2", "s3"):
            write = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{snap[1]}1 1M 64k"]
            active = device if snap == "s1" else str(tmp_path / f"s{int(snap[1]) - 1}.qcow2")
            subprocess.run([*write, active], check=True, capture_output=True)
            virsh(
                "snapshot-create-as", name, snap, "--disk-only",
                "--diskspec", f"vda,snapshot=external,file={tmp_path / (snap + '.qcow2')}",
            )  # fmt: skip
        proc = run_vshx("snapshot-delete", name, "s1")
        assert proc.returncode == 0, proc.stderr
        saved = ET.fromstring(virsh("snapshot-dumpxml", name, "s2").stdout)
        disk = saved.find("./domain/devices/disk")
        assert disk is not None
        source = disk.find("source")
        assert source is not None
        assert (disk.get("type"), source.get("dev"), source.get("file")) == (
            "block",
            device,
            None,
        ), ET.tostring(disk, encoding="unicode")
    finally:
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )
        subprocess.run(["losetup", "-d", device], capture_output=True)
