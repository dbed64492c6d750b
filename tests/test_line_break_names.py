"""A disk file whose name holds a line break: libvirt writes it raw into its XML, where any XML
parser reads it back as a space.  vshx must not take the space-named file (a decoy, or nothing)
for the disk: it refuses, and changes nothing (found by an outside attacker, who made such a
file with `virsh snapshot-create-as --name "q'uote<newline>nl" --disk-only`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    define_domain,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    make_overlay,
    qemu_check,
    run_vshx,
    virsh,
)

# not serial: another domain's usage scan reads such a domain with both names its disk may
# mean (chain.Blurred "both") and refuses only merges that change one of their files, all under
# the test's own tmp_path (`vshx jobs` lists a running one's jobs by its disks' targets alone)
pytestmark = [pytest.mark.libvirt]

BLURRED = "sn2.nl\nEOF"  # the overlay libvirt makes for snapshot "nl<LF>EOF" of a 2-layer lab
SPACED = "sn2.nl EOF"  # what an XML parser reads that name as


def blurred_lab(tmp_path: Path) -> Lab:
    """A shut-off lab whose disk-only snapshot named with a line break left libvirt's new
    overlay, with that line break in its file name, as the disk's active layer."""
    lab = make_lab(tmp_path, running=False, layers=2, dirname="blurred")
    made = virsh("snapshot-create-as", lab.name, "--name", "nl\nEOF", "--disk-only", "--atomic")
    assert made.returncode == 0, made.stderr
    assert (lab.dir / BLURRED).is_file()
    return lab


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
        # another domain's merge goes ahead: that disk reads neither of its files
        other = make_lab(tmp_path, running=False, layers=2, dirname="other")
        try:
            view = other.guest_hash(tmp_path)
            proc = run_vshx("flatten", other.name, "vda")
            assert proc.returncode == 0, proc.stderr
            assert other.guest_hash(tmp_path) == view
        finally:
            destroy_lab(other)
    finally:
        destroy_lab(lab)


def test_a_blurred_domain_does_not_stop_merges_on_other_chains(tmp_path: Path) -> None:
    """An outside attacker's finding: one domain whose disk names a file with a line break
    made every changing command on every other domain refuse (also --dry-run, also --force).
    Now the usage scan counts both files that disk may mean as in use, and an unrelated merge
    runs, with the guest's data kept; the blurred domain's own merges still refuse."""
    lab = blurred_lab(tmp_path)
    try:
        other = make_lab(tmp_path, running=False, layers=2, dirname="other")
        try:
            view = other.guest_hash(tmp_path)
            merge = ["commit", other.name, "vda", "--top", "sn1.qcow2", "--base", "base.qcow2"]
            for argv in (
                merge + ["--dry-run"],
                ["snapshot-delete", other.name, "sn2", "--dry-run"],
            ):
                proc = run_vshx(*argv)
                assert proc.returncode == 0, (argv, proc.stderr)
                assert "line break" not in proc.stderr
            proc = run_vshx(*merge)
            assert proc.returncode == 0, proc.stderr
            assert chain_files(other.active) == ["sn2.qcow2", "base.qcow2"]
            assert other.guest_hash(tmp_path) == view
            qemu_check(other.active)
        finally:
            destroy_lab(other)
        # a bare image's merge (its saved-RAM check reads every domain's snapshots) too
        bare = tmp_path / "bare"
        bare.mkdir()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(bare / "b.qcow2"), "16M"], check=True
        )
        subprocess.run(["qemu-io", "-c", "write -P 1 0 1M", str(bare / "b.qcow2")], check=True)
        make_overlay(bare / "m.qcow2", str(bare / "b.qcow2"))
        subprocess.run(["qemu-io", "-c", "write -P 2 512k 1M", str(bare / "m.qcow2")], check=True)
        make_overlay(bare / "t.qcow2", str(bare / "m.qcow2"))
        view = guest_hash(bare / "t.qcow2", tmp_path)
        for extra in (["--dry-run"], []):
            proc = run_vshx("commit", str(bare / "t.qcow2"), "--top", "m.qcow2", *extra)
            assert proc.returncode == 0, (extra, proc.stderr)
        assert chain_files(bare / "t.qcow2") == ["t.qcow2", "b.qcow2"]
        assert guest_hash(bare / "t.qcow2", tmp_path) == view
        qemu_check(bare / "t.qcow2")
        # the blurred domain's own merges refuse as before, changing nothing
        before = file_state(lab.dir)
        for argv in (
            ["commit", lab.name, "vda", "--top", "sn1.qcow2", "--base", "base.qcow2"],
            ["commit", lab.name, "vda", "--top", "sn1.qcow2", "--base", "base.qcow2", "--dry-run"],
        ):
            proc = run_vshx(*argv)
            assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
            assert f"domain {lab.name} names a file with a line break or tab" in proc.stderr
        assert file_state(lab.dir) == before
    finally:
        destroy_lab(lab)


def test_a_file_the_blurred_domain_may_mean_is_still_in_use(tmp_path: Path) -> None:
    """Both files the blurred disk may name count as used by that domain, each with its chain:
    the exact name (what QEMU opened; here the backing of it is another domain's layer) and the
    name with a space (what libvirt opens once it reads its XML again; here a bare chain's
    layer).  A merge that writes into either is refused, naming the blurred domain's disk."""
    lab = blurred_lab(tmp_path)
    other = f"{lab.name}-other"
    try:
        # another domain whose chain runs through sn2.qcow2, the exact name's backing file
        mine = tmp_path / "other"
        mine.mkdir()
        make_overlay(mine / "mid.qcow2", str(lab.dir / "sn2.qcow2"))
        make_overlay(mine / "top.qcow2", str(mine / "mid.qcow2"))
        define_domain(other, {"vda": mine / "top.qcow2"})
        # a bare chain on the file the parsed name means
        spaced = lab.dir / SPACED
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(spaced), "16M"], check=True)
        make_overlay(tmp_path / "d-mid.qcow2", str(spaced))
        make_overlay(tmp_path / "d-top.qcow2", str(tmp_path / "d-mid.qcow2"))
        before = file_state(lab.dir), file_state(mine)
        for argv, named in (
            (["commit", other, "vda", "--top", "mid.qcow2", "--base", "sn2.qcow2"], BLURRED),
            (["commit", str(tmp_path / "d-top.qcow2"), "--top", "d-mid.qcow2"], SPACED),
        ):
            for extra in (["--dry-run"], []):
                proc = run_vshx(*argv, *extra)
                assert proc.returncode == 1, (argv, extra, proc.stdout, proc.stderr)
                assert "would change what these see" in proc.stderr, proc.stderr
                shown = named.replace("\n", "\\n")  # as printed: escaped
                assert f"domain {lab.name} disk vda ({lab.dir / shown})" in proc.stderr
                assert "line break" not in proc.stderr and "Traceback" not in proc.stderr
        assert (file_state(lab.dir), file_state(mine)) == before
    finally:
        virsh("undefine", other)
        destroy_lab(lab)


def test_jobs_lists_the_host_while_a_running_domain_is_blurred(tmp_path: Path) -> None:
    """`vshx jobs` reads every running domain's disks: a running domain whose active layer's
    name holds a line break made it refuse for the whole host (it needs the targets only)."""
    lab = make_lab(tmp_path, running=True, layers=2, dirname="blurred-running")
    try:
        made = virsh("snapshot-create-as", lab.name, "--name", "nl\nEOF", "--disk-only")
        assert made.returncode == 0, made.stderr
        jobs = run_vshx("jobs")
        assert jobs.returncode == 0, jobs.stderr
        assert "line break" not in jobs.stderr and "Traceback" not in jobs.stderr
        own = run_vshx("commit", lab.name, "vda", "--top", "sn1.qcow2", "--base", "base.qcow2")
        assert own.returncode == 1 and "line break or tab" in own.stderr, own.stderr
    finally:
        destroy_lab(lab)
