"""A bare image's interrupted plan holds back every command on a file of its chain, not only
on the image it named: `pull top.qcow2` killed (its qemu-img may still run) and then
`commit mid.qcow2` must not run (the journal is keyed by the image the plan named)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import file_state, make_overlay, run_vshx

from vshx.plans import journal

pytestmark = pytest.mark.libvirt  # the usage scan asks libvirtd


def test_a_killed_bare_pull_holds_back_a_commit_of_its_middle_layer(tmp_path: Path) -> None:
    d = tmp_path / "bare"
    d.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "16M"])
    make_overlay(d / "mid.qcow2", "base.qcow2")
    make_overlay(d / "top.qcow2", "mid.qcow2")
    top = str(d / "top.qcow2")
    gone = subprocess.Popen(["true"])  # a pid that ran vshx once and is gone now
    gone.wait()
    entry = {
        "plan": f"pull {top}",
        "step": 2,
        "steps": 2,
        "what": "qemu-img rebase: copy what the guest sees into top.qcow2",
        "disk": "",
        "image": top,
        "pivot": "no",
        "pid": gone.pid,
        "time": f"{time.time():.0f}",
    }
    journal.state_place().write(journal.state_name(top), json.dumps(entry))
    before = file_state(d)
    for words in (
        ["commit", str(d / "mid.qcow2")],
        ["rebase", str(d / "mid.qcow2"), "--backing", ""],
    ):
        proc = run_vshx(*words)
        said = (words, proc.stderr)
        assert proc.returncode == 1, said
        assert f"an earlier vshx operation on {top}, whose chain shares files" in proc.stderr, said
        assert f"hint: see it with: vshx jobs; resolve it with: vshx recover {top}" in proc.stderr
        assert "Traceback" not in proc.stderr and file_state(d) == before, said
    assert top in run_vshx("jobs").stdout
    journal.state_place().remove(journal.state_name(top))  # resolved: the commit runs
    done = run_vshx("commit", str(d / "mid.qcow2"))
    assert done.returncode == 0, done.stderr
