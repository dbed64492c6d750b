"""One vshx at a time changes a domain, whichever of its disks each names (atk9 F5): two
started together on vda and vdb both ran, and each rewrote the domain's one journal and record
of moments (one disk's record was lost; after a kill, `recover D vda` ran vdb's journal).  Now a
changing command locks every disk's active layer of its domain first, in the order of their
names, so the second is refused, as it was when it started a moment later."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Lab, chain_files, domain_source, lock_holder, qemu_check, run_vshx

pytestmark = pytest.mark.libvirt


@pytest.mark.parametrize("running", [True, False], ids=["running", "shut-off"])
def test_a_change_on_vda_waits_for_the_vshx_that_changes_vdb(
    made, tmp_path: Path, running: bool
) -> None:
    lab: Lab = made(running=running, disks=2)
    vda = chain_files(domain_source(lab.name, inactive=not running))
    seen = {disk: lab.guest_hash(tmp_path, disk) for disk in ("vda", "vdb")}
    holder = lock_holder(lab.active_of("vdb"), "vshx commit on vdb")
    try:
        for words in (
            ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3"],
            ["snapshot-cleanup", lab.name],
        ):
            refused = run_vshx(*words)
            assert refused.returncode == 1, refused.stderr
            assert f"another vshx (pid {holder.pid})" in refused.stderr, refused.stderr
            assert "vshx commit on vdb" in refused.stderr and "Traceback" not in refused.stderr
        assert chain_files(domain_source(lab.name, inactive=not running)) == vda
        planned = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
        assert planned.returncode == 0, planned.stderr  # printing changes nothing: no lock
    finally:
        holder.communicate("")
    done = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
    assert done.returncode == 0, done.stderr
    assert chain_files(domain_source(lab.name, inactive=not running))[:2] == [
        vda[0],
        "sn1.qcow2",
    ]
    assert {disk: lab.guest_hash(tmp_path, disk) for disk in ("vda", "vdb")} == seen
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)
