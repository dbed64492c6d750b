"""atk17 F2, F4: a two-disk snapshot-delete killed while its commit below the active layer
runs.  recover said "rolling it forward" and then refused ("a block job still runs"), though
its help says such a job is waited for; and after `virsh domrename` it looked the domain up
by the name the journal kept, so every hint `jobs` gave failed and the domain stayed blocked.
recover now waits for the job, as the killed vshx would have, and rolls the plan forward on
the domain by its name now."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import block_job, destroy_lab, make_lab, qemu_check, run_vshx, virsh
from conftest import wait_for as wait_until
from test_recover_ledger import killed_mid_job

pytestmark = pytest.mark.libvirt


@pytest.mark.parametrize("renamed", [False, True], ids=["same-name", "renamed"])
def test_recover_waits_for_the_job_and_finishes_the_delete(tmp_path: Path, renamed: bool) -> None:
    lab = make_lab(tmp_path, layers=3, disks=2, fill=8)
    try:
        before = {disk: lab.guest_hash(tmp_path, disk) for disk in lab.targets}
        killed_mid_job(lab, "snapshot-delete", lab.name, "sn2", unthrottle=False)
        assert "Block Commit" in block_job(lab.name)
        if renamed:  # the guest stays as it was: its flushed data is what the hash reads
            virsh("destroy", lab.name)
            wait_until(lambda: "Block" not in block_job(lab.name), "the job gone with QEMU")
            new = f"{lab.name}-r"
            assert virsh("domrename", lab.name, new).returncode == 0
            lab.name, lab.running = new, False
        else:
            virsh("blockjob", lab.name, "vda", "--bandwidth", "0")
        listed = run_vshx("jobs", lab.name).stdout
        assert f"vshx recover {lab.name}" in listed
        recovered = run_vshx("recover", lab.name)
        assert recovered.returncode == 0, recovered.stderr
        assert "Traceback" not in recovered.stderr
        assert "no block jobs and no interrupted" in run_vshx("jobs", lab.name).stdout
        names = run_vshx("snapshot-list", lab.name, "--name").stdout.split()
        assert names == ["sn1", "sn3"]
        assert not (lab.dir / "sn2.qcow2").exists() and not (lab.dir / "vdb-sn2.qcow2").exists()
        for layer in ("sn1", "sn3", "vdb-sn1", "vdb-sn3"):
            qemu_check(lab.dir / f"{layer}.qcow2")
        assert {disk: lab.guest_hash(tmp_path, disk) for disk in lab.targets} == before
    finally:
        destroy_lab(lab)
