"""A disk file whose name holds a line break: libvirt writes it raw into its XML, where any XML
parser reads it back as a space.  vshx must not take the space-named file (a decoy, or nothing)
for the disk: it refuses, and changes nothing (found by an outside attacker, who made such a
file with `virsh snapshot-create-as --name "q'uote<newline>nl" --disk-only`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import destroy_lab, file_state, make_lab, run_vshx, virsh

# serial: while such a domain exists every other merge on the host refuses (its usage scan
# cannot tell which file that disk reads), so it must not exist beside the parallel tests
pytestmark = [pytest.mark.libvirt, pytest.mark.serial]


def test_a_decoy_named_with_a_space_is_never_taken_for_the_disk(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, running=False, layers=2)
    try:
        made = virsh(
            "snapshot-create-as", lab.name, "--name", "q'uote\nnl", "--disk-only", "--atomic"
        )
        assert made.returncode == 0, made.stderr
        assert (lab.dir / "sn2.q'uote\nnl").is_file()  # libvirt's new overlay, its active layer
        decoy = lab.dir / "sn2.q'uote nl"  # what a parser reads: the attacker's file
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
            + ["-b", str(lab.dir / "sn2.qcow2"), str(decoy)],
            check=True,
        )
        before = file_state(lab.dir)
        defined = virsh("dumpxml", "--inactive", lab.name).stdout
        for argv in (
            ["flatten", lab.name, "vda"],
            ["flatten", lab.name, "vda", "--dry-run"],
            ["commit", lab.name, "vda", "--base", "base"],
            ["chain", lab.name],
        ):
            proc = run_vshx(*argv)
            assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
            assert "line break or tab" in proc.stderr and "Traceback" not in proc.stderr
            assert "hint: rename the file" in proc.stderr
        assert file_state(lab.dir) == before  # the decoy and every layer untouched
        assert virsh("dumpxml", "--inactive", lab.name).stdout == defined
        # another domain's merge cannot tell whether that disk reads its files: it refuses too,
        # naming the domain to mend
        other = make_lab(tmp_path, running=False, layers=2, dirname="other")
        try:
            proc = run_vshx("flatten", other.name, "vda")
            assert proc.returncode == 1 and f"domain {lab.name} names a file" in proc.stderr
        finally:
            destroy_lab(other)
    finally:
        destroy_lab(lab)
