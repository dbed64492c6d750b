"""A file a running domain's chain read is deleted only after QEMU wrote the merge down.

A block pull completing does not flush QEMU's qcow2 cache: the L2 tables that make the pulled
data part of the active layer can be only in QEMU's memory.  Deleting the pulled-from file then
removes the only durable copy; a QEMU crash (kill -9) loses the data.  vshx suspends and resumes
the domain (QEMU's stop flushes every disk) right before the first such rm, and keeps the files
of a paused domain, which it cannot make flush.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    domain_source,
    guest_hash,
    make_lab,
    run_vshx,
    virsh,
    wait_for,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def crash(lab: Lab) -> None:
    """kill -9 the domain's QEMU, as a crash or a power loss would end it."""
    pidfile = Path(f"/run/libvirt/qemu/{lab.name}.pid")
    if URI != "qemu:///system" or not os.access(pidfile, os.R_OK):
        pytest.skip("the QEMU pid file is not readable here (qemu:///system as root)")
    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    wait_for(lambda: "shut off" in virsh("domstate", lab.name).stdout, "the domain to end")


def crashed_view(lab: Lab, tmp: Path) -> str:
    """The guest view of the disk after the crash: the file the definition names."""
    return guest_hash(domain_source(lab.name, inactive=True), tmp)


def test_snapshot_delete_by_pull_survives_a_qemu_crash(tmp_path: Path):
    lab = make_lab(tmp_path, layers=3, fill=16)
    try:
        before = lab.guest_hash(tmp_path)  # flushed: the truth before the merge
        proc = run_vshx("snapshot-delete", lab.name, "sn3", "--route", "pull")
        assert proc.returncode == 0, proc.stderr
        assert "block pull" in proc.stdout + proc.stderr
        assert not lab.layer("sn2").exists()  # merged away and deleted
        assert virsh("domstate", lab.name).stdout.strip() == "running"  # resumed
        crash(lab)
        assert crashed_view(lab, tmp_path) == before
    finally:
        destroy_lab(lab)


def test_flatten_then_cleanup_delete_files_survives_a_qemu_crash(tmp_path: Path):
    lab = make_lab(tmp_path, layers=3, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        proc = run_vshx("flatten", lab.name, "vda", "--route", "pull")
        assert proc.returncode == 0, proc.stderr
        plan = run_vshx("--dry-run", "snapshot-cleanup", lab.name, "--delete-files").stdout
        suspend = plan.index(f"virsh -c {URI} suspend {lab.name}\n")
        assert f"virsh -c {URI} resume {lab.name}\n" in plan
        assert suspend < plan.index("rm -f -- ")  # right before the first rm
        assert plan.count(" suspend ") == 1  # once per plan
        proc = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
        assert proc.returncode == 0, proc.stderr
        assert not lab.layer("sn2").exists() and not lab.layer("base").exists()
        crash(lab)
        assert crashed_view(lab, tmp_path) == before
    finally:
        destroy_lab(lab)


def test_printed_plan_run_by_sh_survives_a_qemu_crash(tmp_path: Path):
    lab = make_lab(tmp_path, layers=3, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        plan = run_vshx("--dry-run", "snapshot-delete", lab.name, "sn3", "--route", "pull")
        assert plan.returncode == 0, plan.stderr
        assert f"virsh -c {URI} suspend {lab.name}\nvirsh -c {URI} resume" in plan.stdout
        ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert not lab.layer("sn2").exists()
        assert virsh("domstate", lab.name).stdout.strip() == "running"
        crash(lab)
        assert crashed_view(lab, tmp_path) == before
    finally:
        destroy_lab(lab)


def test_a_paused_domain_keeps_the_merged_away_files(tmp_path: Path):
    lab = make_lab(tmp_path, layers=3, fill=16)
    try:
        virsh("suspend", lab.name)
        proc = run_vshx("snapshot-delete", lab.name, "sn3", "--route", "pull")
        assert proc.returncode == 0, proc.stderr
        assert f"keeping {lab.layer('sn2')}: {lab.name} is paused" in proc.stderr
        assert "rm)" in proc.stderr  # and says when to delete it
        assert lab.layer("sn2").exists()
        assert chain_files(lab.active) == ["sn3.qcow2", "sn1.qcow2", "base.qcow2"]
        assert virsh("domstate", lab.name).stdout.strip() == "paused"  # still the user's pause
    finally:
        destroy_lab(lab)
