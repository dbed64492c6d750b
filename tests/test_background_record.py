"""A --background plan records the moments its job moves as unknown until recover has seen
the job end as planned (atk21 #3: a commit started with --background and then aborted left
sn3 "now in base.qcow2 (merged)" though base.qcow2 never took it in; atk21 #5: one that ended
by itself left the kept moments unknown for good, recover saying "nothing to do")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Lab, chain_files, destroy_lab, make_lab, run_vshx, virsh, wait_for

pytestmark = pytest.mark.libvirt


def moments(lab: Lab) -> dict[str, str]:
    listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)
    return {s["name"]: s["disks"]["vda"]["moment"] for s in listed["snapshots"]}


def no_job(lab: Lab) -> bool:
    info = virsh("blockjob", lab.name, "vda", "--info")
    return "No current block job" in info.stdout + info.stderr


def test_a_background_commit_is_recorded_once_recover_sees_it_ended(tmp_path: Path):
    lab = make_lab(tmp_path)
    try:
        started = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3",
                           "--background")  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert f"vshx recover {lab.name} vda records where" in started.stderr
        assert moments(lab)["sn4"] == "unknown"  # the job moves it: not vouched for yet
        wait_for(lambda: no_job(lab), "the job's end")
        # someone writes into sn1.qcow2 once the job has ended (atk22 #1: vouched for)
        write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 10M 64k", str(lab.layer("sn1"))]
        assert virsh("destroy", lab.name).returncode == 0
        subprocess.run(write, check=True, capture_output=True)
        done = run_vshx("recover", lab.name, "vda")
        assert done.returncode == 0, done.stdout + done.stderr
        assert moments(lab) == {"sn1": "intact", "sn2": "gone", "sn3": "gone", "sn4": "unknown"}
    finally:
        destroy_lab(lab)


def test_a_background_pull_keeps_what_no_one_wrote_since(tmp_path: Path):
    """atk22 #1: a write into a pulled-out file after the job ended, before recover, was
    recorded as that moment's own."""
    for foreign in (False, True):
        lab = make_lab(tmp_path / str(foreign))
        try:
            started = run_vshx("pull", lab.name, "vda", "--base", "sn1", "--background")
            assert started.returncode == 0, started.stderr
            wait_for(lambda lab=lab: no_job(lab), "the job's end")  # type: ignore[misc]
            if foreign:
                write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 10M 64k"]
                subprocess.run([*write, str(lab.layer("sn2"))], check=True, capture_output=True)
            done = run_vshx("recover", lab.name, "vda")
            assert done.returncode == 0, done.stdout + done.stderr
            assert moments(lab)["sn3"] == ("unknown" if foreign else "intact")
        finally:
            destroy_lab(lab)


def test_an_aborted_background_commit_vouches_for_nothing_it_would_have_moved(tmp_path: Path):
    lab = make_lab(tmp_path, fill=16)
    try:
        started = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3",
                           "--background", "--bandwidth", "1")  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert virsh("blockjob", lab.name, "vda", "--abort").returncode == 0
        wait_for(lambda: no_job(lab), "the abort")
        assert chain_files(lab.active)[1:] == ["sn3.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
        run_vshx("recover", lab.name, "vda")  # nothing to record: the chain is as before
        seen = moments(lab)
        assert seen["sn4"] == "unknown" and seen["sn1"] == "intact", seen  # never "merged"
    finally:
        destroy_lab(lab)
