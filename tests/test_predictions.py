"""Predictions: a batch --dry-run plans each line on the lines before it; explain and real runs
plan on the chain as it is; anything that changes something drops the predictions."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import Lab, chain_files, qemu_check, run_vshx, snapshot_names

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


def test_a_batch_dry_run_judges_moments_by_what_earlier_lines_record(made, tmp_path):
    """A commit records where it moved the snapshots' moments (the ledger); a later line of the
    same batch judges them by that record.  An outside attack: `--dry-run` of `commit` then
    `snapshot-delete` refused line 2 ("sn2.qcow2 left the chain and vshx has no record of how")
    where the real batch deletes: the dry run now judges by the record line 1 would write.
    The script, piped into `sh -e`, ends where the real batch does on an identical lab."""
    dry_lab, real_lab = made(), made()
    before = dry_lab.guest_hash(tmp_path)
    lines = "commit {0} vda --base sn1 --top sn2\nsnapshot-delete {0} sn3\n"
    dry = run_vshx("--dry-run", "-f", "-", stdin=lines.format(dry_lab.name))
    assert dry.returncode == 0, dry.stderr
    assert "blockcommit" in dry.stdout.split("snapshot-delete", 1)[-1]  # line 2 was planned
    subprocess.run(["sh", "-e"], input=dry.stdout, text=True, check=True, capture_output=True)
    real = run_vshx("-f", "-", stdin=lines.format(real_lab.name))
    assert real.returncode == 0, real.stderr
    for lab in (dry_lab, real_lab):
        assert [os.path.basename(p) for p in chain_files(lab.active)] == [
            "sn4.qcow2",
            "sn1.qcow2",
            "base.qcow2",
        ]
        assert lab.guest_hash(tmp_path) == before
        qemu_check(lab.active)
    assert snapshot_names(dry_lab.name) == snapshot_names(real_lab.name)
    assert "sn3" not in snapshot_names(dry_lab.name)
    for lab in (dry_lab, real_lab):  # sn2's moment went into sn1.qcow2: cleanup forgets it
        assert run_vshx("snapshot-cleanup", lab.name).returncode == 0
        assert lab.check_moments(tmp_path) == ["sn1", "sn4"]


def test_a_batch_dry_run_checks_every_line_at_the_top_and_stops_where_vshx_stops(
    offline_lab: Lab, tmp_path
):
    """A later line of a batch script is planned on what the earlier lines leave; its checks
    of the host run at the script's top, before any line changes anything (atk12 F3: the
    second plan had none, and the first, a pull, writes into no file others read: printed,
    then an image made on base.qcow2, `sh -e` committed into the base under it, where the real
    run refuses).  Where vshx stops, the script stops with vshx's status (atk12 F7)."""
    lab = offline_lab
    folder = os.path.dirname(lab.active)
    lines = (
        f"pull {lab.name} vda --base sn2\ncommit {lab.name} vda --base base --top sn1 --delete\n"
    )
    dry = run_vshx("--dry-run", "-f", "-", stdin=lines)
    assert dry.returncode == 0, dry.stderr
    script = dry.stdout
    assert script.startswith("#!/bin/sh\n") and script.count("#!/bin/sh") == 1
    assert script.index(f"find {folder}") < script.index("qemu-img rebase")  # checked first
    before = chain_files(lab.active)
    extra = tmp_path / "extra.qcow2"
    base = os.path.join(folder, "base.qcow2")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", str(extra)],
        check=True,
    )
    os.replace(extra, os.path.join(folder, "extra.qcow2"))  # a new reader of the base, there
    stale = subprocess.run(["sh", "-e"], input=script, text=True, capture_output=True)
    assert stale.returncode != 0, stale.stdout
    assert chain_files(lab.active) == before  # nothing ran: not even line 1
    qemu_check(lab.active)
    refused = run_vshx("--dry-run", "-f", "-", stdin=lines)  # printed now: line 2 is refused
    assert refused.returncode == 1 and "would change what these see" in refused.stderr
    assert refused.stdout.rstrip().endswith("exit 1"), refused.stdout
    ran = subprocess.run(["sh", "-e"], input=refused.stdout, text=True, capture_output=True)
    assert ran.returncode == 1, ran.stderr  # line 1 ran, then the script stopped, as vshx does
    assert "sn3.qcow2" not in [os.path.basename(p) for p in chain_files(lab.active)]
    assert "sn1.qcow2" in [os.path.basename(p) for p in chain_files(lab.active)]
    qemu_check(lab.active)


def test_the_printed_listing_check_sees_a_new_qed_image(offline_lab: Lab, tmp_path):
    """atk13 F1: the script's check of the chain's directory hashed only the qcow2 images
    there: a QED overlay made on base.qcow2 after printing went unseen and `sh -e` committed
    into its backing file, where vshx refuses.  It now lists every image qemu-img opens with a
    backing or extent file (qcow, qcow2, QED, VMDK)."""
    lab = offline_lab
    folder = os.path.dirname(lab.active)
    base = os.path.join(folder, "base.qcow2")
    words = ("commit", lab.name, "vda", "--top", "sn2", "--base", "base", "--dry-run")
    for fmt in ("qed",):  # (a VMDK backs onto VMDK only: its start is listed too)
        dry = run_vshx(*words)
        assert dry.returncode == 0, dry.stderr
        reader = os.path.join(folder, f"reader.{fmt}")
        create = ["qemu-img", "create", "-q", "-f", fmt, "-b", base, "-F", "qcow2", reader]
        subprocess.run(create, check=True)
        before = chain_files(lab.active)
        stale = subprocess.run(["sh", "-e"], input=dry.stdout, text=True, capture_output=True)
        assert stale.returncode != 0, (fmt, stale.stdout)
        assert chain_files(lab.active) == before
        assert run_vshx(*words).returncode == 1  # vshx itself refuses too
        os.unlink(reader)
    same = run_vshx(*words)  # the unchanged host: the script runs
    done = subprocess.run(["sh", "-e"], input=same.stdout, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    qemu_check(lab.active)
