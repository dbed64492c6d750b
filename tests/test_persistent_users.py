"""A running domain boots next time on what its persistent definition names: those files are in
use too, for every merge and every deletion (found by a hostile tester)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import destroy_lab, file_state, make_lab, run_vshx, virsh


def test_a_disk_only_in_a_running_domains_persistent_definition_is_a_user(tmp_path: Path):
    lab = make_lab(tmp_path, dirname="lab")
    other = make_lab(tmp_path, dirname="other")
    try:
        attached = virsh(
            "attach-disk",
            other.name,
            str(lab.layer("sn1")),
            "vdf",
            "--subdriver",
            "qcow2",
            "--config",
        )
        assert attached.returncode == 0, attached.stderr
        before = file_state(lab.dir)
        refused = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        assert refused.returncode == 1, refused.stderr
        assert f"domain {other.name} disk vdf in its persistent definition" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert file_state(lab.dir) == before
        # the dry run says the same: a printed script never goes where vshx would not
        dry = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
        assert dry.returncode == 1 and "in its persistent definition" in dry.stderr
    finally:
        destroy_lab(other)
        destroy_lab(lab)


def test_a_running_domains_own_persistent_source_is_kept(tmp_path: Path):
    lab = make_lab(tmp_path)
    try:
        # the persistent definition boots from sn2 (an admin's edit); the live disk runs sn4;
        # the edit names sn2 alone, as an admin writes it (libvirt's <backingStore> pinned
        # sn4's chain there after the live snapshots: the admin drops it, libvirt probes sn2)
        xml = virsh("dumpxml", lab.name, "--inactive").stdout
        xml = re.sub(r"<backingStore.*</backingStore>\s*", "", xml, flags=re.S)
        edited = subprocess.run(
            ["sed", "-e", f"s|{lab.layer('sn4')}|{lab.layer('sn2')}|"],
            input=xml,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        defined = virsh("define", "/dev/stdin", stdin=edited)
        assert defined.returncode == 0, defined.stderr
        before = file_state(lab.dir)
        dry = run_vshx(
            "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete", "--dry-run"
        )
        # committing into sn1 changes what the persistent definition (sn2 on sn1) shows
        assert dry.returncode == 1, dry.stdout + dry.stderr
        assert f"domain {lab.name} disk vda in its persistent definition" in dry.stderr
        pasted = run_vshx("-f", "-", stdin=f"rm -f -- {lab.layer('sn2')}\n")
        assert pasted.returncode == 1 and "still used by" in pasted.stderr, pasted.stderr
        assert file_state(lab.dir) == before
    finally:
        destroy_lab(lab)


def test_a_scan_directory_that_does_not_exist_is_refused(tmp_path: Path):
    lab = make_lab(tmp_path, running=False)
    try:
        before = file_state(lab.dir)
        typo = tmp_path / "no-such-dir"
        proc = run_vshx(
            "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--scan", str(typo)
        )
        assert proc.returncode == 1, proc.stderr
        assert f"error: --scan {typo}: no such directory" in proc.stderr
        assert file_state(lab.dir) == before
    finally:
        destroy_lab(lab)
