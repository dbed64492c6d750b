"""The domain's own definition and its saved state, on the real daemon (issue 23, items 1-2).

The labs are built the way users build them: a running domain, guest writes through QEMU and
``virsh snapshot-create-as --disk-only`` between them, then shut off; libvirt then keeps a
``<backingStore>`` chain in the persistent definition and starts the domain on it, not on the
qcow2 headers.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    flush_guest,
    guest_hash,
    make_lab,
    qemu_check,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU

SNAPSHOTS = ["sn2", "sn3", "sn4"]  # taken live on top of lab-create's base <- sn1


def guest_write(domain: str, pattern: int, offset_mib: int) -> None:
    command = f'qemu-io -d virtio-disk0/virtio-backend "write -P {pattern:#x} {offset_mib}M 1M"'
    virsh("qemu-monitor-command", domain, "--hmp", command)


def snapshot_lab(tmp_path: Path, dirname: str = "lab", shut_off: bool = True) -> Lab:
    """base <- sn1 <- sn2 <- sn3 <- sn4 (active), sn2..sn4 taken by libvirt while it ran."""
    lab = make_lab(tmp_path, running=True, layers=1, dirname=dirname)
    for number, name in enumerate(SNAPSHOTS, 2):
        guest_write(lab.name, 0x20 + number, number)
        guest_write(lab.name, 0x30 + number, 0)  # one region every layer overwrites
        virsh(
            "snapshot-create-as",
            lab.name,
            name,
            "--disk-only",
            "--atomic",
            "--diskspec",
            f"vda,snapshot=external,file={lab.layer(name)}",
        )
    guest_write(lab.name, 0x77, 7)
    if shut_off:
        flush_guest(lab.name)
        virsh("destroy", lab.name)
        lab.running = False
    return lab


def inactive_chain(domain: str) -> list[str]:
    """The files the persistent definition of vda names, active first (its <backingStore>)."""
    root = ET.fromstring(virsh("dumpxml", "--inactive", domain).stdout)
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") != "vda":
            continue
        files, node = [], disk
        while node is not None and node.find("source") is not None:
            files.append(os.path.basename(node.find("source").get("file")))  # type: ignore[union-attr]
            node = node.find("backingStore")
        return files
    raise AssertionError("no vda")


def vshx_chain(domain: str) -> list[str]:
    proc = run_vshx("chain", domain, "vda", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    (chain,) = json.loads(proc.stdout)["chains"]
    return [os.path.basename(layer["path"]) for layer in chain["layers"]]


def qemu_files(domain: str) -> list[str]:
    """The image files QEMU has open for vda, active first (query-named-block-nodes)."""
    reply = virsh("qemu-monitor-command", domain, json.dumps({"execute": "query-block"})).stdout
    for device in json.loads(reply)["return"]:
        if device.get("qdev", "").endswith("virtio-disk0/virtio-backend"):
            image, files = device["inserted"]["image"], []
            while image is not None:
                files.append(os.path.basename(plain_name(image["filename"])))
                image = image.get("backing-image")
            return files
    raise AssertionError(reply)


def plain_name(filename: str) -> str:
    """QEMU names a node with options as json:{...}: its file's own name is inside."""
    if filename.startswith("json:"):
        return str(json.loads(filename[5:])["file"]["filename"])
    return filename


def offline_view(lab: Lab, tmp: Path) -> str:
    return guest_hash(lab.active, tmp)


def started_on_its_chain(lab: Lab, tmp: Path, view: str) -> list[str]:
    """Start the domain: QEMU must run on exactly the chain vshx reports, showing ``view``."""
    reported = vshx_chain(lab.name)
    assert inactive_chain(lab.name) == reported
    for name in reported:
        qemu_check(lab.dir / name)
    virsh("start", lab.name)
    lab.running = True
    assert qemu_files(lab.name) == reported
    assert lab.guest_hash(tmp) == view
    return reported


CASES = [
    ("commit", ["commit", "{d}", "vda", "--base", "sn1", "--top", "sn3"], ["sn4", "sn1", "base"]),
    (
        "commit-delete",
        ["commit", "{d}", "vda", "--base", "sn1", "--top", "sn3", "--delete"],
        ["sn4", "sn1", "base"],
    ),
    (
        "active-pivot-delete",
        ["commit", "{d}", "vda", "--base", "sn2", "--active", "--pivot", "--delete"],
        ["sn2", "sn1", "base"],
    ),
    ("pull", ["pull", "{d}", "vda", "--base", "sn1"], ["sn4", "sn1", "base"]),
    (
        "shorten",
        ["shorten", "{d}", "vda", "--drop", "sn2", "--drop", "sn3"],
        ["sn4", "sn1", "base"],
    ),
    ("flatten-pull", ["flatten", "{d}", "vda", "--route", "pull"], ["sn4"]),
    ("flatten-commit", ["flatten", "{d}", "vda", "--route", "commit"], ["base"]),
    (
        "rebase-domain",
        ["rebase", "--domain", "{d}", "--path", "vda", "--top", "sn4", "--backing", "sn1"],
        ["sn4", "sn1", "base"],
    ),
]


@pytest.mark.parametrize(("case", "words", "expected"), CASES, ids=[c[0] for c in CASES])
def test_offline_merge_leaves_the_definition_naming_the_new_chain(tmp_path, case, words, expected):
    real = snapshot_lab(tmp_path, "real")
    scripted = snapshot_lab(tmp_path, "scripted")
    try:
        # libvirt pins the overlays it made, down to the file the domain was defined on
        assert inactive_chain(real.name) == [
            "sn4.qcow2",
            "sn3.qcow2",
            "sn2.qcow2",
            "sn1.qcow2",
            "base.qcow2",
        ]
        view = offline_view(real, tmp_path)
        assert offline_view(scripted, tmp_path) == view

        proc = run_vshx(*[w.format(d=real.name) for w in words])
        assert proc.returncode == 0, proc.stderr
        assert "predicted" not in proc.stderr, proc.stderr
        files = started_on_its_chain(real, tmp_path, view)
        assert [f.removesuffix(".qcow2") for f in files] == expected
        if "--delete" in words:
            gone = {"sn2", "sn3", "sn4"} - set(expected)
            assert not any(real.layer(name).exists() for name in gone)

        untouched = file_state(scripted.dir)
        plan = run_vshx(*[w.format(d=scripted.name) for w in words], "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert file_state(scripted.dir) == untouched
        assert "update-device" in plan.stdout and "--config <<'VSHX_EOF'" in plan.stdout
        ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert started_on_its_chain(scripted, tmp_path, view) == files
        virsh("destroy", real.name)  # a cold boot keeps the view too
        virsh("start", real.name)
        assert real.guest_hash(tmp_path) == view
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_a_definition_that_disagrees_with_the_headers_is_refused(tmp_path):
    lab = snapshot_lab(tmp_path)
    try:
        xml = virsh("dumpxml", "--inactive", lab.name).stdout
        missing = str(lab.dir / "missing.qcow2")
        virsh("define", "/dev/stdin", stdin=xml.replace(str(lab.layer("sn2")), missing))
        before = file_state(lab.dir)
        for words in (
            ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete"],
            ["pull", lab.name, "vda", "--base", "sn1"],
            ["flatten", lab.name, "vda"],
        ):
            proc = run_vshx(*words)
            assert proc.returncode == 1, proc.stdout
            assert "error: the persistent definition" in proc.stderr
            assert "missing.qcow2, which does not exist" in proc.stderr
            assert "hint: " in proc.stderr and "Traceback" not in proc.stderr
        assert file_state(lab.dir) == before
        shown = run_vshx("chain", lab.name, "vda")
        assert shown.returncode == 0 and "warning: the persistent definition" in shown.stderr
        assert "update-device" in shown.stderr

        # headers changed by hand (qemu-img through vshx): refused the same way, and told
        virsh("define", "/dev/stdin", stdin=xml)
        view = offline_view(lab, tmp_path)
        hand = run_vshx(
            "qemu-img", "commit", "-q", "-b", str(lab.layer("sn2")), str(lab.layer("sn3"))
        )
        assert hand.returncode == 0, hand.stderr
        rebase = run_vshx(
            "qemu-img", "rebase", "-u", "-F", "qcow2", "-b", "sn2.qcow2", str(lab.layer("sn4"))
        )
        assert rebase.returncode == 0, rebase.stderr
        assert "warning: qemu-img rebase changed sn4.qcow2" in rebase.stderr
        assert "update-device" in rebase.stderr
        before = file_state(lab.dir)
        proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2")
        assert proc.returncode == 1 and "sn3.qcow2 below sn4.qcow2" in proc.stderr
        assert file_state(lab.dir) == before
        # the printed line brings the definition in line, and then vshx plans again
        script = rebase.stderr[rebase.stderr.index("virsh -c") :]
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert inactive_chain(lab.name) == ["sn4.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
        assert offline_view(lab, tmp_path) == view
        proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2", "--delete")
        assert proc.returncode == 0, proc.stderr
        started_on_its_chain(lab, tmp_path, view)
    finally:
        destroy_lab(lab)


def test_managed_save_refuses_and_the_guest_keeps_its_writes(tmp_path):
    lab = snapshot_lab(tmp_path, shut_off=False)
    try:
        virsh("managedsave", lab.name)
        lab.running = False
        before = file_state(lab.dir)
        for words in (
            ["commit", lab.name, "vda", "--base", "sn2", "--active", "--pivot", "--delete"],
            ["flatten", lab.name, "vda"],
            ["pull", lab.name, "vda", "--dry-run"],
        ):
            proc = run_vshx(*words)
            assert proc.returncode == 1, proc.stdout
            assert "has saved state (a managed-save image" in proc.stderr
            assert f"virsh managedsave-remove {lab.name}" in proc.stderr
            assert f"virsh start {lab.name}" in proc.stderr
        assert file_state(lab.dir) == before
        virsh("start", lab.name)  # restores the saved RAM
        lab.running = True
        guest_write(lab.name, 0x99, 9)
        view = lab.guest_hash(tmp_path)
        virsh("destroy", lab.name)
        virsh("start", lab.name)  # a cold boot
        assert lab.guest_hash(tmp_path) == view
    finally:
        subprocess.run(["virsh", "-c", URI, "managedsave-remove", lab.name], capture_output=True)
        destroy_lab(lab)


def test_a_memory_snapshot_refuses_a_merge_into_its_moment(tmp_path):
    lab = snapshot_lab(tmp_path, shut_off=False)
    try:
        virsh(
            "snapshot-create-as",
            lab.name,
            "mem",
            "--memspec",
            f"file={lab.dir / 'mem.ram'},snapshot=external",
            "--diskspec",
            f"vda,snapshot=external,file={lab.dir / 'sn5.qcow2'}",
        )
        flush_guest(lab.name)
        virsh("destroy", lab.name)
        lab.running = False
        before = file_state(lab.dir)
        for words in (  # sn4 holds the moment: written into, or merged away
            ["commit", lab.name, "vda", "--base", "sn4", "--active", "--pivot"],
            ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn4"],
            ["shorten", lab.name, "vda", "--drop", "sn4"],
        ):
            proc = run_vshx(*words)
            assert proc.returncode == 1, proc.stdout
            assert "snapshot mem of" in proc.stderr and "sn4.qcow2" in proc.stderr
            assert f"virsh snapshot-delete {lab.name} mem" in proc.stderr
        assert file_state(lab.dir) == before
        # below the moment: sn4 still shows what it showed, so the snapshot keeps its disk
        view = offline_view(lab, tmp_path)
        proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        assert proc.returncode == 0, proc.stderr
        assert chain_files(lab.layer("sn4")) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        started_on_its_chain(lab, tmp_path, view)
        # a pull reads sn4 and takes it out of the chain unwritten: the moment stays intact
        # there, so neither a pull nor a flatten (which then takes the pull route) is refused
        moment = guest_hash(lab.layer("sn4"), tmp_path)
        plan = run_vshx("flatten", lab.name, "vda", "--dry-run")
        assert plan.returncode == 0 and "blockpull" in plan.stdout, plan.stdout + plan.stderr
        proc = run_vshx("pull", lab.name, "vda", "--base", "sn1")
        assert proc.returncode == 0, proc.stderr
        flush_guest(lab.name)
        assert lab.guest_hash(tmp_path) == view
        assert guest_hash(lab.layer("sn4"), tmp_path) == moment
    finally:
        destroy_lab(lab)


def test_recover_brings_a_definition_left_behind_by_an_interrupted_plan_in_line(tmp_path):
    lab = snapshot_lab(tmp_path)
    try:
        view = offline_view(lab, tmp_path)
        plan = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
        assert plan.returncode == 0, plan.stderr
        # the qemu-img steps ran, then vshx was killed before the definition's step
        head = plan.stdout[: plan.stdout.index("# step 9:")]  # after 6 checks and 2 qemu-img
        assert "# step 9: make the persistent definition" in plan.stdout
        ran = subprocess.run(["sh", "-e"], input=head, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        entry = (
            f"<journal plan='commit' step='7' steps='8' what='point sn4.qcow2 at sn1.qcow2' "
            f"disk='vda' image='{lab.layer('sn4')}' pivot='no' pid='999999' time='0'/>"
        )
        virsh(
            "metadata",
            lab.name,
            "--uri",
            "https://vshx.invalid/journal",
            "--key",
            "vshx",
            "--set",
            entry,
            "--config",
        )
        refused = run_vshx("pull", lab.name, "vda", "--base", "base")
        assert refused.returncode == 1 and "did not finish" in refused.stderr
        proc = run_vshx("recover", lab.name, "vda")
        assert proc.returncode == 0, proc.stderr
        assert started_on_its_chain(lab, tmp_path, view) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    finally:
        destroy_lab(lab)


def test_a_file_the_definition_still_names_is_not_deleted(tmp_path):
    lab = snapshot_lab(tmp_path)
    try:
        view = offline_view(lab, tmp_path)
        plan = run_vshx(
            "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete", "--dry-run"
        ).stdout
        start = plan.index("# step 9: make the persistent definition")
        end = plan.index("VSHX_EOF\n", plan.index("<<'VSHX_EOF'", start)) + len("VSHX_EOF\n")
        without = plan[:start] + plan[end:]  # the definition's step left out by hand
        proc = run_vshx("-f", "-", stdin=without)
        assert proc.returncode == 1
        assert "not deleting" in proc.stderr and "sn3.qcow2" in proc.stderr, proc.stderr
        assert lab.layer("sn3").exists() and lab.layer("sn2").exists()
        assert inactive_chain(lab.name)[:2] == ["sn4.qcow2", "sn3.qcow2"]
        virsh("start", lab.name)  # the old definition still finds every file it names
        lab.running = True
        assert lab.guest_hash(tmp_path) == view
    finally:
        destroy_lab(lab)
