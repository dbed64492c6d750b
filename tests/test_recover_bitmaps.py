"""recover after a vshx killed (SIGKILL) between the checkpoint bitmap steps of an offline
merge: the receiver's bitmaps were disabled (or one added and not yet merged), and libvirt then
refuses every incremental backup from those checkpoints ("checkpoint inconsistent").

The domain is built as users do (tests/test_bitmaps_offline.py: checkpoints, guest writes,
``snapshot-create-as --disk-only`` on the running domain), shut off, merged by vshx and killed
at one step: a ``qemu-img`` first on PATH waits at that step's command line, vshx is killed
there (-9), and that qemu-img then goes on to its end, as the child of a killed vshx does.

Before, recover only cleared the journal: the bitmaps stayed half carried, and the backups
refused.  Now the chain decides: the plan's chain, its remaining bitmap steps are run; the chain
before it, the bitmaps are put back as they were; a running domain, recover refuses.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    URI,
    WAITING_QEMU_IMG,
    Lab,
    guest_hash,
    killed_at_qemu_img,
    qemu_check,
    run_vshx,
    virsh,
)
from test_bitmaps_offline import (
    CHANGED,
    backup_xml,
    backups,
    build,
    chain_files,
    forget_backing_store,
    remove,
    shut_off,
)

pytestmark = pytest.mark.libvirt

JOURNAL = "https://vshx.invalid/journal"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """base <- sn1{c1} <- s2{c1,c2} <- s3{c1,c2} (active), shut off."""
    made = build(tmp_path, "lab")
    try:
        shut_off(made)
        yield made
    finally:
        remove(made)


def killed_at(tmp_path: Path, pattern: str, *args: str) -> None:
    """vshx running ``args``, killed (-9) while its qemu-img step whose command line matches
    ``pattern`` (a sh case pattern) is at work; that qemu-img then runs to its end."""
    killed_at_qemu_img(tmp_path, WAITING_QEMU_IMG, args, VSHX_STOP_AT=pattern)


def bitmaps(path: Path) -> dict[str, bool]:
    """Each bitmap of a file, and whether it records (qemu-img's word)."""
    import json

    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)["format-specific"]["data"]
    return {b["name"]: "auto" in b["flags"] for b in data.get("bitmaps", [])}


def recovered_and_backed_up(lab: Lab, tmp_path: Path, before: str, *printed: str) -> None:
    """recover prints ``printed`` in its --dry-run and runs; then the chain is clean, the guest
    sees what it saw, and every checkpoint's backup copies exactly what changed since it."""
    plan = run_vshx("recover", lab.name, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    for line in printed:
        assert line in plan.stdout, plan.stdout
    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert guest_hash(lab.active, tmp_path) == before
    for layer in chain_files(lab.active):
        qemu_check(lab.dir / layer)
    forget_backing_store(lab.name)
    virsh("start", lab.name)
    lab.running = True
    assert backups(lab, tmp_path) == CHANGED
    assert lab.guest_hash(tmp_path) == before


def test_recover_finishes_the_bitmap_steps_of_a_pull_killed_in_its_data_step(
    lab: Lab, tmp_path: Path
) -> None:
    """Killed in the safe rebase (s3's bitmaps disabled before it): the rebase ends, the
    chain is the plan's, so recover runs the merges of s2's bitmaps that record again."""
    s2, s3 = lab.dir / "s2.qcow2", lab.dir / "s3.qcow2"
    before = guest_hash(lab.active, tmp_path)
    killed_at(tmp_path, "* rebase -f *", "pull", lab.name, "vda", "--base", "sn1.qcow2")
    assert chain_files(s3) == ["s3.qcow2", "sn1.qcow2", "base.qcow2"]
    assert bitmaps(s3) == {"c1": False, "c2": False}  # what libvirt refuses a backup over
    merge = f"qemu-img bitmap -f qcow2 --merge c2 -b {s2} -F qcow2 --enable {s3} c2"
    recovered_and_backed_up(lab, tmp_path, before, merge)


def test_recover_undoes_the_bitmap_steps_of_a_commit_killed_before_its_pointer_step(
    lab: Lab, tmp_path: Path
) -> None:
    """Killed while merging bitmap c2 into sn1 (c1 of sn1 disabled, c2 added): s3 still reads
    through s2, whose bitmaps record its changes, so recover puts sn1's back as they were."""
    sn1 = lab.dir / "sn1.qcow2"
    before = guest_hash(lab.active, tmp_path)
    args = ["commit", lab.name, "vda", "--top", "s2.qcow2", "--base", "sn1.qcow2"]
    killed_at(tmp_path, "* --merge c2 *", *args)
    assert chain_files(lab.active) == ["s3.qcow2", "s2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert bitmaps(sn1) == {"c1": False, "c2": True}
    remove_c2 = f"qemu-img bitmap -f qcow2 --remove {sn1} c2"
    enable_c1 = f"qemu-img bitmap -f qcow2 --enable {sn1} c1"
    recovered_and_backed_up(lab, tmp_path, before, remove_c2, enable_c1)
    assert bitmaps(sn1) == {"c1": True}


def test_recover_refuses_to_touch_the_bitmaps_of_a_running_domain(lab: Lab, tmp_path: Path) -> None:
    """Started after the kill: its guest wrote with s3's bitmaps disabled, so vshx cannot make
    them right; recover refuses, changes nothing, and says what to do."""
    s3 = lab.dir / "s3.qcow2"
    killed_at(tmp_path, "* rebase -f *", "pull", lab.name, "vda", "--base", "sn1.qcow2")
    forget_backing_store(lab.name)
    virsh("start", lab.name)
    lab.running = True
    refused = run_vshx("recover", lab.name)
    assert refused.returncode == 1, refused.stdout
    assert "error:" in refused.stderr and "runs" in refused.stderr
    assert "hint: nothing was changed" in refused.stderr and "checkpoint-delete" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert virsh("metadata", lab.name, JOURNAL).stdout.startswith("<journal")  # kept
    assert bitmaps(s3) == {"c1": False, "c2": False}
    proc = subprocess.run(
        ["virsh", "-c", URI, "backup-begin", lab.name, "/dev/stdin"],
        input=backup_xml("c1", tmp_path / "c1.qcow2"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "checkpoint inconsistent" in proc.stderr  # still refused


def test_recover_refuses_when_a_file_the_bitmap_steps_need_is_gone(
    lab: Lab, tmp_path: Path
) -> None:
    """s2.qcow2, whose bitmaps the pull was to merge into s3, deleted since: recover refuses
    and changes nothing; once the checkpoints are forgotten (as its hint says), it goes on and
    leaves the bitmaps alone.  Killed at the first bitmap merge, after the data step: killed
    in the data step itself, s2 is also the old backing that proves the rebase's copy reached
    s3 (tests/test_recover_rebase.py), and recover refuses for that first."""
    s2, s3 = lab.dir / "s2.qcow2", lab.dir / "s3.qcow2"
    killed_at(tmp_path, "* bitmap *--merge*", "pull", lab.name, "vda", "--base", "sn1.qcow2")
    s2.unlink()
    left = bitmaps(s3)  # as the kill left them: recover changes nothing of it
    refused = run_vshx("recover", lab.name)
    assert refused.returncode == 1, refused.stdout
    assert f"error: {s2} is gone" in refused.stderr
    forget = [f"virsh checkpoint-delete {lab.name} {c} --metadata" for c in ("c1", "c2")]
    assert all(line in refused.stderr for line in forget), refused.stderr
    assert virsh("metadata", lab.name, JOURNAL).stdout.startswith("<journal")  # kept
    assert bitmaps(s3) == left
    for checkpoint in ("c1", "c2"):
        virsh("checkpoint-delete", lab.name, checkpoint, "--metadata")
    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert "no checkpoint of" in done.stderr
    assert bitmaps(s3) == left
    qemu_check(s3)
