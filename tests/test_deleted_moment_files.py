"""A snapshot whose file another tool deleted (atk17 F3): `virsh blockcommit --delete` of sn3,
sn2 into sn1 deletes sn3.qcow2, the file snapshot sn4 names, but sn4.qcow2 (the overlay sn4
made) now reads through sn1.qcow2, which shows exactly that moment.  vshx has no record of
that commit, so it says the moment is unknown (and a plan lists it so), never gone; where the
overlay reads through nothing (a pull took everything, the old files removed), it is gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Lab, guest_hash, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def moment_column(lab: Lab) -> dict[str, str]:
    listed = run_vshx("snapshot-list", lab.name)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split(None, 1) for line in listed.stdout.splitlines()[2:] if line.strip()]
    return {name: rest.split("vda: ", 1)[1] for name, rest in rows}


def test_a_commit_that_deleted_the_file_leaves_the_moment_unknown(lab: Lab, tmp_path: Path) -> None:
    lab.record_moments(tmp_path)
    done = virsh(
        "blockcommit", lab.name, "vda", "--base", str(lab.layer("sn1")),
        "--top", str(lab.layer("sn3")), "--delete", "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not lab.layer("sn3").exists() and not lab.layer("sn2").exists()
    # what vshx may not call gone: sn1.qcow2 shows sn4's moment now
    assert guest_hash(lab.layer("sn1"), tmp_path) == lab.moments["sn4"]["vda"]
    seen = moment_column(lab)
    assert seen["sn4"].startswith("unknown (sn3.qcow2 no longer exists"), seen["sn4"]
    assert "reads through sn1.qcow2" in seen["sn4"]
    assert seen["sn3"].startswith("gone (sn2.qcow2 no longer exists"), seen["sn3"]
    plan = run_vshx("--dry-run", "commit", lab.name, "vda", "--top", "sn1")
    assert plan.returncode == 0, plan.stderr
    unknown = next(line for line in plan.stdout.splitlines() if line.startswith("# unknown:"))
    assert "sn4 (sn3.qcow2 no longer exists" in unknown
    loses = next(line for line in plan.stdout.splitlines() if line.startswith("# loses:"))
    assert "sn4" not in loses


def test_a_pull_of_everything_then_rm_leaves_the_moments_gone(lab: Lab) -> None:
    done = virsh("blockpull", lab.name, "vda", "--wait")
    assert done.returncode == 0, done.stderr
    for name in ("base", "sn1", "sn2", "sn3"):
        os.unlink(lab.layer(name))
    seen = moment_column(lab)
    assert all(state.startswith("gone (") for state in seen.values()), seen
