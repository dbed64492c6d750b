"""snapshot-revert --running leaves no journal behind (an outside attack: it said "reverted",
exit 0, but the entry written while the domain was shut off had been copied into the live
definition when the plan's last step started it, and only the persistent one was cleared, so
`vshx jobs` showed "interrupted vshx, step 5/5" and every later command on the domain was
refused until `vshx recover`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Lab, chain_files, qemu_check, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def test_revert_running_clears_its_journal(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    moment = lab.record_moments(tmp_path)["sn2"]["vda"]
    done = run_vshx("snapshot-revert", lab.name, "sn2", "--running")
    assert done.returncode == 0, done.stderr
    assert "reverted" in done.stderr + done.stdout
    assert "running" in virsh("domstate", lab.name).stdout
    lab.running = True
    jobs = run_vshx("jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    rows = json.loads(jobs.stdout).get("jobs", [])
    assert not [row for row in rows if lab.name in json.dumps(row)], rows
    listed = run_vshx("snapshot-list", lab.name)
    assert listed.returncode == 0 and "interrupted" not in listed.stderr, listed.stderr
    assert lab.guest_hash(tmp_path) == moment  # the guest sees sn2's moment
    assert chain_files(lab.active)[1:] == ["sn1.qcow2", "base.qcow2"]
    plan = run_vshx("commit", lab.name, "vda", "--top", "vda[2]", "--dry-run")  # was refused
    assert plan.returncode == 0, plan.stderr
    virsh("destroy", lab.name)
    lab.running = False
    qemu_check(lab.active)
