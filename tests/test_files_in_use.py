"""A file is a user's if anything reaches it: vshx keeps a memory file or a lab file that
another domain, snapshot or saved state still names, and says which and why.

Domains are built as users build them (virsh snapshot-create-as with guest writes between,
a memory snapshot with --memspec, a snapshot re-defined with virsh snapshot-create --redefine,
a disk attached with virsh attach-disk).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import URI, destroy_lab, make_lab, qemu_check, run_vshx, virsh
from tests.test_snapshot_delete import (
    build,
    check_after,
    destroy,
    memory_snapshot,
    tree,
)

pytestmark = pytest.mark.libvirt


def name_in_a_snapshot(domain: str, snapshot: str, new: str, memory: Path) -> None:
    """Re-define a copy of ``snapshot`` of ``domain`` as ``new`` whose memory state is the
    file ``memory`` (virsh snapshot-dumpxml, edited, virsh snapshot-create --redefine)."""
    xml = virsh("snapshot-dumpxml", domain, snapshot).stdout
    xml = xml.replace(f"<name>{snapshot}</name>", f"<name>{new}</name>", 1)
    xml = re.sub(r"<parent>.*?</parent>", "", xml, count=1, flags=re.S)
    xml = xml.replace("<state>disk-snapshot</state>", "<state>running</state>", 1)
    xml = xml.replace(
        "<memory snapshot='no'/>", f"<memory snapshot='external' file='{memory}'/>", 1
    )
    virsh("snapshot-create", domain, "/dev/stdin", "--redefine", stdin=xml)


def test_memory_file_another_domains_snapshot_names_is_kept(tmp_path: Path) -> None:
    """Deleting a memory snapshot keeps its memory file when another domain's snapshot names
    it: the plan says so (no rm line), the file stays, everything else is deleted."""
    dom = build(tmp_path, 1, True, "memkeep")
    other = build(tmp_path, 1, False, "memother")
    try:
        memory = memory_snapshot(dom, tmp_path)
        virsh("destroy", dom.name)
        dom.running = False
        name_in_a_snapshot(other.name, "s1", "mx", memory)
        saved = memory.read_bytes()
        dry = run_vshx("snapshot-delete", dom.name, "m4", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"keeping snapshot m4's memory state {memory}" in dry.stdout
        assert f"domain {other.name} snapshot mx (memory state)" in dry.stdout
        assert not [
            line for line in dry.stdout.splitlines() if "m4.mem" in line and "rm" in line.split()
        ]
        proc = run_vshx("snapshot-delete", dom.name, "m4")
        assert proc.returncode == 0, proc.stderr
        assert memory.read_bytes() == saved
        assert set(tree(dom.name)) == {"s1", "s2", "s3"}
        check_after(dom, tmp_path)
        # once nothing names it, a memory snapshot's file goes with it (as before)
        virsh("snapshot-delete", other.name, "mx", "--metadata")
        assert set(tree(other.name)) == {"s1", "s2", "s3"}
    finally:
        destroy(dom)
        destroy(other)


def test_lab_destroy_keeps_files_another_domain_uses(tmp_path: Path) -> None:
    """lab-destroy of a lab whose sn1.qcow2 another domain has as its disk vdc: sn1 and the
    base under it stay (said, with the user), the rest and the domain go; once the disk is
    detached, lab-destroy again removes what was kept."""
    lab = make_lab(tmp_path, running=False, layers=3, dirname="first")
    second = make_lab(tmp_path, running=False, layers=1, dirname="second")
    try:
        shared = lab.layer("sn1")
        virsh(
            "attach-disk", second.name, str(shared), "vdc",
            "--driver", "qemu", "--subdriver", "qcow2", "--config",
        )  # fmt: skip
        kept = {"sn1.qcow2", "base.qcow2"}  # vdc's whole chain
        proc = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
        assert proc.returncode == 0, proc.stderr
        assert f"keeping {shared}: still used by domain {second.name} disk vdc" in proc.stderr
        # the way back, with --dir: the domain is gone then (nu12 #6)
        assert f"run vshx lab-destroy {lab.name} --dir {lab.dir} once" in proc.stderr
        left = {p.name for p in lab.dir.iterdir() if not p.name.startswith(".")}
        assert left == kept, left
        assert (lab.dir / ".vshx-lab").exists()  # the marker stays for the rest
        assert (
            subprocess.run(
                ["virsh", "-c", URI, "domstate", lab.name], capture_output=True
            ).returncode
            != 0
        )
        for name in kept:
            qemu_check(lab.dir / name)
        # that command run while the files are still used: one answer, no circular advice
        early = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
        assert early.returncode == 1, early.stderr
        assert "is still used" in early.stderr and "no lab files" not in early.stderr
        assert "once nothing else uses" not in early.stderr, early.stderr
        assert {p.name for p in lab.dir.iterdir() if not p.name.startswith(".")} == kept
        virsh("start", second.name)
        virsh("destroy", second.name)
        virsh("detach-disk", second.name, "vdc", "--config")
        again = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
        assert again.returncode == 0, again.stderr
        assert not lab.dir.exists()
    finally:
        destroy_lab(second)
        destroy_lab(lab)


def test_a_qed_overlay_is_a_user_too(tmp_path: Path) -> None:
    """The usage scan reads qcow2 headers itself and asks qemu-img for the files a QED or VMDK
    image names: a QED overlay on the base refuses a commit into it and a pasted rm of it (an
    outside attack: a QED overlay was not seen, its data changed; VMDK backs only on VMDK)."""
    base, mid = tmp_path / "base.qcow2", tmp_path / "mid.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    for fmt, name in (("qcow2", mid), ("qed", tmp_path / "ov.qed")):
        argv = ["qemu-img", "create", "-q", "-f", fmt, "-b", str(base), "-F", "qcow2", str(name)]
        subprocess.run(argv, check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 64k", str(mid)], check=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = run_vshx("commit", str(mid))
    assert proc.returncode == 1 and f"image {tmp_path / 'ov.qed'}" in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "mid.qcow2").unlink()  # only the QED overlay uses the base now
    pasted = run_vshx("-f", "-", stdin=f"rm -f -- {base}\n")
    assert pasted.returncode == 1 and "ov.qed" in pasted.stderr and base.exists(), pasted.stderr
