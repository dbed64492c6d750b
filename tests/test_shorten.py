"""shorten drops middle layers, each contiguous run by the cheaper safe route."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Lab, chain_files, destroy_lab, make_lab, run_vshx

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
def test_drop_two_separate_runs_and_the_script_does_the_same(tmp_path: Path, running: bool):
    real = make_lab(tmp_path, running=running, dirname="real")
    scripted = make_lab(tmp_path, running=running, dirname="scripted")
    try:
        before = real.guest_hash(tmp_path)
        args = ["vda", "--drop", "sn1", "--drop", "sn3"]
        plan = run_vshx("shorten", scripted.name, *args, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count("# routes (* = chosen") == 2
        assert "# after:  base.qcow2 <- sn2.qcow2 <- sn4.qcow2 (active)" in plan.stdout
        done = run_vshx("shorten", real.name, *args)
        assert done.returncode == 0, done.stderr
        assert chain_files(real.active) == ["sn4.qcow2", "sn2.qcow2", "base.qcow2"]
        assert real.guest_hash(tmp_path) == before
        ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert chain_files(scripted.active) == chain_files(real.active)
        assert scripted.guest_hash(tmp_path) == before
        for lab in (real, scripted):
            for path in chain_files(lab.active):
                check = subprocess.run(["qemu-img", "check", "-U", str(lab.dir / path)])
                assert check.returncode == 0
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_the_active_layer_and_the_base_are_flattens(offline_lab: Lab):
    for ref in ("sn4", "base"):
        proc = run_vshx("shorten", offline_lab.name, "vda", "--drop", ref)
        assert proc.returncode == 1 and "flatten" in proc.stderr
    usage = run_vshx("shorten", offline_lab.name, "vda")
    assert usage.returncode == 2 and "--drop" in usage.stderr
