"""A vshx killed with -9 leaves its lock files beside the images (the kernel lets go of the lock,
the file stays): `lab-create` then refused to rebuild the lab and `lab-destroy` kept its
directory (atk8 F8, atk9 F10).  Now both remove the lock files no vshx holds; one held now (a
vshx at work there) is kept."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import destroy_lab, lock_holder, make_lab, run_vshx

pytestmark = pytest.mark.libvirt


def locks(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".lock"))


def test_lock_files_a_killed_vshx_left_are_removed_and_a_held_one_kept(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, running=False)
    try:
        killed = lock_holder(lab.active)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert locks(lab.dir), "the killed holder's lock file stays"
        rebuilt = run_vshx("lab-create", lab.name, "--dir", str(lab.dir), "--shut-off")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert locks(lab.dir) == []
        working = lock_holder(lab.active)  # a vshx at work: its lock file is not touched
        try:
            held = locks(lab.dir)
            assert held
            run_vshx("lab-destroy", lab.name)
            assert locks(lab.dir) == held
        finally:
            working.communicate("")
        assert not (lab.dir / "base.qcow2").exists()  # lab-destroy removed what it made
    finally:
        destroy_lab(lab)
