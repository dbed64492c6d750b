"""A shut-off domain with a checkpoint: libvirt refuses every snapshot-create (--redefine too)
then, so a plan that re-defines snapshot metadata is refused whole, before anything changes,
naming the checkpoint and the way on; what the hint says works.

Domains are built as users build them: a checkpoint (``virsh checkpoint-create-as``) taken
after the first guest writes, then ``virsh snapshot-create-as --disk-only`` snapshots with
guest writes between them, shut off at the end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import file_state, run_vshx, virsh
from tests.test_snapshot_delete import (
    Dom,
    build,
    check_after,
    current,
    destroy,
    tree,
)

pytestmark = pytest.mark.libvirt


def unchanged(dom: Dom) -> tuple[object, ...]:
    """Everything a refused command must leave as it was."""
    return (
        file_state(dom.dir),
        virsh("dumpxml", "--inactive", dom.name).stdout,
        tree(dom.name),
        current(dom.name),
        virsh("checkpoint-list", dom.name, "--name").stdout,
    )


def test_offline_delete_with_a_checkpoint_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    """vshx snapshot-delete of a middle snapshot (its plan re-defines the next one) on a
    shut-off domain with a checkpoint: refused at once, dry run too, nothing changed, no
    journal; started as the hint says, the same command deletes it."""
    dom = build(tmp_path, 1, False, "cpoff", checkpoint="c1")
    try:
        before = unchanged(dom)
        for extra in (["--dry-run"], []):
            proc = run_vshx("snapshot-delete", dom.name, "s2", *extra)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "error: refusing: " in proc.stderr and "checkpoint c1" in proc.stderr
            assert "nothing was changed" in proc.stderr
            assert f"hint: start it (virsh start {dom.name})" in proc.stderr
            assert f"virsh checkpoint-delete {dom.name} c1 --metadata" in proc.stderr
            assert "Traceback" not in proc.stderr
            assert unchanged(dom) == before
        assert run_vshx("jobs", dom.name).stdout.startswith("no block jobs")
        # deleting the current leaf re-defines nothing: allowed offline
        leaf = run_vshx("snapshot-delete", dom.name, "s3", "--dry-run")
        assert leaf.returncode == 0, leaf.stderr
        virsh("start", dom.name)
        dom.running = True
        done = run_vshx("snapshot-delete", dom.name, "s2")
        assert done.returncode == 0, done.stderr
        assert tree(dom.name) == {"s1": "", "s3": "s1"}
        assert virsh("checkpoint-list", dom.name, "--name").stdout.split() == ["c1"]
        check_after(dom, tmp_path)
    finally:
        destroy(dom)


def test_offline_revert_with_a_checkpoint_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    """snapshot-revert would create overlays without the checkpoint's bitmap and then fail
    to make the snapshot current: refused first, nothing changed, no overlay left."""
    dom = build(tmp_path, 1, False, "cprev", checkpoint="c1")
    try:
        before = unchanged(dom)
        proc = run_vshx("snapshot-revert", dom.name, "s1")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "checkpoint c1" in proc.stderr and "nothing was changed" in proc.stderr
        assert f"virsh checkpoint-delete {dom.name} c1 --metadata" in proc.stderr
        assert unchanged(dom) == before
        assert run_vshx("jobs", dom.name).stdout.startswith("no block jobs")
    finally:
        destroy(dom)


def test_recover_of_an_interrupted_delete_on_a_shut_off_domain_with_a_checkpoint(
    tmp_path: Path,
) -> None:
    """A live two-disk delete whose vdb commit fails (its base made immutable) after vda's
    merge, the domain then shut off: recover refuses while it is shut off (nothing changes)
    and says to start it; started, recover finishes the delete on every disk."""
    dom = build(tmp_path, 2, True, "cprec", checkpoint="c1")
    stuck = dom.file("vdb", "s1")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        failed = run_vshx("snapshot-delete", dom.name, "s2")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        # vda's merge ran before libvirt refused vdb's: the hint says so, and the way on
        assert "changed nothing" not in failed.stderr and "ran and changed" in failed.stderr
        assert f"vshx recover {dom.name} vda" in failed.stderr
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
        virsh("destroy", dom.name)
        dom.running = False
        assert "interrupted vshx" in run_vshx("jobs", dom.name).stdout
        before = unchanged(dom)
        refused = run_vshx("recover", dom.name)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "checkpoint c1" in refused.stderr and "cannot finish" in refused.stderr
        assert f"virsh start {dom.name}" in refused.stderr
        assert f"vshx recover {dom.name}" in refused.stderr
        assert unchanged(dom) == before
        virsh("start", dom.name)
        dom.running = True
        recovered = run_vshx("recover", dom.name)
        assert recovered.returncode == 0, recovered.stderr
        assert tree(dom.name) == {"s1": "", "s3": "s1"}
        assert run_vshx("jobs", dom.name).stdout.startswith("no block jobs")
        assert virsh("checkpoint-list", dom.name, "--name").stdout.split() == ["c1"]
        check_after(dom, tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
        destroy(dom)
