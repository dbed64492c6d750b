"""recover of an interrupted snapshot-delete does not vouch for a moment through a file someone
else wrote meanwhile (atk21 #2): after a SIGTERM, a write into the top the merge reads was
copied into the base by the roll-forward and recorded as the kept snapshot's moment."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import destroy_lab, make_lab, run_vshx, started_job

pytestmark = pytest.mark.libvirt


def test_a_top_written_after_the_interruption_leaves_its_moment_unknown(tmp_path: Path):
    lab = make_lab(tmp_path, layers=3, fill=32)
    try:
        proc = started_job(lab, "snapshot-delete", lab.name, "sn2", "--bandwidth", "1")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        os.utime(lab.layer("sn2"))  # someone writes into the top sn2.qcow2 (its write time)
        done = run_vshx("recover", lab.name)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sn2.qcow2, which the merge only reads, was written after" in done.stderr
        listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)
        moments = {s["name"]: s["disks"]["vda"]["moment"] for s in listed["snapshots"]}
        assert moments["sn3"] == "unknown", moments  # not "merged" into sn1.qcow2
    finally:
        destroy_lab(lab)
