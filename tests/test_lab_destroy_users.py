"""lab-destroy keeps the lab files that a file its domain's snapshots made elsewhere reads
through (atk22 #5: a snapshot taken with its overlay in another directory, then a revert; the
lab's base and sn1 were removed, and the user's x.qcow2 no longer opened)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import make_lab, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def test_a_file_a_snapshot_made_elsewhere_keeps_what_it_reads(tmp_path: Path):
    lab = make_lab(tmp_path, layers=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    x, y = elsewhere / "x.qcow2", elsewhere / "y.qcow2"
    try:
        for name, path in (("X", x), ("Y", y)):
            made = virsh("snapshot-create-as", lab.name, name, "--disk-only", "--atomic",
                         "--diskspec", f"vda,file={path}")  # fmt: skip
            assert made.returncode == 0, made.stderr
        virsh("destroy", lab.name)
        assert run_vshx("snapshot-revert", lab.name, "X").returncode == 0
        done = run_vshx("lab-destroy", lab.name)
        assert f"keeping {lab.layer('base')}" in done.stderr, done.stdout + done.stderr
        assert f"keeping {lab.layer('sn1')}" in done.stderr
        assert lab.layer("base").exists() and lab.layer("sn1").exists()
        info = subprocess.run(["qemu-img", "info", "--backing-chain", str(x)],
                              capture_output=True, text=True)  # fmt: skip
        assert info.returncode == 0, info.stderr  # the user's file still opens
    finally:
        for path in (y, x):
            path.unlink(missing_ok=True)
        run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
