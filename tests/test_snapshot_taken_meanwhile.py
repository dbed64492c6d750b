"""A snapshot taken while snapshot-delete runs stays current (atk20 #3): the plan re-defined
the snapshot that was current when it began with --current at its end, and the one the user
had taken meanwhile lost the flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import destroy_lab, make_lab, snapshot_names, started_job, virsh

pytestmark = pytest.mark.libvirt


def test_a_snapshot_taken_during_the_merge_stays_current(tmp_path: Path):
    lab = make_lab(tmp_path, disks=2, fill=8)
    try:
        # on vda; vdb's comes after it
        proc = started_job(lab, "snapshot-delete", lab.name, "sn2", "--bandwidth", "1")
        taken = virsh("snapshot-create-as", lab.name, "snew", "--disk-only", "--atomic",
                      "--diskspec", "vda,snapshot=no",
                      "--diskspec", f"vdb,file={lab.dir / 'vdb-new.qcow2'}")  # fmt: skip
        assert taken.returncode == 0, taken.stderr
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
        assert "snew was taken while vshx ran and is current" in err, err
        assert virsh("snapshot-current", lab.name, "--name").stdout.strip() == "snew"
        assert "sn2" not in snapshot_names(lab.name) and "sn4" in snapshot_names(lab.name)
    finally:
        destroy_lab(lab)
