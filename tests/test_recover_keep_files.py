"""A merged-away file that cannot be deleted (a bind mount over it: EBUSY) stops `--delete`
after the merge, and `recover --keep-files` keeps it and clears the journal (atk20 #9: recover
failed the same way, and nothing could finish the plan while the file stayed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import chain_files, destroy_lab, make_lab, run_vshx

pytestmark = pytest.mark.libvirt


def test_a_file_that_cannot_go_is_kept_by_recover_keep_files(tmp_path: Path):
    lab = make_lab(tmp_path)
    pinned = str(lab.layer("sn3"))
    subprocess.run(["mount", "--bind", pinned, pinned], check=True)
    try:
        before = lab.guest_hash(tmp_path)
        done = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot delete {pinned}" in done.stderr, done.stderr
        assert f"vshx recover {lab.name} vda --keep-files" in done.stderr
        assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        again = run_vshx("recover", lab.name, "vda")
        assert again.returncode == 1 and f"cannot delete {pinned}" in again.stderr
        kept = run_vshx("recover", lab.name, "vda", "--keep-files")
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert f"keeping {pinned}: --keep-files" in kept.stderr
        jobs = run_vshx("jobs", lab.name)
        assert "no block jobs and no interrupted vshx operations" in jobs.stdout, jobs.stdout
        assert lab.guest_hash(tmp_path) == before
    finally:
        subprocess.run(["umount", pinned], check=False)
        destroy_lab(lab)


def test_recover_keep_files_keeps_them_for_a_snapshot_delete_too(tmp_path: Path):
    """atk22 #6: an interrupted snapshot-delete is rolled forward by its own command, which
    deleted the files it merged away whatever recover was told."""
    lab = make_lab(tmp_path)
    pinned = str(lab.layer("sn2"))
    subprocess.run(["mount", "--bind", pinned, pinned], check=True)
    try:
        done = run_vshx("snapshot-delete", lab.name, "sn2")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot delete {pinned}" in done.stderr, done.stderr
        subprocess.run(["umount", pinned], check=True)
        kept = run_vshx("recover", lab.name, "vda", "--keep-files")
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert f"keeping {pinned}: --keep-files" in kept.stderr, kept.stderr
        assert Path(pinned).exists()
        jobs = run_vshx("jobs", lab.name)
        assert "no block jobs and no interrupted vshx operations" in jobs.stdout, jobs.stdout
    finally:
        subprocess.run(["umount", pinned], check=False, capture_output=True)
        destroy_lab(lab)
