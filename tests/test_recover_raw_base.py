"""recover after an offline qemu-img commit failed on a chain over a raw base (an admin's raw
template with qcow2 overlays): its leak repair names only the qcow2 layers, with ``-f qcow2``
(atk14 F3).  Before, ``qemu-img check -r leaks base.raw`` without ``-f`` failed on every raw
base (the journal could never be cleared) and, where the guest's bytes at the start of the
raw disk looked like a qcow2 header, qemu-img opened them as one and wrote into them."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def qemu(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def guest_view(active: Path, tmp: Path) -> str:
    """What the guest reads: the chain converted to raw, hashed."""
    out = tmp / "view.raw"
    qemu("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(active), str(out))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_recover_repairs_only_qcow2_layers_and_never_probes_a_raw_base(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    base, o1, o2, o3 = (images / n for n in ("base.raw", "o1.qcow2", "o2.qcow2", "o3.qcow2"))
    qemu("qemu-img", "create", "-q", "-f", "raw", str(base), "64M")
    # the guest wrote a qcow2-looking header at the start of its raw disk (an image it keeps,
    # a dd'ed volume), with an autoclear bit set that a qcow2 open would clear
    header = tmp_path / "looks.qcow2"
    qemu("qemu-img", "create", "-q", "-f", "qcow2", str(header), "1M")
    looks = bytearray(header.read_bytes())
    looks[88] = 0x80
    with base.open("r+b") as disk:
        disk.write(looks)
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(o1))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x22 1M 1M", str(o1))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o1), str(o2))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x33 2M 1M", str(o2))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o2), str(o3))
    name = f"{LAB_PREFIX}rawbase-{uuid.uuid4().hex[:6]}"
    virsh(
        "define",
        "/dev/stdin",
        stdin=(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{o3}'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>"
        ),
    )
    try:
        view = guest_view(o3, tmp_path)
        raw = base.read_bytes()
        qemu("chattr", "+i", str(o1))  # the commit's qemu-img fails before writing anything
        try:
            failed = run_vshx("commit", name, "vda", "--top", str(o2), "--base", str(o1))
        finally:
            qemu("chattr", "-i", str(o1))
        assert failed.returncode == 1, failed.stdout + failed.stderr
        planned = run_vshx("recover", name, "vda", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        repairs = [line for line in planned.stdout.splitlines() if "check" in line]
        assert repairs and all("-f qcow2 -r leaks" in line for line in repairs), repairs
        assert not any("base.raw" in line for line in repairs), repairs
        recovered = run_vshx("recover", name, "vda")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert base.read_bytes() == raw  # the guest's raw bytes, untouched
        assert guest_view(o3, tmp_path) == view
        jobs = run_vshx("jobs", name)
        assert "no interrupted vshx operations" in jobs.stdout, jobs.stdout
        for layer in (o1, o2, o3):
            qemu("qemu-img", "check", "-q", "-f", "qcow2", str(layer))
    finally:
        virsh("undefine", name)
