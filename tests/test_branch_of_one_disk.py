"""A branch a snapshot-revert left is kept when the snapshot that names its leaf left that
disk out (atk20 #1, data loss): s1 covers vda only, s2 (taken later) vdb only, so s2's
metadata names vda's file of then (the branch's leaf, a-s1.qcow2) in its saved definition
alone, not as a moment.  After `snapshot-revert D s1` and a guest write, `snapshot-delete D
s1` committed the new overlay into the file that leaf reads through, and the leaf's view
changed.  Every file an off-history snapshot names is a user now: the commit is refused with
the pull route named, and the pull keeps the leaf's view."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import destroy_lab, guest_hash, make_lab, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def guest_write(domain: str, command: str, device: str = "virtio-disk0") -> None:
    """A write (or flush) by the guest, through QEMU, to vda (``device``: vdb's virtio-disk1)."""
    done = virsh(
        "qemu-monitor-command", domain, "--hmp", f'qemu-io -d {device}/virtio-backend "{command}"'
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_a_branch_named_only_by_a_snapshot_of_the_other_disk_is_kept(tmp_path: Path):
    lab = make_lab(tmp_path, layers=1, disks=2)
    try:
        leaf = lab.dir / "a-s1.qcow2"
        made = virsh("snapshot-create-as", lab.name, "s1", "--disk-only", "--atomic",
                     "--diskspec", f"vda,file={leaf}", "--diskspec", "vdb,snapshot=no")  # fmt: skip
        assert made.returncode == 0, made.stderr
        guest_write(lab.name, "write -q -P 0x11 1M 1M")
        made = virsh("snapshot-create-as", lab.name, "s2", "--disk-only", "--atomic",
                     "--diskspec", "vda,snapshot=no",
                     "--diskspec", f"vdb,file={lab.dir / 'b-s1.qcow2'}")  # fmt: skip
        assert made.returncode == 0, made.stderr
        virsh("destroy", lab.name)
        lab.running = False
        reverted = run_vshx("snapshot-revert", lab.name, "s1")
        assert reverted.returncode == 0, reverted.stderr
        assert "kept, nothing is deleted: vda: a-s1.qcow2" in reverted.stdout
        assert virsh("start", lab.name).returncode == 0
        guest_write(lab.name, "write -q -P 0xcc 40M 64k")
        guest_write(lab.name, "flush")
        virsh("destroy", lab.name)
        kept = guest_hash(leaf, tmp_path)
        refused = run_vshx("snapshot-delete", lab.name, "s1")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"image {leaf}" in refused.stderr and "--route pull" in refused.stderr
        assert guest_hash(leaf, tmp_path) == kept
        pulled = run_vshx("snapshot-delete", lab.name, "s1", "--route", "pull")
        assert pulled.returncode == 0, pulled.stderr
        assert guest_hash(leaf, tmp_path) == kept
    finally:
        destroy_lab(lab)


def vdb_write(domain: str, command: str) -> None:
    guest_write(domain, command, "virtio-disk1")


def test_a_branch_leaf_outside_every_scanned_directory_is_a_user(tmp_path: Path):
    """atk21 #4: the same, with the leaf in a directory of its own (no domain's disk, no pool):
    the directory scan never saw it, and `commit D vdb --active --shallow` wrote through it.
    What a snapshot off the current history names is a user wherever it is."""
    lab = make_lab(tmp_path, layers=1, disks=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    leaf = elsewhere / "vdb-x.qcow2"
    try:
        made = virsh("snapshot-create-as", lab.name, "s2", "--disk-only", "--atomic",
                     "--diskspec", f"vda,file={lab.dir / 's2.qcow2'}",
                     "--diskspec", f"vdb,file={leaf}")  # fmt: skip
        assert made.returncode == 0, made.stderr
        vdb_write(lab.name, "write -q -P 0x21 1M 1M")
        made = virsh("snapshot-create-as", lab.name, "p", "--disk-only", "--atomic",
                     "--diskspec", f"vda,file={lab.dir / 'p.qcow2'}",
                     "--diskspec", "vdb,snapshot=no")  # fmt: skip
        assert made.returncode == 0, made.stderr
        vdb_write(lab.name, "write -q -P 0x22 2M 1M")
        virsh("destroy", lab.name)
        lab.running = False
        reverted = run_vshx("snapshot-revert", lab.name, "s2")
        assert reverted.returncode == 0, reverted.stderr
        assert virsh("start", lab.name).returncode == 0
        lab.running = True
        vdb_write(lab.name, "write -q -P 0x99 10M 64k")
        vdb_write(lab.name, "flush")
        kept = guest_hash(leaf, tmp_path)
        for words in (["commit", lab.name, "vdb", "--active", "--shallow"],
                      ["flatten", lab.name, "vdb", "--route", "commit"]):  # fmt: skip
            refused = run_vshx(*words)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "snapshot p (off the current history)" in refused.stderr, refused.stderr
            assert guest_hash(leaf, tmp_path) == kept
    finally:
        destroy_lab(lab)
