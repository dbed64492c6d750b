"""snapshot-revert to a snapshot whose moment is a block device (a qcow2 on a loop device):
the new overlay goes beside the disk's active layer, not into /dev (devtmpfs, where QEMU's
mount namespace cannot follow it: the domain did not start; found by the fifth outside
attack)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, chain_files, run_vshx, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # losetup


def test_revert_to_a_block_device_moment_puts_the_overlay_beside_the_active_layer(
    tmp_path: Path,
):
    backing = tmp_path / "device.img"
    backing.write_bytes(b"")
    os.truncate(backing, 32 << 20)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = f"{LAB_PREFIX}blockrev-{uuid.uuid4().hex[:8]}"
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
        for snap in ("s1", "s2"):
            virsh(
                "snapshot-create-as", name, snap, "--disk-only",
                "--diskspec", f"vda,snapshot=external,file={tmp_path / (snap + '.qcow2')}",
            )  # fmt: skip
        proc = run_vshx("snapshot-revert", name, "s1")
        assert proc.returncode == 0, proc.stderr
        overlay = tmp_path / f"{Path(device).name}.s1-revert.qcow2"
        assert overlay.is_file(), (proc.stdout, proc.stderr)
        assert not list(Path("/dev").glob("*-revert*.qcow2"))
        assert chain_files(overlay) == [overlay.name, Path(device).name]
        listed = virsh("domblklist", name).stdout
        assert str(overlay) in listed
        virsh("start", name)
        virsh("destroy", name)
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )
        subprocess.run(["losetup", "-d", device], capture_output=True)
