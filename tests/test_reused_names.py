"""A name vshx freed, taken by a user's own file: nothing of vshx's removes that file.

After ``commit --delete`` or ``snapshot-delete`` vshx has removed a layer; a user may later put
a file of their own under that name (a new image, notes).  ``snapshot-cleanup --delete-files``
and ``lab-destroy`` still know the name (the snapshot metadata, the lab marker): they remove a
file only while it provably is the one vshx left (an outside tester found both removing the
user's file).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Lab, destroy_lab, make_lab, qemu_check, run_vshx, snapshot_names

pytestmark = pytest.mark.libvirt


def users_image(path: Path) -> str:
    """A qcow2 image of the user's own (1 MiB of 0x99) at ``path``; its guest-view hash."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x99 0 1M", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_bytes().hex()


def test_cleanup_keeps_a_users_file_under_a_name_a_commit_deleted(offline_lab: Lab):
    """commit --delete removes sn2.qcow2; the user makes their own image there; cleanup
    --delete-files forgets sn2's metadata and re-points sn3, but keeps the user's file and
    says why (before: "file removed")."""
    lab = offline_lab
    done = run_vshx("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", "--delete")
    assert done.returncode == 0, done.stderr
    assert not lab.layer("sn2").exists()
    before = users_image(lab.layer("sn2"))
    dry = run_vshx("snapshot-cleanup", lab.name, "--delete-files", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not [line for line in dry.stdout.splitlines() if line.startswith("rm")], dry.stdout
    real = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
    assert real.returncode == 0, real.stderr
    assert "file kept" in real.stderr + real.stdout
    said = real.stderr + real.stdout  # born after the snapshot, or changed after the record
    assert "sn2.qcow2 was created" in said and "not provably the file its merge left" in said
    assert lab.layer("sn2").read_bytes().hex() == before
    qemu_check(lab.layer("sn2"))
    assert "sn2" not in snapshot_names(lab.name)


def test_lab_destroy_keeps_a_users_file_under_a_name_vshx_freed(tmp_path: Path):
    """snapshot-delete removes sn2.qcow2 (ext4 gives its inode to the next file made there);
    the user's own image and notes under lab names stay after lab-destroy, everything
    lab-create made goes."""
    lab = make_lab(tmp_path, running=False, layers=3)
    try:
        done = run_vshx("snapshot-delete", lab.name, "sn2")
        assert done.returncode == 0, done.stderr
        assert not lab.layer("sn2").exists()
        before = users_image(lab.layer("sn2"))
        destroyed = run_vshx("lab-destroy", lab.name)
        assert destroyed.returncode == 0, destroyed.stderr
        assert "keeping" in destroyed.stderr and "sn2.qcow2" in destroyed.stderr
        assert sorted(p.name for p in lab.dir.iterdir()) == ["sn2.qcow2"]
        assert lab.layer("sn2").read_bytes().hex() == before
    finally:
        destroy_lab(lab)


def test_lab_destroy_of_an_old_lab_removes_only_qcow2_images(tmp_path: Path):
    """A lab made before lab-create recorded identities (its marker lists names only): a
    name taken by a text file is kept."""
    lab = make_lab(tmp_path, running=False, layers=2)
    try:
        marker = lab.dir / ".vshx-lab"
        lines = marker.read_text().splitlines(keepends=True)
        marker.write_text("".join(line for line in lines if not line.startswith("#id ")))
        lab.layer("sn2").unlink()
        lab.layer("sn2").write_text("precious user notes\n")
        destroyed = run_vshx("lab-destroy", lab.name)
        assert destroyed.returncode == 0, destroyed.stderr
        assert sorted(p.name for p in lab.dir.iterdir()) == ["sn2.qcow2"]
        assert lab.layer("sn2").read_text() == "precious user notes\n"
    finally:
        destroy_lab(lab)
