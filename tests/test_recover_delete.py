"""recover after a vshx killed (SIGKILL) in the middle of ``commit ... --delete``: the block job
goes on in libvirt and completes, and recover finishes the deletions the user asked for, with
the plan's own rules (the journal lists the files; each is deleted only when it is out of the
chain and nothing else reaches it), printed as the plan's ``rm -f --`` lines.

Before, recover rolled the job forward and cleared the journal: the merged-away files stayed.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import URI, Lab, block_job, destroy_lab, make_lab, qemu_check, run_vshx, virsh
from conftest import wait_for as wait_until
from test_recover_ledger import killed_mid_job

pytestmark = pytest.mark.libvirt

JOURNAL = "https://vshx.invalid/journal"
COMMIT = ["--base", "sn1", "--top", "sn3", "--delete"]


@pytest.fixture
def killed(tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    """A running lab (16 MiB in every layer) whose ``commit --base sn1 --top sn3 --delete``
    was killed mid job; the job then ran to its end in QEMU.  With the guest's view before."""
    lab = make_lab(tmp_path, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        killed_mid_job(lab, "commit", lab.name, "vda", *COMMIT)
        wait_until(lambda: "Block" not in block_job(lab.name), "the commit to end in QEMU")
        yield lab, before
    finally:
        destroy_lab(lab)


def layers(lab: Lab) -> list[str]:
    return sorted(path.name for path in lab.dir.glob("*.qcow2"))


def check_data(lab: Lab, tmp_path: Path, before: str) -> None:
    assert lab.guest_hash(tmp_path) == before
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)


def test_recover_finishes_the_deletions_of_a_killed_commit(
    killed: tuple[Lab, str], tmp_path: Path
) -> None:
    lab, before = killed
    sn2, sn3 = lab.layer("sn2"), lab.layer("sn3")
    plan = run_vshx("recover", lab.name, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"rm -f -- {sn3}" in plan.stdout and f"rm -f -- {sn2}" in plan.stdout
    assert "virsh -c qemu:///system suspend" in plan.stdout  # the plan's flush comes first
    assert sn2.exists() and sn3.exists()  # a dry run deletes nothing

    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert "base.qcow2 <- sn1.qcow2 <- sn4.qcow2 (active)" in done.stdout + done.stderr
    assert layers(lab) == ["base.qcow2", "sn1.qcow2", "sn4.qcow2"]
    check_data(lab, tmp_path, before)
    jobs = run_vshx("jobs", lab.name)
    assert "no block jobs and no interrupted vshx operations" in jobs.stdout, jobs.stdout


def test_recover_keeps_a_listed_file_something_else_uses(
    killed: tuple[Lab, str], tmp_path: Path
) -> None:
    """An image made on sn2.qcow2 after the kill reaches it: sn2.qcow2 is kept (warning),
    sn3.qcow2 deleted; the image still reads its whole chain."""
    lab, before = killed
    sn2, sn3 = lab.layer("sn2"), lab.layer("sn3")
    user = lab.dir / "user.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(sn2), str(user)],
        check=True,
    )
    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert f"keeping {sn2}: still used by image {user}" in done.stderr
    assert sn2.exists() and not sn3.exists()
    qemu_check(user)
    check_data(lab, tmp_path, before)


def test_recover_after_an_aborted_commit_deletes_nothing(tmp_path: Path) -> None:
    """recover --abort: the chain stays as it was, so every listed file stays (warned)."""
    lab = make_lab(tmp_path, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        killed_mid_job(lab, "commit", lab.name, "vda", *COMMIT, unthrottle=False)
        done = run_vshx("recover", lab.name, "--abort")
        assert done.returncode == 0, done.stderr
        assert "the interrupted merge is aborted" in done.stderr
        assert "rm -f" not in done.stdout
        assert layers(lab) == [f"{n}.qcow2" for n in ("base", "sn1", "sn2", "sn3", "sn4")]
        check_data(lab, tmp_path, before)
    finally:
        destroy_lab(lab)


def test_recover_of_an_older_journal_says_it_deletes_nothing(
    killed: tuple[Lab, str], tmp_path: Path
) -> None:
    """A journal an older vshx wrote keeps no list of files to delete: recover deletes none
    and says so (fail closed), and rolls the rest forward as before."""
    lab, before = killed
    text = virsh("metadata", lab.name, JOURNAL).stdout
    node = ET.fromstring(text)
    assert "delete" in node.attrib
    del node.attrib["delete"]
    virsh(
        "metadata", lab.name, "--uri", JOURNAL, "--key", "vshx", "--set",
        ET.tostring(node, encoding="unicode"), "--live", "--config",
    )  # fmt: skip
    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert "does not say which files the interrupted plan was to delete" in done.stderr
    assert "snapshot-cleanup" in done.stderr
    assert lab.layer("sn2").exists() and lab.layer("sn3").exists()
    check_data(lab, tmp_path, before)
    gone = subprocess.run(["virsh", "-c", URI, "metadata", lab.name, JOURNAL], capture_output=True)
    assert gone.returncode != 0  # the journal was cleared
