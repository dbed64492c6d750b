"""The branch a snapshot-revert keeps stays kept after a snapshot is taken on the new line (an
outside tester's data loss: after `snapshot-revert D sn2 --running`, a guest write and `virsh
snapshot-create-as D sn4`, `snapshot-delete D sn2 --children` merged the new writes into
sn1.qcow2, which the kept branch sn3.qcow2 still reads through, and said nothing; `commit
--active`, `flatten --route commit` and `snapshot-delete D sn1 --children-only` did the same).

The usage scan passed over every file the domain's own snapshots name except the overlays of
the current snapshot's descendants; once sn4 was current, sn3 was a sibling, not a descendant,
so its overlay (the branch's leaf, the guest's writes before the revert) was passed over.  Now
only the current snapshot's own history is passed over: a file only a snapshot off that line
names is a user, as it is before sn4 is taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    destroy_lab,
    guest_hash,
    make_lab,
    run_vshx,
    snapshot_names,
    virsh,
)

from vshx.storage.moments import Moment, Snapshot


@dataclass
class Branched:
    lab: Lab
    branch: Path  # sn3.qcow2: the kept branch's leaf
    branch_view: str  # its guest view right after the revert
    guest_view: str  # the running guest's view after its write and sn4


def guest_io(domain: str, command: str) -> None:
    done = virsh(
        "qemu-monitor-command",
        domain,
        "--hmp",
        f'qemu-io -d virtio-disk0/virtio-backend "{command}"',
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


@pytest.fixture
def branched(tmp_path: Path) -> Iterator[Branched]:
    """base <- sn1 <- sn2 <- sn3 (shut off), reverted to sn2 and started; the guest writes,
    then virsh takes sn4 on the new line: base <- sn1 <- sn1.sn2-revert.qcow2 <- sn4.qcow2
    (active), with the branch sn2.qcow2 <- sn3.qcow2 kept beside it, reading through
    sn1.qcow2."""
    lab = make_lab(tmp_path, running=False, layers=3)
    try:
        done = run_vshx("snapshot-revert", lab.name, "sn2", "--running")
        assert done.returncode == 0, done.stderr
        # the real run names what it keeps, as its dry run does (nu16)
        kept = "the branch left behind is kept, nothing is deleted: vda: sn3.qcow2, sn2.qcow2 ("
        assert kept in done.stdout, done.stdout
        lab.running = True
        branch = lab.layer("sn3")
        before = guest_hash(branch, tmp_path)
        guest_io(lab.name, "write -q -P 0x77 0 1048576")
        guest_io(lab.name, "flush")
        made = virsh(
            "snapshot-create-as",
            lab.name,
            "sn4",
            "--disk-only",
            "--atomic",
            "--diskspec",
            f"vda,file={lab.dir / 'sn4.qcow2'}",
        )
        assert made.returncode == 0, made.stderr
        assert chain_files(lab.active)[0] == "sn4.qcow2"
        assert "sn1.qcow2" in chain_files(branch)
        yield Branched(lab, branch, before, lab.guest_hash(tmp_path))
    finally:
        destroy_lab(lab)


def assert_untouched(b: Branched, tmp_path: Path) -> None:
    """The branch shows what it showed after the revert; the guest what it showed."""
    assert guest_hash(b.branch, tmp_path) == b.branch_view, "the kept branch sn3.qcow2 changed"
    assert b.lab.guest_hash(tmp_path) == b.guest_view
    assert snapshot_names(b.lab.name) == ["sn1", "sn2", "sn3", "sn4"]


@pytest.mark.libvirt
@pytest.mark.parametrize(
    "argv",
    [
        ["snapshot-delete", "{D}", "sn2", "--children"],
        ["snapshot-delete", "{D}", "sn1", "--children-only"],
        ["commit", "{D}", "vda", "--active"],
        ["flatten", "{D}", "vda", "--route", "commit"],
    ],
    ids=["delete-children", "delete-children-only", "commit-active", "flatten-commit"],
)
def test_merge_into_a_file_the_branch_reads_is_refused(
    branched: Branched, tmp_path: Path, argv: list[str]
) -> None:
    words = [w.replace("{D}", branched.lab.name) for w in argv]
    done = run_vshx(*words)
    assert_untouched(branched, tmp_path)  # before the fix: the branch's view changed, rc 0
    for run in (done, run_vshx(*words, "--dry-run")):
        assert run.returncode == 1, run.stdout + run.stderr
        assert run.stderr.startswith("error: ") and "hint:" in run.stderr, run.stderr
        assert "would change what these see" in run.stderr or "is also used by" in run.stderr
        assert f"image {branched.branch}" in run.stderr, run.stderr  # names the kept branch
        assert "Traceback" not in run.stderr
    assert_untouched(branched, tmp_path)


@pytest.mark.libvirt
def test_flatten_takes_the_pull_route_and_keeps_the_branch(
    branched: Branched, tmp_path: Path
) -> None:
    plan = run_vshx("flatten", branched.lab.name, "vda", "--dry-run")
    done = run_vshx("flatten", branched.lab.name, "vda")
    assert done.returncode == 0, done.stderr
    assert_untouched(branched, tmp_path)
    assert chain_files(branched.lab.active) == ["sn4.qcow2"]
    assert plan.returncode == 0, plan.stderr
    chosen = [line for line in plan.stdout.splitlines() if line.startswith("# * ")]
    assert chosen and chosen[0].split()[2] == "pull", plan.stdout
    commit = next(line for line in plan.stdout.splitlines() if line.startswith("#   commit "))
    assert "unsafe: base.qcow2 is also used by:" in commit, plan.stdout
    assert f"image {branched.branch}" in commit, plan.stdout


@pytest.mark.libvirt
def test_commit_above_the_branch_point_still_runs(branched: Branched, tmp_path: Path) -> None:
    """What the branch does not read stays free: sn4.qcow2 into the revert's new overlay."""
    overlay = branched.lab.dir / chain_files(branched.lab.active)[1]  # sn1.sn2-revert.qcow2
    done = run_vshx("commit", branched.lab.name, "vda", "--active", "--base", str(overlay))
    assert done.returncode == 0, done.stderr
    assert chain_files(branched.lab.active)[1:] == ["sn1.qcow2", "base.qcow2"]
    assert guest_hash(branched.branch, tmp_path) == branched.branch_view
    assert branched.lab.guest_hash(tmp_path) == branched.guest_view


def _snap(name: str, parent: str | None, current: bool, file: str, overlay: str) -> Snapshot:
    moment = Moment("vda", file, overlay)
    return Snapshot(name, parent, 0, "disk-snapshot", "no", None, current, "", {"vda": moment})


@pytest.mark.parametrize(
    ("current", "passed"),
    [
        # sn3 a sibling: its leaf and its moment (sn2's overlay too) are users
        ("sn4", {"base", "sn1", "sn1.new", "sn4"}),
        ("sn2", {"base", "sn1"}),  # sn3, sn4 descend from it: both branches are users
        (None, set()),  # no current snapshot, no known history: every named file is a user
    ],
)
def test_only_the_current_history_is_passed_over(current: str | None, passed: set[str]) -> None:
    """Snapshots as after `snapshot-revert sn2` and `snapshot-create-as sn4`."""
    from vshx.merging.preflight import _own_snapshot_files
    from vshx.storage.chain import Chain, Layer

    snaps = [
        _snap("sn1", None, current == "sn1", "base", "sn1"),
        _snap("sn2", "sn1", current == "sn2", "sn1", "sn2"),
        _snap("sn3", "sn2", current == "sn3", "sn2", "sn3"),
        _snap("sn4", "sn2", current == "sn4", "sn1.new", "sn4"),
    ]
    ours = Chain([Layer("sn4", "qcow2", 0)], "d", "vda")
    found = _own_snapshot_files(None, ours, lambda p: p, snaps)  # type: ignore[arg-type]
    assert found == passed


def test_a_file_an_off_history_snapshot_names_only_in_its_definition_is_a_user() -> None:
    """atk20 #1: s2 left vda out (snapshot='no'): only its saved definition names vda's file
    of then, the leaf a revert to s1 leaves behind, which s1 names as its overlay."""
    from vshx.merging.preflight import _own_snapshot_files
    from vshx.storage.chain import Chain, Layer

    s1 = Snapshot("s1", None, 0, "disk-snapshot", "no", None, True, "<domainsnapshot/>",
                  {"vda": Moment("vda", "/a", "/a-s1")})  # fmt: skip
    saved = (
        "<domainsnapshot><disks><disk name='vda' snapshot='no'/></disks><domain><devices>"
        "<disk><source file='/a-s1'/><target dev='vda'/></disk></devices></domain>"
        "</domainsnapshot>"
    )
    s2 = Snapshot("s2", "s1", 0, "disk-snapshot", "no", None, False, saved,
                  {"vdb": Moment("vdb", "/b", "/b-s1")})  # fmt: skip
    ours = Chain([Layer("/a.new", "qcow2", 0)], "d", "vda")
    found = _own_snapshot_files(None, ours, lambda p: p, [s1, s2])  # type: ignore[arg-type]
    assert found == {"/a"}
