"""A merge into a qcow2 on a block device checks the device's size, not df of /dev.

QEMU writes a qcow2's new clusters past the highest one in use, up to the device's end; a
commit that does not fit fails with ENOSPC midway, the base partly written.  vshx refuses it
before anything changes, and its --dry-run script stops on an ``lsblk ... | awk`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import (
    chain_files,
    domain_on_loop_device,
    file_state,
    guest_hash,
    loop_over,
    release_remote,
    run_vshx,
    virsh,
)
from sshd import Sshd, hidden
from test_remote import remote_vshx

from vshx.errors import VshxError
from vshx.storage import host
from vshx.storage.qcow2_growth import growth

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # losetup, hidden() mounts

MiB = 1 << 20


class BlockLab(NamedTuple):
    name: str
    device: str
    backing: Path  # the file under the loop device
    directory: Path  # the overlays


@contextlib.contextmanager
def block_lab(tmp_path: Path, s1_writes: int) -> Iterator[BlockLab]:
    """A shut-off domain whose disk chain is an 8 MiB loop device (a qcow2 with 2 MiB of
    data) <- s1.qcow2 (``s1_writes`` bytes) <- s2.qcow2 (active, 64 KiB)."""
    backing = tmp_path / "device.img"
    with domain_on_loop_device(tmp_path, 8 * MiB, "blkspace") as (name, device):
        writes = [(device, 0x11, 0, 2 * MiB)]
        writes += [(str(tmp_path / "s1.qcow2"), 0x22, 4 * MiB, s1_writes)]
        writes += [(str(tmp_path / "s2.qcow2"), 0x33, 1 * MiB, 64 << 10)]
        for number, (image, pattern, offset, length) in enumerate(writes):
            if number:  # an offline external snapshot: the overlay becomes the active layer
                virsh(
                    "snapshot-create-as", name, f"s{number}", "--disk-only",
                    "--diskspec", f"vda,snapshot=external,file={image}",
                )  # fmt: skip
            write = f"write -P {pattern:#x} {offset} {length}"
            subprocess.run(
                ["qemu-io", "-f", "qcow2", "-c", write, image], check=True, capture_output=True
            )
        yield BlockLab(name, device, backing, tmp_path)


def device_bytes(device: str) -> str:
    with open(device, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def state(lab: BlockLab) -> tuple[list[str], str, dict[str, bytes], str, str]:
    """The chain, the device's bytes, the overlays' bytes and the domain's XML (as it runs,
    and as defined)."""
    chain = chain_files(lab.directory / "s2.qcow2")
    xml = virsh("dumpxml", lab.name).stdout, virsh("dumpxml", "--inactive", lab.name).stdout
    return chain, device_bytes(lab.device), file_state(lab.directory), *xml


def commit(lab: BlockLab, *more: str) -> tuple[str, ...]:
    return ("commit", lab.name, "vda", "--top", "s1.qcow2", "--base", lab.device, *more)


@pytest.mark.parametrize("running", [False, True], ids=["offline", "live"])
def test_a_commit_that_would_overflow_the_device_is_refused_before_anything_changes(
    tmp_path: Path, running: bool
):
    with block_lab(tmp_path, 6 * MiB) as lab:
        if running:  # a libvirt block commit: QEMU writes the base
            virsh("start", lab.name)
        before = state(lab)
        refused = run_vshx(*commit(lab))
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "error: not enough room on the block device" in refused.stderr
        assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
        assert state(lab) == before  # the chain, the base's bytes, the definition


@pytest.mark.parametrize("running", [False, True], ids=["offline", "live"])
def test_a_commit_that_fits_the_device_keeps_the_guests_data(tmp_path: Path, running: bool):
    with block_lab(tmp_path, 2 * MiB) as lab:
        if running:
            virsh("start", lab.name)
        active = lab.directory / "s2.qcow2"
        seen = guest_hash(active, tmp_path)
        done = run_vshx(*commit(lab))
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert chain_files(active) == ["s2.qcow2", Path(lab.device).name]
        assert guest_hash(active, tmp_path) == seen
        check = ["qemu-img", "check", "-U", lab.device]
        checked = subprocess.run(check, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_printed_script_checks_the_device_and_stops_where_vshx_refuses(tmp_path: Path):
    with block_lab(tmp_path, 2 * MiB) as lab:
        script = run_vshx(*commit(lab, "--dry-run"))
        assert script.returncode == 0, script.stderr
        line = next(x for x in script.stdout.splitlines() if x.startswith("lsblk "))
        assert line.startswith(
            f"lsblk --bytes --nodeps --noheadings --output SIZE -- {lab.device} | awk "
        )
        needed = int(line.split(">= ")[1].split()[0])
        end = growth(lab.device, 0).end
        assert end < needed <= 8 * MiB
        assert "df --output" not in script.stdout  # df of /dev says nothing of the device
        pasted = run_vshx("-f", "-", stdin=line + "\n")  # the same check, pasted back
        assert pasted.returncode == 0, pasted.stderr
        # the device shrinks below what the commit may need (its data stays readable)
        os.truncate(lab.backing, (end + needed) // 2 // 65536 * 65536)
        subprocess.run(["losetup", "-c", lab.device], check=True)
        before = state(lab)
        ran = subprocess.run(["sh", "-e"], input=script.stdout, capture_output=True, text=True)
        assert ran.returncode != 0
        assert state(lab) == before  # sh stopped at the check: the commit never ran
        pasted = run_vshx("-f", "-", stdin=line + "\n")
        assert pasted.returncode == 1 and "not enough room on the block device" in pasted.stderr
        refused = run_vshx(*commit(lab))
        assert refused.returncode == 1 and "hint: " in refused.stderr
        assert state(lab) == before


@contextlib.contextmanager
def bare_chain(tmp_path: Path, top_writes: int) -> Iterator[tuple[str, Path]]:
    """An 8 MiB loop device (a qcow2 with 2 MiB of data) <- top.qcow2 (``top_writes``
    bytes), no domain; (device, top)."""
    backing = tmp_path / "device.img"
    backing.write_bytes(b"")
    os.truncate(backing, 8 * MiB)
    top = tmp_path / "top.qcow2"
    with loop_over(backing) as device:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", device, "16M"], check=True)
        create = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", device, "-F", "qcow2"]
        subprocess.run([*create, str(top)], check=True)
        for image, write in ((device, "write -P 0x11 0 2M"), (str(top), f"write 4M {top_writes}")):
            subprocess.run(
                ["qemu-io", "-f", "qcow2", "-c", write, image], check=True, capture_output=True
            )
        yield device, top


def test_over_ssh_the_device_is_measured_on_the_host(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """qemu+ssh://: the device's size is read there (lsblk over ssh), the printed check is
    an ssh line that pastes back, and a commit that would overflow is refused there too."""
    with bare_chain(tmp_path, 6 * MiB) as (device, top):
        before = device_bytes(device), file_state(tmp_path)
        refused = remote_vshx(sshd, [tmp_path], "commit", str(top))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "not enough room on the block device" in refused.stderr
        assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
        assert (device_bytes(device), file_state(tmp_path)) == before
    with bare_chain(tmp_path, 2 * MiB) as (device, top):
        monkeypatch.setenv("PATH", sshd.env()["PATH"])
        remote = host.select(sshd.uri())
        try:
            assert host.device_size(device) == 8 * MiB
        finally:
            host.select("qemu:///system")
            release_remote(remote)
        seen = guest_hash(top, tmp_path)
        printed = remote_vshx(sshd, [tmp_path], "commit", str(top), "--dry-run")
        assert printed.returncode == 0, printed.stderr
        assert (
            "'lsblk --bytes --nodeps --noheadings --output SIZE -- " in printed.stdout
            and "df --output" not in printed.stdout  # not "df ": a hash may end in "df"
        )
        argv = [sys.executable, "-m", "vshx", "-c", sshd.uri(), "-f", "-"]
        ran = subprocess.run(
            hidden([tmp_path], argv), input=printed.stdout, capture_output=True, text=True,
            env=sshd.env(), timeout=900,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr + printed.stdout
        assert guest_hash(device, tmp_path) == seen  # the base now shows what the top showed
        checked = subprocess.run(["qemu-img", "check", device], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(("cluster", "refcount_bits"), [("64k", 16), ("512", 1), ("2M", 64)])
def test_where_the_clusters_end_is_qemu_img_checks_image_end_offset(
    tmp_path: Path, cluster: str, refcount_bits: int
):
    image = tmp_path / "image.qcow2"
    options = f"cluster_size={cluster},refcount_bits={refcount_bits}"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", options, str(image), "64M"], check=True
    )
    io = ["-c", "write 0 3M", "-c", "write 40M 1M", "-c", "discard 0 1M"]  # a hole below the end
    subprocess.run(["qemu-io", "-f", "qcow2", *io, str(image)], check=True, capture_output=True)
    check = ["qemu-img", "check", "--output=json", str(image)]
    said = json.loads(subprocess.run(check, capture_output=True, text=True, check=True).stdout)
    found = growth(str(image), 8 * MiB)
    assert found.end == said["image-end-offset"]
    assert found.highest >= found.end + 8 * MiB
    with open(image, "r+b") as handle:  # the dirty bit: refcounts not written back
        flags = os.pread(handle.fileno(), 1, 79)[0]  # the low byte of the incompatible features
        os.pwrite(handle.fileno(), bytes([flags | 1]), 79)
    with pytest.raises(VshxError, match="dirty"):
        growth(str(image), 0)
