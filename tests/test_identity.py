"""Files by identity: another domain reaching a lab's file by another name is a user.

Each case builds a second domain that sees the lab's base through a name other than the
lab's own path (a hard link, a bind mount, a ``json:`` backing name, a qcow2's external
data file used raw, a floppy, a SCSI lun) and shows that a commit into that file is refused,
that nothing changes and that the other domain's data stays the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    Lab,
    chain_files,
    file_state,
    guest_hash,
    loop_over,
    make_overlay,
    qemu_check,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


class Others:
    """Domains a test defines beside its lab; undefined at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def define(self, disks: str) -> str:
        name = f"{LAB_PREFIX}other-{uuid.uuid4().hex[:8]}"
        xml = (
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{disks}</devices></domain>"
        )
        virsh("define", "/dev/stdin", stdin=xml)
        self.names.append(name)
        return name


@pytest.fixture
def others() -> Iterator[Others]:
    made = Others()
    yield made
    for name in made.names:
        subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)


def disk(path: str | Path, fmt: str = "qcow2", device: str = "disk", target: str = "vda") -> str:
    bus = {"disk": "virtio", "floppy": "fdc", "cdrom": "sata"}[device]
    return (
        f"<disk type='file' device='{device}'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='{target}' bus='{bus}'/></disk>"
    )


def sha(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def refused_commit(lab_dir: Path, *args: str, watch: list[Path] = ()) -> str:
    """A commit that must be refused: exit 1, error + hint, no file changed anywhere watched."""
    dirs = [lab_dir, *watch]
    before = [file_state(d) for d in dirs]
    proc = run_vshx("commit", *args)
    assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: refusing: committing into"), proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert [file_state(d) for d in dirs] == before, "a refused commit changed a file"
    return proc.stderr


def test_a_hard_link_of_the_base_is_the_base(offline_lab: Lab, others: Others, tmp_path: Path):
    lab = offline_lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "golden.qcow2"
    os.link(lab.layer("base"), link)
    other = others.define(disk(link))
    seen = guest_hash(link, tmp_path)
    chain = chain_files(lab.active)
    err = refused_commit(
        lab.dir, lab.name, "vda", "--base", "base", "--top", "sn2", watch=[elsewhere]
    )
    assert f"domain {other} disk vda ({link})" in err
    assert chain_files(lab.active) == chain and guest_hash(link, tmp_path) == seen
    # the refusal is real: with --force the other domain's disk does change
    proc = run_vshx("commit", lab.name, "vda", "--base", "base", "--top", "sn2", "--force")
    assert proc.returncode == 0 and "warning:" in proc.stderr, proc.stderr
    assert guest_hash(link, tmp_path) != seen
    qemu_check(lab.active)


@pytest.fixture
def bind_mount(offline_lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """The lab's directory seen a second time, through ``mount --bind``."""
    mountpoint = tmp_path / "bound"
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", str(offline_lab.dir), str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.root  # mount --bind
def test_an_overlay_naming_the_base_through_a_bind_mount(
    offline_lab: Lab, bind_mount: Path, others: Others, tmp_path: Path
):
    lab = offline_lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    overlay = elsewhere / "on-sn1.qcow2"
    make_overlay(overlay, str(bind_mount / "sn1.qcow2"))
    other = others.define(disk(overlay))
    seen = guest_hash(overlay, tmp_path)
    err = refused_commit(
        lab.dir, lab.name, "vda", "--base", "sn1", "--top", "sn3", watch=[elsewhere]
    )
    assert f"domain {other} disk vda ({overlay})" in err
    assert guest_hash(overlay, tmp_path) == seen
    qemu_check(overlay)


def test_an_overlay_naming_the_base_as_json(offline_lab: Lab, others: Others, tmp_path: Path):
    lab = offline_lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    overlay = elsewhere / "json-on-sn1.qcow2"
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": str(lab.layer("sn1"))}}
    make_overlay(overlay, "json:" + json.dumps(spec))
    # the dotted spelling QEMU also reads, as an image lying in the lab's directory
    dotted = lab.dir / "dotted-on-base.qcow2"
    flat = {"driver": "qcow2", "file.driver": "file", "file.filename": str(lab.layer("base"))}
    make_overlay(dotted, "json:" + json.dumps(flat))
    other = others.define(disk(overlay))
    seen = guest_hash(overlay, tmp_path)
    err = refused_commit(
        lab.dir, lab.name, "vda", "--base", "sn1", "--top", "sn3", watch=[elsewhere]
    )
    assert f"domain {other} disk vda ({overlay})" in err
    err = refused_commit(lab.dir, lab.name, "vda", "--base", "base", "--top", "sn2")
    assert f"image {dotted}" in err
    assert guest_hash(overlay, tmp_path) == seen


def test_a_data_file_another_domain_uses_raw(others: Others, tmp_path: Path):
    """base.qcow2 keeps its data in base.raw (qemu-img create -o data_file=...); a second
    domain uses base.raw as a raw disk.  Committing into base.qcow2 writes base.raw."""
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    data = lab_dir / "base.raw"
    base = lab_dir / "base.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(base), "16M"],
        check=True,
    )
    make_overlay(lab_dir / "sn1.qcow2", "base.qcow2")
    make_overlay(lab_dir / "sn2.qcow2", "sn1.qcow2")
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x33 1M 2M", str(lab_dir / "sn1.qcow2")],
        check=True,
        capture_output=True,
    )
    lab = others.define(disk(lab_dir / "sn2.qcow2"))
    raw_user = others.define(disk(data, fmt="raw"))
    seen, view = sha(data), guest_hash(lab_dir / "sn2.qcow2", tmp_path)
    err = refused_commit(lab_dir, lab, "vda", "--base", "base", "--top", "sn1")
    assert f"domain {raw_user} disk vda ({data})" in err
    assert sha(data) == seen and guest_hash(lab_dir / "sn2.qcow2", tmp_path) == view
    # the same refusal for the bare image
    err = refused_commit(lab_dir, str(lab_dir / "sn2.qcow2"), "--base", "base", "--top", "sn1")
    assert f"domain {raw_user} disk vda ({data})" in err
    # the refusal is real: with --force the raw disk's bytes change
    proc = run_vshx("commit", lab, "vda", "--base", "base", "--top", "sn1", "--force")
    assert proc.returncode == 0, proc.stderr
    assert sha(data) != seen and guest_hash(lab_dir / "sn2.qcow2", tmp_path) == view
    qemu_check(base)


def test_a_floppy_is_a_user(offline_lab: Lab, others: Others, tmp_path: Path):
    lab = offline_lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    overlay = elsewhere / "floppy-on-sn1.qcow2"
    make_overlay(overlay, str(lab.layer("sn1")))
    other = others.define(disk(overlay, device="floppy", target="fda"))
    seen = guest_hash(overlay, tmp_path)
    err = refused_commit(
        lab.dir, lab.name, "vda", "--base", "sn1", "--top", "sn3", watch=[elsewhere]
    )
    assert f"domain {other} floppy fda ({overlay})" in err
    assert guest_hash(overlay, tmp_path) == seen


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "loop-backing.img"
    backing.write_bytes(b"")
    os.truncate(backing, 32 << 20)
    with loop_over(backing) as device:
        yield device


@pytest.mark.root  # losetup
def test_a_scsi_lun_on_the_base_device_is_a_user(loop_device: str, others: Others, tmp_path: Path):
    """A chain whose base is a block device (a qcow2 on a loop device); another domain passes
    that device through as a SCSI lun."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", loop_device, "16M"], check=True)
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    make_overlay(lab_dir / "sn1.qcow2", loop_device)
    make_overlay(lab_dir / "sn2.qcow2", "sn1.qcow2")
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x44 1M 1M", str(lab_dir / "sn1.qcow2")],
        check=True,
        capture_output=True,
    )
    lun = others.define(
        f"<disk type='block' device='lun'><driver name='qemu' type='raw'/>"
        f"<source dev='{loop_device}'/><target dev='sda' bus='scsi'/></disk>"
    )
    seen = sha(loop_device)
    err = refused_commit(lab_dir, str(lab_dir / "sn2.qcow2"), "--base", loop_device, "--top", "sn1")
    assert f"domain {lun} lun sda ({loop_device})" in err
    assert sha(loop_device) == seen


def block_disk(device: str) -> str:
    return (
        "<disk type='block' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source dev='{device}'/><target dev='vda' bus='virtio'/></disk>"
    )


@pytest.mark.root  # losetup
def test_a_loop_device_over_a_lab_file_is_a_user(offline_lab: Lab, others: Others, tmp_path: Path):
    """Another domain opens the lab's base through a loop device (losetup): committing into
    the base is refused; later a merged-away layer read through a loop device is not deleted."""
    lab = offline_lab
    with loop_over(lab.layer("base")) as device:
        other = others.define(block_disk(device))
        seen = sha(lab.layer("base"))
        chain = chain_files(lab.active)
        err = refused_commit(lab.dir, lab.name, "vda", "--base", "base", "--top", "sn1")
        assert f"domain {other} disk vda ({device})" in err
        assert sha(lab.layer("base")) == seen and chain_files(lab.active) == chain
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
    assert proc.returncode == 0, proc.stderr
    with loop_over(lab.layer("sn2")) as device:
        other = others.define(block_disk(device))
        kept = sha(lab.layer("sn2"))
        proc = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
        assert "Traceback" not in proc.stderr
        assert lab.layer("sn2").exists() and sha(lab.layer("sn2")) == kept, proc.stderr
        assert proc.returncode == 0 and "file kept" in proc.stdout, proc.stderr
        assert "still used by" in proc.stderr
        assert f"domain {other} disk vda ({device})" in proc.stderr
        assert not lab.layer("sn3").exists()  # nothing reads it: removed


@pytest.mark.root  # losetup
def test_commit_delete_keeps_a_block_device_layer(others: Others, tmp_path: Path):
    """A merged-away layer that is a block device (a qcow2 on a loop device) is not removed
    by --delete: `rm` would take the node from a device that stays attached (as virsh
    blockcommit --delete, vshx leaves it and says so); the merge itself still runs."""
    for name in ("a.img", "b.img"):
        (tmp_path / name).write_bytes(b"")
        os.truncate(tmp_path / name, 32 << 20)
    with loop_over(tmp_path / "a.img") as base, loop_over(tmp_path / "b.img") as middle:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"], check=True)
        make_overlay(Path(middle), base)
        subprocess.run(
            ["qemu-io", "-c", "write -P 0x33 1M 1M", middle], check=True, capture_output=True
        )
        top = tmp_path / "top.qcow2"
        make_overlay(top, middle)
        seen = guest_hash(top, tmp_path)
        name = others.define(disk(top))
        proc = run_vshx("commit", name, "vda", "--top", middle, "--base", base, "--delete")
        assert proc.returncode == 0, proc.stderr
        assert f"keeping {middle}: a block device" in proc.stderr
        assert Path(middle).is_block_device()
        assert guest_hash(top, tmp_path) == seen
        assert chain_files(top) == ["top.qcow2", Path(base).name]
