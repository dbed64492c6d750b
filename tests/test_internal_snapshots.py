"""qcow2 internal snapshots live inside one file and read the rest from its backing chain as
it is: a merge that changes, merges away or deletes such a file is refused, nothing changed.

Real libvirtd + qemu-img, shut-off labs (libvirt takes internal snapshots of a shut-off domain
with qemu-img snapshot -c on its active layer).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Lab, destroy_lab, file_state, make_lab, qemu_check, run_vshx, virsh

pytestmark = pytest.mark.libvirt


@pytest.fixture
def shut_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(tmp_path, running=False)
    yield lab
    destroy_lab(lab)


def _libvirt_internal(lab: Lab, tmp: Path) -> str:
    """int1, a libvirt internal snapshot (stored in sn4), and the guest's view at that moment."""
    virsh("snapshot-create-as", lab.name, "int1")
    return lab.guest_hash(tmp)


def _reverts_to(lab: Lab, tmp: Path, moment: str) -> None:
    virsh("snapshot-revert", lab.name, "int1")
    assert lab.guest_hash(tmp) == moment


@pytest.mark.parametrize(
    "words",
    [["flatten", "{d}", "vda"], ["commit", "{d}", "vda", "--active", "--delete", "--dry-run"]],
    ids=["flatten", "active-commit-delete-dry-run"],
)
def test_libvirt_internal_snapshot_refused(shut_lab: Lab, tmp_path: Path, words: list[str]) -> None:
    moment = _libvirt_internal(shut_lab, tmp_path)
    before = file_state(shut_lab.dir)
    proc = run_vshx(*[w.format(d=shut_lab.name) for w in words])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(shut_lab.layer("sn4")) in proc.stderr and "int1" in proc.stderr
    assert f"virsh snapshot-delete {shut_lab.name} int1" in proc.stderr
    assert "rm " not in proc.stdout
    assert file_state(shut_lab.dir) == before
    _reverts_to(shut_lab, tmp_path, moment)


def test_middle_layer_internal_snapshot_refused(shut_lab: Lab) -> None:
    sn2 = shut_lab.layer("sn2")
    subprocess.run(["qemu-img", "snapshot", "-c", "keep", str(sn2)], check=True)
    before = file_state(shut_lab.dir)
    proc = run_vshx("commit", shut_lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(sn2) in proc.stderr and "keep" in proc.stderr
    assert "qemu-img snapshot -d keep" in proc.stderr
    assert file_state(shut_lab.dir) == before
    out = subprocess.run(
        ["qemu-img", "snapshot", "-l", "-U", str(sn2)], capture_output=True, text=True, check=True
    ).stdout
    assert "keep" in out


def test_pasted_rm_of_a_file_with_internal_snapshots_refused(shut_lab: Lab) -> None:
    sn2 = shut_lab.layer("sn2")
    subprocess.run(["qemu-img", "snapshot", "-c", "keep", str(sn2)], check=True)
    before = file_state(shut_lab.dir)
    proc = run_vshx("rm", "-f", "--", str(sn2))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "keep" in proc.stderr
    assert file_state(shut_lab.dir) == before


def test_merge_below_untouched_internal_snapshot_works(shut_lab: Lab, tmp_path: Path) -> None:
    moment = _libvirt_internal(shut_lab, tmp_path)
    proc = run_vshx("commit", shut_lab.name, "vda", "--base", "sn1", "--top", "sn2", "--delete")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not shut_lab.layer("sn2").exists()
    for name in ("sn4", "sn3", "sn1", "base"):
        qemu_check(shut_lab.layer(name))
    assert shut_lab.guest_hash(tmp_path) == moment
    _reverts_to(shut_lab, tmp_path, moment)


def test_snapshot_cleanup_keeps_a_file_with_internal_snapshots(shut_lab: Lab) -> None:
    proc = run_vshx("commit", shut_lab.name, "vda", "--base", "sn1", "--top", "sn3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sn2 = shut_lab.layer("sn2")  # merged away, not deleted: a stale snapshot still names it
    subprocess.run(["qemu-img", "snapshot", "-c", "keep", str(sn2)], check=True)
    before = file_state(shut_lab.dir)
    proc = run_vshx("snapshot-cleanup", shut_lab.name, "--delete-files")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(sn2) in proc.stderr and "keep" in proc.stderr
    assert file_state(shut_lab.dir) == before
