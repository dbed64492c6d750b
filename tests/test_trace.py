"""`vshx --trace`: the QMP events QEMU really sends during a live job, as they arrive."""

from __future__ import annotations

import json

from conftest import Lab, run_vshx


def test_trace_shows_block_job_ready_from_qemu_during_an_active_commit(lab: Lab) -> None:
    proc = run_vshx("--trace", "commit", lab.name, "vda", "--active", "--pivot")
    assert proc.returncode == 0, proc.stderr
    qmp = [
        json.loads(line.removeprefix("qmp< "))
        for line in proc.stderr.splitlines()
        if line.startswith("qmp< ")
    ]
    ready = [e for e in qmp if e["event"] == "BLOCK_JOB_READY"]
    assert ready, proc.stderr
    event = ready[0]
    assert event["timestamp"]["seconds"] > 1_600_000_000  # QEMU's clock, not ours
    assert 0 <= event["timestamp"]["microseconds"] < 1_000_000
    assert {"device", "offset", "len"} <= set(event["data"])
    assert event["data"]["offset"] == event["data"]["len"] > 0
    names = [e["event"] for e in qmp]
    assert names.index("BLOCK_JOB_READY") < names.index("BLOCK_JOB_COMPLETED")
    libvirt_lines = [x for x in proc.stderr.splitlines() if x.startswith("libvirt< ")]
    assert any("READY" in x for x in libvirt_lines)
    assert any("COMPLETED" in x for x in libvirt_lines)


def test_without_trace_no_qmp_lines(lab: Lab) -> None:
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2")
    assert proc.returncode == 0, proc.stderr
    assert "qmp< " not in proc.stderr
