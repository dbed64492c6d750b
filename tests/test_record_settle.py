"""A write after vshx's own record of a moment is a change at once (atk20 #2): the record
allowed the few seconds a snapshot's own creation gets, so `virsh blockcommit` into the file a
pulled-out moment reads, or a qemu-io write into the base a flatten left out of the chain, made
within 3 s of the record, left those moments "intact", and snapshot-revert put the changed
bytes under the guest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Lab, destroy_lab, make_lab, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def moments(lab: Lab) -> dict[str, str]:
    listed = run_vshx("snapshot-list", lab.name, "--json")
    assert listed.returncode == 0, listed.stderr
    return {s["name"]: s["disks"]["vda"]["moment"] for s in json.loads(listed.stdout)["snapshots"]}


def test_a_commit_into_what_pulled_out_moments_read_makes_them_unknown(tmp_path: Path):
    lab = make_lab(tmp_path)
    try:
        pulled = run_vshx("pull", lab.name, "vda", "--base", "sn1")
        assert pulled.returncode == 0, pulled.stderr
        assert moments(lab)["sn4"] == "intact"  # sn3.qcow2, out of the chain, reads sn1.qcow2
        base = str(lab.layer("sn1"))
        done = virsh(
            "blockcommit", lab.name, "vda", "--active", "--pivot", "--wait", "--base", base
        )
        assert done.returncode == 0, done.stderr
        seen = moments(lab)
        assert seen["sn3"] == seen["sn4"] == "unknown", seen
        virsh("destroy", lab.name)
        lab.running = False
        refused = run_vshx("snapshot-revert", lab.name, "sn4")
        assert refused.returncode == 1 and "hint: " in refused.stderr, refused.stderr
    finally:
        destroy_lab(lab)


def test_a_write_into_the_base_a_flatten_left_makes_its_moment_unknown(tmp_path: Path):
    lab = make_lab(tmp_path, running=False)
    try:
        done = run_vshx("flatten", lab.name, "vda", "--route", "pull")
        assert done.returncode == 0, done.stderr
        assert moments(lab)["sn1"] == "intact"  # base.qcow2, out of the chain
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0xee 50M 1M", str(lab.layer("base"))],
            check=True, capture_output=True,
        )  # fmt: skip
        assert moments(lab)["sn1"] == "unknown"
        refused = run_vshx("snapshot-revert", lab.name, "sn1")
        assert refused.returncode == 1 and "hint: " in refused.stderr, refused.stderr
    finally:
        destroy_lab(lab)
