"""Predictions: a batch --dry-run plans each line on the lines before it; explain and real runs
plan on the chain as it is; anything that changes something drops the predictions."""

from __future__ import annotations

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
