"""Every bare-image form that changes a file of a shut-off domain's disk chain is that domain's
own command, or is refused before anything changes with the domain form in its hint.

An outside tester found that after ``commit IMAGE`` learnt to be the domain's commit
(test_bare_image_moments.py), the other bare forms still went round the domain's protections:
``shorten IMAGE``, ``flatten IMAGE --route commit`` and a pasted ``qemu-img commit -b BASE TOP``
wrote into the file a memory snapshot's RAM goes with (its moment gone); ``pull``, ``flatten`` and
``shorten`` took a shut-off domain's active disk as a bare image, and a bare ``rebase`` of a
middle layer left the persistent definition (its pinned ``<backingStore>``) naming the old chain,
so every later merge on that disk was refused.  Labs come from lab-create (libvirt snapshots
taken while the guest writes through QEMU), shut off with ``virsh destroy``.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    define_domain,
    destroy_lab,
    file_state,
    flush_guest,
    guest_hash,
    make_lab,
    qemu_check,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt

NOTE = "of shut-off domain"  # the plan's note that a bare image's command is the domain's


def guest_write(domain: str, disk: int, pattern: int, offset_mib: int) -> None:
    device = f"virtio-disk{disk}/virtio-backend"
    command = f'qemu-io -d {device} "write -P {pattern:#x} {offset_mib}M 1M"'
    virsh("qemu-monitor-command", domain, "--hmp", command)


def images(lab: Lab) -> dict[str, bytes]:
    """Every image and saved RAM file's bytes (lock files beside them are not the point)."""
    return {k: v for k, v in file_state(lab.dir).items() if k.endswith((".qcow2", ".mem"))}


def inactive_chain(domain: str, disk: str = "vda") -> list[str]:
    """The files the persistent definition of ``disk`` names, active first (<backingStore>)."""
    root = ET.fromstring(virsh("dumpxml", "--inactive", domain).stdout)
    for node in root.findall("./devices/disk"):
        target = node.find("target")
        if target is None or target.get("dev") != disk:
            continue
        found: list[str] = []
        while node is not None and node.find("source") is not None:
            found.append(os.path.basename(node.find("source").get("file") or ""))  # type: ignore[union-attr]
            node = node.find("backingStore")  # type: ignore[assignment]
        return found
    raise AssertionError(f"no {disk}")


@pytest.fixture
def memory_lab(tmp_path: Path) -> Iterator[Lab]:
    """The tester's domain: two disks; a snapshot m1 with memory state (external), taken on
    sn1.qcow2 / vdb-sn1.qcow2 with overlays a1, b1; a disk-only s2 (a2, b2); guest writes
    between; then shut off with virsh destroy.  vda: base <- sn1 <- a1 <- a2 (active)."""
    lab = make_lab(tmp_path, running=True, layers=1, disks=2)
    try:
        for disk in (0, 1):
            guest_write(lab.name, disk, 0x51, 3)
        virsh(
            "snapshot-create-as", lab.name, "m1",
            "--memspec", f"file={lab.dir / 'm1.mem'},snapshot=external",
            "--diskspec", f"vda,file={lab.dir / 'a1.qcow2'}",
            "--diskspec", f"vdb,file={lab.dir / 'b1.qcow2'}",
        )  # fmt: skip
        for disk in (0, 1):
            guest_write(lab.name, disk, 0x52, 4)
        virsh(
            "snapshot-create-as", lab.name, "s2", "--disk-only", "--atomic",
            "--diskspec", f"vda,file={lab.dir / 'a2.qcow2'}",
            "--diskspec", f"vdb,file={lab.dir / 'b2.qcow2'}",
        )  # fmt: skip
        for disk in (0, 1):
            guest_write(lab.name, disk, 0x53, 5)
        flush_guest(lab.name)
        flush_guest(lab.name, "vdb")
        virsh("destroy", lab.name)
        lab.running = False
        yield lab
    finally:
        destroy_lab(lab)


def test_a_memory_moment_on_a_branch_is_refused_even_with_force(memory_lab: Lab, tmp_path: Path):
    """The disk moved off m1's chain (as a revert to an earlier point leaves it): sn1, m1's
    moment, and a1 above it are a branch no domain's disk reads; a bare commit of a1 into
    sn1 is no domain's command, and --force (which passes a snapshot's disk-only moment) must
    not pass saved RAM."""
    lab = memory_lab
    d = lab.dir
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", "new.qcow2"],
        cwd=d,
        check=True,
    )
    root = ET.fromstring(virsh("dumpxml", "--inactive", lab.name).stdout)
    for disk in root.findall("./devices/disk"):
        if disk.find("target").get("dev") == "vda":  # type: ignore[union-attr]
            disk.find("source").set("file", str(d / "new.qcow2"))  # type: ignore[union-attr]
            for below in disk.findall("backingStore"):
                disk.remove(below)
    virsh("define", "/dev/stdin", stdin=ET.tostring(root, encoding="unicode"))
    assert inactive_chain(lab.name)[0] == "new.qcow2"
    before, m1_view = images(lab), guest_hash(d / "sn1.qcow2", tmp_path)
    a1 = str(d / "a1.qcow2")
    for words in (["commit", a1, "--force"], ["commit", a1], ["qemu-img", "commit", a1]):
        proc = run_vshx(*words)
        said = (words, proc.stdout, proc.stderr)
        assert proc.returncode == 1 and "error: " in proc.stderr, said
        if words != ["commit", a1]:  # that one is refused first as sn1's users' (forceable)
            assert "error: snapshot m1 of" in proc.stderr and "memory state" in proc.stderr, said
        assert "Traceback" not in proc.stderr and images(lab) == before, said
    assert guest_hash(d / "sn1.qcow2", tmp_path) == m1_view


def test_no_bare_form_writes_under_a_memory_snapshots_moment(memory_lab: Lab, tmp_path: Path):
    lab = memory_lab
    d = lab.dir
    assert chain_files(lab.active) == ["a2.qcow2", "a1.qcow2", "sn1.qcow2", "base.qcow2"]
    before, view = images(lab), lab.guest_hash(tmp_path)
    m1_view = guest_hash(d / "sn1.qcow2", tmp_path)
    a2, a1, sn1, base = (str(d / f"{n}.qcow2") for n in ("a2", "a1", "sn1", "base"))
    forms = [
        ["commit", lab.name, "vda", "--top", "a1.qcow2", "--base", "sn1.qcow2"],  # the domain's
        ["commit", a2, "--base", base],
        ["shorten", a2, "--drop", "a1.qcow2", "--route", "commit"],  # a1 down into sn1
        ["shorten", a2, "--drop", "sn1.qcow2"],
        ["flatten", a2, "--route", "commit"],
        ["qemu-img", "commit", "-b", base, a2],  # pasted: base, below sn1, shows a2's view
        ["qemu-img", "commit", "-b", sn1, a2],
        ["qemu-img", "commit", a1],  # into a1's backing file, sn1
        ["qemu-img", "commit", "-f", "qcow2", "-b", "base.qcow2", "a2.qcow2"],  # after a cd
    ]
    for words in forms:
        for dry in ([], ["--dry-run"]):
            if words[2:3] == ["-f"]:  # the pasted line after a cd, in a batch
                proc = run_vshx(*dry, "-f", "-", stdin=f"cd {d}\n{' '.join(words)}\n")
            else:
                proc = run_vshx(*dry, *words)
            said = (words, dry, proc.stdout, proc.stderr)
            assert proc.returncode == 1, said
            assert "error: snapshot m1 of" in proc.stderr and "memory state" in proc.stderr, said
            assert f"hint: delete that snapshot first (virsh snapshot-delete {lab.name} m1" in (
                proc.stderr
            ), said
            assert "Traceback" not in proc.stderr and images(lab) == before, said
    assert guest_hash(d / "sn1.qcow2", tmp_path) == m1_view
    # a route that leaves m1's moment as it is stays open: dropping a1 by the pull route (a1
    # up into a2) writes no file below a1; the commit route is shown unsafe, not taken
    proc = run_vshx("--dry-run", "shorten", a2, "--drop", "a1.qcow2")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("# *", "#  "))]
    assert any("* pull" in row and "safe" in row for row in rows), proc.stdout
    assert any("commit" in row and "memory state" in row for row in rows), proc.stdout
    assert images(lab) == before
    # a layer of two domains' chains stays a bare commit (whose snapshots would it account
    # for?), but still may not write under m1's moment
    other = f"{lab.name}-other"
    define_domain(other, {"vda": a2})
    try:
        proc = run_vshx("commit", a1)
        assert proc.returncode == 1 and "error: snapshot m1 of" in proc.stderr, proc.stderr
        assert "hint: delete that snapshot first" in proc.stderr and images(lab) == before
    finally:
        virsh("undefine", other)
    # what leaves m1's moment as it is still runs, as the domain's own command: a pull takes
    # a1 and sn1 out of the chain unwritten, and the definition follows the new chain
    proc = run_vshx("pull", a2, "--base", "base.qcow2")
    assert proc.returncode == 0, proc.stderr
    assert chain_files(lab.active) == ["a2.qcow2", "base.qcow2"]
    assert inactive_chain(lab.name) == ["a2.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == view
    assert guest_hash(d / "sn1.qcow2", tmp_path) == m1_view
    listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    m1 = next(snap for snap in listed if snap["name"] == "m1")
    assert m1["disks"]["vda"]["moment"] == "intact", m1


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(tmp_path, running=False)
    try:
        yield lab
    finally:
        destroy_lab(lab)


def test_bare_forms_of_a_shut_off_domains_layers_keep_its_definition(
    offline: Lab, tmp_path: Path
) -> None:
    """Each bare form is the domain's own command: afterwards the persistent definition names
    exactly the chain the headers form, so the next merge on the disk is planned, not refused
    ("definition disagrees"); the guest sees the same bytes, and no moment is unknown."""
    lab = offline
    view = lab.guest_hash(tmp_path)
    sn3, sn4 = str(lab.layer("sn3")), str(lab.layer("sn4"))
    steps = [
        (["rebase", sn3, "--backing", str(lab.layer("sn1"))], ["sn4", "sn3", "sn1", "base"]),
        (["shorten", sn4, "--drop", "sn3"], ["sn4", "sn1", "base"]),
        (["pull", sn4, "--base", "base"], ["sn4", "base"]),
        (["flatten", sn4], ["sn4"]),
    ]
    for words, chain in steps:
        plan = run_vshx(*words, "--dry-run")
        assert plan.returncode == 0 and NOTE in plan.stdout, (words, plan.stdout, plan.stderr)
        assert "update-device" in plan.stdout, (words, plan.stdout)
        proc = run_vshx(*words)
        assert proc.returncode == 0, (words, proc.stderr)
        assert "now goes through the new backing" not in proc.stderr, proc.stderr
        files = [f"{name}.qcow2" for name in chain]
        assert chain_files(lab.active) == files, words
        assert inactive_chain(lab.name) == files, words  # the definition follows
        assert lab.guest_hash(tmp_path) == view, words
        for name in files:
            qemu_check(lab.dir / name)
        listed = run_vshx("chain", lab.name, "vda")  # refused when the definition disagrees
        assert listed.returncode == 0, (words, listed.stderr)
    states = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    assert not [s["name"] for s in states if s["disks"]["vda"]["moment"] == "unknown"], states


def test_a_middle_layer_pulled_or_flattened_bare_is_refused_with_the_domain_form(
    offline: Lab,
) -> None:
    """pull and flatten of a middle layer have no ``pull/flatten DOMAIN DISK`` equivalent (those
    write the active layer): refused, naming the domain's rebase that does the same."""
    lab = offline
    before = images(lab)
    sn3 = str(lab.layer("sn3"))
    for words, backing in (
        (["pull", sn3, "--base", "sn1"], "--backing sn1"),
        (["flatten", sn3], "--backing ''"),
    ):
        proc = run_vshx(*words)
        assert proc.returncode == 1, (words, proc.stdout, proc.stderr)
        assert f"is a layer of the disk chain of domain {lab.name} vda" in proc.stderr
        form = f"hint: name the domain and disk instead: vshx rebase --domain {lab.name} --disk"
        assert form in proc.stderr and f"--top sn3.qcow2 {backing}" in proc.stderr, proc.stderr
        assert images(lab) == before
    # the form it names does it, and the definition follows
    proc = run_vshx("rebase", "--domain", lab.name, "--disk", "vda", "--top", "sn3.qcow2",
                    "--backing", "sn1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert inactive_chain(lab.name) == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]


def test_a_layer_of_two_domains_is_refused_by_every_changing_bare_form(offline: Lab) -> None:
    """Whose definition and snapshots would it follow?  vshx cannot tell, so nothing runs (the
    bare rebase used to, warning that both chains "now go through the new backing", which the
    definitions contradicted)."""
    lab = offline
    other = f"{lab.name}-other"
    define_domain(other, {"vda": lab.layer("sn4")})
    try:
        before = images(lab)
        sn3, sn4 = str(lab.layer("sn3")), str(lab.layer("sn4"))
        for words in (
            ["rebase", sn3, "--backing", "sn1"],
            ["shorten", sn4, "--drop", "sn2"],
            ["pull", sn4, "--base", "sn1"],
            ["flatten", sn4],
        ):
            proc = run_vshx(*words)
            assert proc.returncode == 1, (words, proc.stdout, proc.stderr)
            assert f"domain {lab.name} vda, domain {other} vda" in proc.stderr, proc.stderr
            assert "hint: name the domain and disk instead" in proc.stderr, proc.stderr
            assert images(lab) == before, words
    finally:
        virsh("undefine", other)
