"""atk17 F1: a live snapshot-delete's --dry-run script, run after the admin paused the
domain, paused it again (`virsh suspend` succeeds on a paused domain), resumed it and deleted
the merged-away files; vshx keeps the pause and the files (it cannot make a paused QEMU flush
its cache).  The script now checks that the domain runs (or is shut off) before its flush
step, and so does vshx when the script is pasted back into it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import destroy_lab, make_lab, run_vshx, virsh

pytestmark = pytest.mark.libvirt


@pytest.mark.parametrize("runner", ["sh", "vshx"])
def test_a_script_stops_before_its_flush_on_a_domain_paused_since(
    tmp_path: Path, runner: str
) -> None:
    lab = make_lab(tmp_path, layers=3, disks=2)
    try:
        script = tmp_path / "delete.sh"
        planned = run_vshx("snapshot-delete", lab.name, "sn2", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        assert "runs or is shut off" in planned.stdout
        script.write_text(planned.stdout)
        assert virsh("suspend", lab.name).returncode == 0
        if runner == "sh":
            ran = subprocess.run(["sh", "-e", str(script)], capture_output=True, text=True)
        else:
            ran = run_vshx("-f", str(script))
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "Traceback" not in ran.stderr
        assert "paused" in virsh("domstate", lab.name).stdout
        assert (lab.dir / "sn2.qcow2").exists() and (lab.dir / "vdb-sn2.qcow2").exists()
    finally:
        virsh("resume", lab.name)
        destroy_lab(lab)
