"""Predictions: a batch --dry-run plans each line on the lines before it; explain and real runs
plan on the chain as it is; anything that changes something drops the predictions."""

from __future__ import annotations

import subprocess

import pytest
from conftest import Lab, run_vshx

from vshx.shell.session import Session
from vshx.spec.spec import Args, Command
from vshx.storage.chain import Chain

pytestmark = pytest.mark.libvirt


def test_explain_plans_on_the_chain_as_it_is(lab: Lab):
    script = (
        f"explain commit {lab.name} vda --base sn1 --top sn3\n"
        f"explain pull {lab.name} vda --base sn1\n"
    )
    proc = run_vshx("-f", "-", stdin=script)
    assert proc.returncode == 0, proc.stderr
    second = proc.stdout.split("blockpull", 1)
    assert len(second) == 2, proc.stdout  # the pull was planned: sn2, sn3 are still there
    assert "nothing to do" not in proc.stdout


def test_a_batch_dry_run_plans_on_the_lines_before(lab: Lab):
    script = f"commit {lab.name} vda --base sn1 --top sn3\npull {lab.name} vda --base sn1\n"
    proc = run_vshx("--dry-run", "-f", "-", stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert "# nothing to do" in proc.stdout  # sn1 is sn4's backing file after line 1


def test_a_command_that_changes_something_drops_predictions():
    session = Session("qemu:///system")
    session.predicted["x"] = Chain([], "d", "vda")
    changing = Command("lab-create", "", lambda s, a: None, changes=True)
    session._finished(changing, Args(dry_run=False), 0)
    assert session.predicted == {}
    session.predicted["x"] = Chain([], "d", "vda")
    session._finished(changing, Args(dry_run=True), 0)  # only planned: nothing changed
    assert "x" in session.predicted


def test_a_batch_dry_run_stops_after_a_passed_through_change(tmp_path):
    """vshx predicts its own plans, not what a passed-through qemu-img or virsh line does:
    after one that may change things, a --dry-run batch refuses to plan a changing command
    (an outside attack: the script planned line 2 without line 1's new overlay on the base,
    which the real run refuses, and sh -e ran it to the end).  Metadata-only virsh lines (a
    printed plan's re-defined snapshots) do not stop it."""
    base, mid = tmp_path / "base.qcow2", tmp_path / "mid.qcow2"
    for argv in (
        ["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"],
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(mid)],
    ):
        subprocess.run(argv, check=True)
    new = tmp_path / "new.qcow2"
    script = f"qemu-img create -q -f qcow2 -b {base} -F qcow2 {new}\ncommit {mid}\n"
    dry = run_vshx("--dry-run", "-f", "-", stdin=script)
    assert dry.returncode == 1 and "<stdin>:2: error: --dry-run cannot plan commit" in dry.stderr
    assert "hint:" in dry.stderr and not new.exists()
    real = run_vshx("-f", "-", stdin=script)
    assert real.returncode == 1 and "would change what these see" in real.stderr  # new.qcow2
    alone = run_vshx("--dry-run", "-f", "-", stdin=f"commit {mid}\n")  # line 1 ran for real
    assert alone.returncode == 1 and "would change what these see" in alone.stderr


def test_a_batch_dry_run_stops_after_a_snapshot_revert(offline_lab: Lab):
    """A revert (and snapshot-delete, snapshot-cleanup, recover) changes more than a chain vshx
    predicts: a new overlay, the current snapshot, metadata.  An outside attack: the dry run
    planned `commit --active --pivot` on the chain from before the revert; `sh -e` of that
    script committed into base.qcow2 and undid the revert, where the real run refuses."""
    lab = offline_lab
    script = (
        f"snapshot-revert {lab.name} sn3\n"
        f"commit {lab.name} vda --active --pivot\n"
        f"snapshot-delete {lab.name} sn2\n"
    )
    dry = run_vshx("--dry-run", "-f", "-", stdin=script)
    assert dry.returncode == 1, dry.stderr
    assert "<stdin>:2: error: --dry-run cannot plan commit" in dry.stderr
    assert f"snapshot-revert {lab.name} sn3" in dry.stderr and "hint:" in dry.stderr
    assert "commit" not in dry.stdout.replace("snapshot-", "")  # line 2 was never planned
    reads = f"snapshot-revert {lab.name} sn3\nsnapshot-list {lab.name}\n"  # reads still run
    assert run_vshx("--dry-run", "-f", "-", stdin=reads).returncode == 0
