"""Offline merges keep checkpoint bitmaps: a real incremental backup after the merge copies
what changed since each checkpoint, no more (as native libvirt's live merge), no less.

The domain is built the way users do: a running lab, ``virsh checkpoint-create-as``, guest
writes through QEMU, ``virsh snapshot-create-as --disk-only`` (libvirt re-creates the
checkpoint bitmaps in the new overlay), more writes, another checkpoint, and so on; then it is
shut off, merged offline by vshx, started again and backed up with ``virsh backup-begin``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    qemu_check,
    qemu_img_map,
    run_vshx,
    virsh,
)

from vshx.errors import VshxError
from vshx.merging.bitmaps import refuse_inexact
from vshx.storage.bitmaps import Bitmap, LayerBitmaps
from vshx.storage.chain import Layer

DAEMON = pytest.mark.libvirt  # libvirtd on the test URI and QEMU

MIB = 1024 * 1024
# guest writes, in order: c1, W1, snapshot s2, W2, c2, W3, snapshot s3, W4
WRITES = {"W1": 8, "W2": 10, "W3": 12, "W4": 14}  # MiB offsets, 1 MiB each
CHANGED = {  # what changed since each checkpoint, as (start, length) ranges
    "c1": [(WRITES[w] * MIB, MIB) for w in ("W1", "W2", "W3", "W4")],
    "c2": [(WRITES[w] * MIB, MIB) for w in ("W3", "W4")],
}


def guest_write(name: str, pattern: int, mib: int) -> None:
    command = f'qemu-io -d virtio-disk0/virtio-backend "write -P 0x{pattern:02x} {mib}M 1M"'
    virsh("qemu-monitor-command", name, "--hmp", command)


def take_snapshot(lab: Lab, snap: str) -> None:
    spec = f"vda,file={lab.dir / (snap + '.qcow2')}"
    virsh("snapshot-create-as", lab.name, snap, "--disk-only", "--atomic", "--diskspec", spec)


def build(tmp_path: Path, dirname: str) -> Lab:
    """base <- sn1{c1} <- s2{c1,c2} <- s3{c1,c2} (active), left running."""
    lab = make_lab(tmp_path, running=True, layers=1, dirname=dirname)
    virsh("checkpoint-create-as", lab.name, "c1")
    guest_write(lab.name, 0x51, WRITES["W1"])
    take_snapshot(lab, "s2")
    guest_write(lab.name, 0x52, WRITES["W2"])
    virsh("checkpoint-create-as", lab.name, "c2")
    guest_write(lab.name, 0x53, WRITES["W3"])
    take_snapshot(lab, "s3")
    guest_write(lab.name, 0x54, WRITES["W4"])
    return lab


def shut_off(lab: Lab) -> None:
    virsh("destroy", lab.name)  # SIGTERM: QEMU closes its images and stores the bitmaps
    lab.running = False


def remove(lab: Lab) -> None:
    destroy_lab(lab)  # lab-destroy also drops the checkpoint metadata
    gone = subprocess.run(["virsh", "-c", URI, "domstate", lab.name], capture_output=True)
    assert gone.returncode != 0, f"{lab.name} is still defined"


def forget_backing_store(name: str) -> None:
    """Let the persistent definition name no <backingStore> (libvirt then reads the headers).
    vshx's offline plans end with a step that does this (issue 23 item 1); harmless after it."""
    xml = virsh("dumpxml", "--inactive", name).stdout
    root = ET.fromstring(xml)
    for disk in root.findall("./devices/disk"):
        for node in disk.findall("backingStore"):
            disk.remove(node)
    virsh("define", "/dev/stdin", stdin=ET.tostring(root, encoding="unicode"))


def live_chain(name: str) -> list[str]:
    """The chain libvirt gave QEMU (live XML, read from the running domain)."""
    root = ET.fromstring(virsh("dumpxml", name).stdout)
    disk = next(d for d in root.findall("./devices/disk") if d.find("target").get("dev") == "vda")
    files, node = [], disk
    while node is not None and node.find("source") is not None:
        files.append(os.path.basename(node.find("source").get("file")))
        node = node.find("backingStore")
    return files


def backup_xml(checkpoint: str, target: Path) -> str:
    """A push-mode incremental backup of vda into the qcow2 file ``target``."""
    return (
        f"<domainbackup mode='push'><incremental>{checkpoint}</incremental><disks>"
        f"<disk name='vda' backup='yes' type='file'><target file='{target}'/>"
        "<driver type='qcow2'/></disk></disks></domainbackup>"
    )


def incremental_backup(name: str, checkpoint: str, target: Path) -> list[tuple[int, int]]:
    """Push-mode incremental backup from ``checkpoint``; the ranges the backup copied."""
    virsh("backup-begin", name, "/dev/stdin", stdin=backup_xml(checkpoint, target))
    for _ in range(3000):  # the job ends by itself; not a timed assertion
        if "None" in virsh("domjobinfo", name).stdout.splitlines()[0]:
            break
        time.sleep(0.1)
    assert "Completed" in virsh("domjobinfo", name, "--completed").stdout
    extents = qemu_img_map(target)
    ranges = [(e["start"], e["length"]) for e in extents if e["data"] and e["depth"] == 0]
    merged: list[tuple[int, int]] = []
    for start, length in ranges:  # neighbouring extents as one range
        if merged and sum(merged[-1]) == start:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((start, length))
    return merged


def backups(lab: Lab, tmp: Path) -> dict[str, list[tuple[int, int]]]:
    return {c: incremental_backup(lab.name, c, tmp / f"{lab.name}-{c}.qcow2") for c in CHANGED}


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, int]]]:
    """What native libvirt's live path leaves: a live active commit on an identical domain."""
    tmp = tmp_path_factory.mktemp("native")
    lab = build(tmp, "native")
    try:
        proc = run_vshx("commit", lab.name, "vda", "--base", "sn1.qcow2", "--active", "--pivot")
        assert proc.returncode == 0 and "live: libvirt block job" in proc.stdout, proc.stderr
        return backups(lab, tmp)
    finally:
        remove(lab)


MIDDLE = ["commit", "{d}", "vda", "--top", "s2.qcow2", "--base", "sn1.qcow2"]
ACTIVE = ["commit", "{d}", "vda", "--base", "sn1.qcow2", "--active", "--pivot"]
CASES = [  # (id, vshx argv, chain after (active first), run its --dry-run script with sh -e)
    ("commit-middle", MIDDLE, ["s3", "sn1", "base"], False),
    ("commit-active", ACTIVE, ["sn1", "base"], False),
    ("commit-active-script", ACTIVE, ["sn1", "base"], True),
    ("pull", ["pull", "{d}", "vda", "--base", "sn1.qcow2"], ["s3", "sn1", "base"], False),
    (
        "shorten-pull",
        ["shorten", "{d}", "vda", "--drop", "s2", "--route", "pull"],
        ["s3", "sn1", "base"],
        False,
    ),
    ("flatten-copy", ["flatten", "{d}", "vda", "--to", "{dir}/flat.qcow2"], ["flat"], False),
    (
        "rebase-safe",
        ["rebase", "--domain", "{d}", "--path", "vda", "--backing", "sn1.qcow2"],
        ["s3", "sn1", "base"],
        False,
    ),
]


@DAEMON
@pytest.mark.parametrize(("case", "words", "expected", "script"), CASES, ids=[c[0] for c in CASES])
def test_offline_merge_keeps_every_checkpoint_exact(
    tmp_path, native, case, words, expected, script
):
    lab = build(tmp_path, "lab")
    try:
        shut_off(lab)
        before = guest_hash(lab.active, tmp_path)
        argv = [w.format(d=lab.name, dir=lab.dir) for w in words]
        untouched = file_state(lab.dir)
        plan = run_vshx(*argv, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "qemu-img bitmap -f qcow2 --merge c2 -b" in plan.stdout
        assert file_state(lab.dir) == untouched

        if script:
            ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
            assert ran.returncode == 0, ran.stderr
        else:
            proc = run_vshx(*argv)
            assert proc.returncode == 0, proc.stderr
            assert "offline: qemu-img" in proc.stdout
        chain = [f.removesuffix(".qcow2") for f in chain_files(lab.active)]
        assert chain == expected
        assert guest_hash(lab.active, tmp_path) == before
        for layer in chain_files(lab.active):
            qemu_check(lab.dir / layer)

        forget_backing_store(lab.name)
        virsh("start", lab.name)
        lab.running = True
        assert live_chain(lab.name) == chain_files(lab.active)  # QEMU runs on that chain
        got = backups(lab, tmp_path)
        assert got == CHANGED, f"copied {got}, changed {CHANGED}"
        assert got == native  # the same as native libvirt's live merge, not more
        assert lab.guest_hash(tmp_path) == before
    finally:
        remove(lab)


@DAEMON
def test_a_merge_stopped_before_its_bitmap_steps_fails_closed(tmp_path, native):
    """Stopped right after the data step (the receiver's bitmaps disabled, the merges not yet
    run): libvirt refuses the backups instead of copying too little; the rest of the printed
    script, run later, makes them exact."""
    lab = build(tmp_path, "lab")
    try:
        shut_off(lab)
        plan = run_vshx("pull", lab.name, "vda", "--base", "sn1.qcow2", "--dry-run")
        assert plan.returncode == 0, plan.stderr
        lines = plan.stdout.splitlines(keepends=True)
        cut = next(i for i, line in enumerate(lines) if ": merge bitmap " in line)
        done = subprocess.run(["sh", "-e"], input="".join(lines[:cut]), text=True)
        assert done.returncode == 0
        forget_backing_store(lab.name)
        virsh("start", lab.name)
        for checkpoint in CHANGED:
            xml = backup_xml(checkpoint, tmp_path / checkpoint)
            proc = subprocess.run(
                ["virsh", "-c", URI, "backup-begin", lab.name, "/dev/stdin"],
                input=xml,
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 1 and "checkpoint inconsistent" in proc.stderr, proc
        shut_off(lab)
        rest = subprocess.run(["sh", "-e"], input="#!/bin/sh\n" + "".join(lines[cut:]), text=True)
        assert rest.returncode == 0
        virsh("start", lab.name)
        assert backups(lab, tmp_path) == CHANGED == native
    finally:
        remove(lab)


@DAEMON
def test_an_inconsistent_bitmap_refuses_before_anything_changes(tmp_path):
    """QEMU killed while the domain ran: the active layer's bitmaps stay marked in-use."""
    lab = build(tmp_path, "lab")
    try:
        shut_off(lab)  # the bitmaps of s3 are stored ...
        virsh("start", lab.name)  # ... and marked in-use again by the next QEMU
        # QEMU's own pid, wherever the daemon keeps its pid files (system or session)
        found = subprocess.run(
            ["pgrep", "-f", f"guest={lab.name},"], capture_output=True, text=True, check=True
        )
        pid = int(found.stdout.split()[0])
        os.kill(pid, 9)  # our own lab's QEMU, by its pid
        for _ in range(300):
            if "shut off" in virsh("domstate", lab.name).stdout:
                break
            time.sleep(0.1)
        lab.running = False
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(lab.dir / "s3.qcow2")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        flags = [b["flags"] for b in json.loads(info)["format-specific"]["data"]["bitmaps"]]
        assert all("in-use" in f for f in flags), flags
        untouched = file_state(lab.dir)
        definition = virsh("dumpxml", "--inactive", lab.name).stdout
        for dry in ([], ["--dry-run"]):
            proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--active", "--pivot", *dry)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "error: checkpoint c" in proc.stderr and "inconsistent" in proc.stderr
            assert "hint: " in proc.stderr and "checkpoint-delete" in proc.stderr
            assert "Traceback" not in proc.stderr
        assert file_state(lab.dir) == untouched
        assert virsh("dumpxml", "--inactive", lab.name).stdout == definition
    finally:
        remove(lab)


def test_merges_without_bitmaps_print_no_bitmap_steps(offline_lab: Lab) -> None:
    proc = run_vshx("commit", offline_lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "qemu-img bitmap" not in proc.stdout


# --- the refusal rules, as pure logic (no daemon) ---


def _layer(name: str, position: int, *bitmaps: Bitmap, fmt: str = "qcow2") -> LayerBitmaps:
    return LayerBitmaps(Layer(f"/x/{name}", fmt, position), tuple(bitmaps), fmt == "qcow2")


C1 = Bitmap("c1", 65536, ("auto",))
C2 = Bitmap("c2", 65536, ("auto",))
OWNERS = {"c1": ["c1"], "c2": ["c2"]}


def test_libvirts_layout_is_carried_without_refusal() -> None:
    receiver = _layer("sn1", 2, C1)
    refuse_inexact(receiver, [_layer("s2", 1, C1, C2)], OWNERS, [_layer("s3", 0, C1, C2)], "d")


@pytest.mark.parametrize(
    ("receiver", "sources", "beyond", "words"),
    [
        (_layer("base", 2, fmt="raw"), [_layer("s2", 1, C1)], [], "cannot hold bitmaps"),
        (
            _layer("sn1", 2, Bitmap("c1", 4096, ("auto",))),
            [_layer("s2", 1, C1)],
            [],
            "different granularities",
        ),
        (_layer("sn1", 2, C1), [_layer("s2", 1)], [_layer("s3", 0, C1)], "missing from s2"),
        (_layer("s3", 0, C1), [_layer("s2", 1)], [_layer("sn1", 2, C1)], "missing from s2"),
        (
            _layer("sn1", 2),
            [_layer("s2", 1, Bitmap("c2", 65536, ("in-use", "auto")))],
            [],
            "inconsistent",
        ),
    ],
    ids=["raw-receiver", "granularity", "hidden-gap-commit", "hidden-gap-pull", "in-use"],
)
def test_what_cannot_be_exact_is_refused_naming_the_checkpoint(
    receiver, sources, beyond, words
) -> None:
    with pytest.raises(VshxError) as caught:
        refuse_inexact(receiver, sources, OWNERS, beyond, "dom1")
    assert words in caught.value.message and "checkpoint c" in caught.value.message
    assert "virsh checkpoint-delete dom1 c" in (caught.value.hint or "")


def test_a_pasted_bitmap_remove_of_a_checkpoints_bitmap_is_refused(tmp_path: Path) -> None:
    """An outside attack: `qemu-img bitmap --remove ACTIVE c1` typed into vshx on a shut-off
    domain ran without a word, and libvirt's next incremental backup from c1 failed
    ("checkpoint inconsistent").  --remove, --clear and --disable of a checkpoint's bitmap
    are refused now, nothing changed; a bitmap no checkpoint uses is the user's to remove."""
    lab = build(tmp_path, "lab")
    try:
        shut_off(lab)
        active = str(lab.active)
        before = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", active], capture_output=True, text=True
        ).stdout
        for op in ("--remove", "--clear", "--disable"):
            refused = run_vshx("qemu-img", "bitmap", op, active, "c1")
            assert refused.returncode == 1, refused.stderr
            assert "is checkpoint c1 of" in refused.stderr and "hint:" in refused.stderr
        after = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", active], capture_output=True, text=True
        ).stdout
        assert after == before
        subprocess.run(["qemu-img", "bitmap", "--add", active, "mine"], check=True)
        assert run_vshx("qemu-img", "bitmap", "--remove", active, "mine").returncode == 0
    finally:
        remove(lab)
