"""recover DOMAIN on a domain with several disks and nothing interrupted says so (exit 0), as
on a one-disk domain, instead of asking which disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import WAITING_QEMU_IMG, Lab, killed_at_qemu_img, run_vshx

pytestmark = pytest.mark.libvirt


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_recover_on_two_disks_with_nothing_to_recover(lab: Lab):
    done = run_vshx("recover", lab.name)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert f"nothing to do: no job and no journal on {lab.name}" in said
    assert "which disk" not in said
    planned = run_vshx("recover", lab.name, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "# nothing to do: no job and no journal" in planned.stdout


@pytest.mark.parametrize("offline_lab", [2], indirect=True)
def test_recover_on_two_shut_off_disks_with_nothing_to_recover(offline_lab: Lab):
    done = run_vshx("recover", offline_lab.name)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout + done.stderr


@pytest.mark.parametrize("offline_lab", [2], indirect=True)
def test_jobs_lists_an_interrupted_two_disk_plan_under_its_domain(
    offline_lab: Lab, tmp_path: Path
) -> None:
    """atk9 F9: a snapshot-delete over both disks, killed (-9) at its vdb step, was listed
    under vda with `vshx recover DOMAIN vda`; it is the domain's plan: no disk, and the hint is
    `vshx recover DOMAIN`, which rolls it forward."""
    name = offline_lab.name
    killed_at_qemu_img(
        tmp_path,
        WAITING_QEMU_IMG,
        ("snapshot-delete", name, "sn2"),
        VSHX_STOP_AT="*commit*vdb-sn2.qcow2*",
    )
    listed = run_vshx("jobs", name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout)["jobs"] if r["kind"] == "journal"]
    assert len(rows) == 1, rows
    assert rows[0]["domain"] == name and rows[0]["disk"] is None, rows
    assert rows[0]["next"] == f"vshx recover {name}", rows
    recovered = run_vshx("recover", name)
    assert recovered.returncode == 0, recovered.stderr
    assert run_vshx("jobs", name, "--json").stdout.count('"journal"') == 0
