"""Names that look like virsh options: a printed script must not let virsh misread them.

A snapshot named ``--current`` or a domain named ``-...`` sits in a positional slot of the
virsh lines vshx prints; virsh would read it as an option (``--current`` as the current
snapshot).  vshx prints such names in virsh's named form (``--snapshotname --current``), so
the script piped to ``sh -e``, and pasted back into ``vshx -f -``, does what vshx itself does.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    qemu_check,
    qemu_img_chain,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI, qemu-img


def snapshots(domain: str) -> tuple[list[str], str]:
    """The domain's snapshot names and its current snapshot."""
    names = virsh("snapshot-list", "--domain", domain, "--name").stdout.split()
    current = virsh("snapshot-current", "--domain", domain, "--name").stdout.strip()
    return sorted(names), current


def name_a_snapshot_current(lab: Lab) -> None:
    """Merge sn2 away, give its snapshot the name ``--current`` (as --redefine can), make sn4
    the current snapshot."""
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
    assert proc.returncode == 0, proc.stderr
    xml = virsh("snapshot-dumpxml", lab.name, "sn2").stdout
    virsh("snapshot-delete", lab.name, "sn2", "--metadata")
    xml = xml.replace("<name>sn2</name>", "<name>--current</name>", 1)
    virsh("snapshot-create", lab.name, "--xmlfile", "/dev/stdin", "--redefine", stdin=xml)
    virsh("snapshot-current", "--domain", lab.name, "--snapshotname", "sn4")  # set current
    assert snapshots(lab.name) == (["--current", "sn1", "sn3", "sn4"], "sn4")


def test_a_stale_snapshot_named_current(tmp_path: Path):
    """snapshot-cleanup's script removes the stale `--current`, not the current snapshot's
    metadata; sh and vshx -f - both run it."""
    piped = make_lab(tmp_path, running=False, dirname="piped")
    pasted = make_lab(tmp_path, running=False, dirname="pasted")
    try:
        for lab in (piped, pasted):
            name_a_snapshot_current(lab)
        untouched = file_state(piped.dir)
        plan = run_vshx("snapshot-cleanup", piped.name, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "--snapshotname --current --metadata" in plan.stdout, plan.stdout
        assert file_state(piped.dir) == untouched
        subprocess.run(["sh", "-e"], input=plan.stdout, text=True, check=True, capture_output=True)
        assert snapshots(piped.name) == (["sn1", "sn4"], "sn4")

        script = run_vshx("snapshot-cleanup", pasted.name, "--dry-run").stdout
        proc = run_vshx("-f", "-", stdin=script)
        assert proc.returncode == 0, proc.stderr
        assert snapshots(pasted.name) == (["sn1", "sn4"], "sn4")
    finally:
        destroy_lab(piped)
        destroy_lab(pasted)


def dash_named(lab: Lab) -> str:
    """The lab's domain defined again as ``-NAME`` (snapshot metadata dropped: libvirt renames
    no domain that has snapshots)."""
    xml = virsh("dumpxml", lab.name, "--inactive").stdout
    virsh("undefine", lab.name, "--snapshots-metadata")
    name = f"-{lab.name}"
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml, count=1)
    virsh("define", "/dev/stdin", stdin=xml)
    return name


def source(domain: str) -> str:
    out = virsh("domblklist", "--domain", domain, "--inactive").stdout
    rows = [line.split(None, 1) for line in out.splitlines()]
    return next(row[1].strip() for row in rows if row and row[0] == "vda")


def test_an_offline_active_commit_of_a_domain_named_with_a_dash(tmp_path: Path):
    real = make_lab(tmp_path, running=False, dirname="real")
    scripted = make_lab(tmp_path, running=False, dirname="scripted")
    names = []
    try:
        names = [dash_named(real), dash_named(scripted)]
        before = guest_hash(source(names[1]), tmp_path)
        args = ("commit", "vda", "--active", "--pivot")
        proc = run_vshx(args[0], names[0], *args[1:])
        assert proc.returncode == 0, proc.stderr
        plan = run_vshx(args[0], names[1], *args[1:], "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert f"update-device --domain {names[1]} " in plan.stdout, plan.stdout
        subprocess.run(["sh", "-e"], input=plan.stdout, text=True, check=True, capture_output=True)
        for name, lab in zip(names, (real, scripted), strict=True):
            assert source(name) == str(lab.layer("base"))
            assert [Path(i["filename"]).name for i in qemu_img_chain(source(name))] == [
                "base.qcow2"
            ]
            assert guest_hash(source(name), tmp_path) == before
            qemu_check(source(name))
        proc = subprocess.run(
            ["virsh", "-c", URI, "start", "--domain", names[1]], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        virsh("destroy", "--domain", names[1])
    finally:
        for name in names:
            subprocess.run(
                ["virsh", "-c", URI, "destroy", "--domain", name], capture_output=True, check=False
            )
            subprocess.run(
                ["virsh", "-c", URI, "undefine", "--domain", name], capture_output=True, check=False
            )
        destroy_lab(real)
        destroy_lab(scripted)
