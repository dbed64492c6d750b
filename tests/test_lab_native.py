"""The practice lab is made by libvirt's own commands, so native snapshot commands work on it.

Each snapshot snK was taken by ``virsh snapshot-create-as --disk-only --atomic``: its moment
is the file below snK.qcow2 (per disk) and ``virsh snapshot-delete`` of any of them succeeds,
leaving the guest's data and the other snapshots' moments as they were.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    destroy_lab,
    make_lab,
    qemu_check,
    run_vshx,
    snapshot_names,
    snapshot_sources,
    virsh,
)

pytestmark = pytest.mark.libvirt

SHAPES = [(True, 1), (False, 1), (True, 2), (False, 2)]
SHAPE_IDS = ["running-1disk", "shutoff-1disk", "running-2disks", "shutoff-2disks"]


def guest_hashes(lab: Lab, tmp: Path) -> dict[str, str]:
    return {disk: lab.guest_hash(tmp, disk) for disk in lab.targets}


@pytest.mark.parametrize(("running", "disks"), SHAPES, ids=SHAPE_IDS)
def test_native_snapshot_delete_works(tmp_path: Path, running: bool, disks: int) -> None:
    lab = make_lab(tmp_path, running=running, disks=disks)
    try:
        lab.record_moments(tmp_path)
        before = guest_hashes(lab, tmp_path)
        assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]
        # a middle, the first and the current snapshot, as a user would delete them
        for snap, left in (("sn2", 3), ("sn1", 2), ("sn4", 1)):
            virsh("snapshot-delete", lab.name, snap)
            assert guest_hashes(lab, tmp_path) == before
            assert len(lab.check_moments(tmp_path)) == left
        assert snapshot_names(lab.name) == ["sn3"]
        for disk in lab.targets:
            qemu_check(lab.active_of(disk))
            assert chain_files(lab.active_of(disk)) == [
                lab.layer("sn3", disk).name,
                lab.layer("base", disk).name,
            ]
    finally:
        destroy_lab(lab)


@pytest.mark.parametrize(("running", "disks"), [(True, 2), (False, 1)], ids=["running", "off"])
def test_each_snapshot_names_its_moment_and_its_overlay(
    tmp_path: Path, running: bool, disks: int
) -> None:
    lab = make_lab(tmp_path, running=running, disks=disks)
    try:
        layers = ["base", "sn1", "sn2", "sn3", "sn4"]
        for k in range(1, 5):
            snap = layers[k]
            moment, made = snapshot_sources(lab.name, snap)
            for disk in lab.targets:
                assert moment[disk] == str(lab.layer(layers[k - 1], disk))
                assert made[disk] == str(lab.layer(snap, disk))
            state = virsh("snapshot-info", lab.name, snap).stdout
            assert "disk-snapshot" in state
        for disk in lab.targets:
            assert chain_files(lab.active_of(disk)) == [
                lab.layer(n, disk).name for n in reversed(layers)
            ]
        # distinct data on every layer: every moment differs from the next
        moments = lab.record_moments(tmp_path)
        for disk in lab.targets:
            seen = [moments[s][disk] for s in layers[1:]] + [lab.guest_hash(tmp_path, disk)]
            assert len(set(seen)) == len(seen)
    finally:
        destroy_lab(lab)


def test_dry_run_script_builds_the_same_lab(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, disks=2, layers=2, dirname="made")
    scripted = Lab(lab.name + "-sh", tmp_path / "script", True, 2)
    try:
        proc = run_vshx(
            "lab-create", scripted.name, "--dir", str(scripted.dir), "--layers", "2",
            "--disks", "2", "--dry-run",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "snapshot-create-as" in proc.stdout and "--redefine" not in proc.stdout
        run = subprocess.run(["sh", "-e"], input=proc.stdout, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert snapshot_names(scripted.name) == snapshot_names(lab.name) == ["sn1", "sn2"]
        for disk in lab.targets:
            assert chain_files(scripted.active_of(disk)) == chain_files(lab.active_of(disk))
            assert scripted.guest_hash(tmp_path, disk) == lab.guest_hash(tmp_path, disk)
        for snap in ("sn1", "sn2"):
            for made, built in zip(
                snapshot_sources(scripted.name, snap), snapshot_sources(lab.name, snap), strict=True
            ):
                assert {d: Path(p).name for d, p in made.items()} == {
                    d: Path(p).name for d, p in built.items()
                }
    finally:
        destroy_lab(scripted)
        destroy_lab(lab)
    assert not scripted.dir.exists() and not lab.dir.exists()


def test_disks_out_of_range_refused(tmp_path: Path) -> None:
    proc = run_vshx("lab-create", "vshx-never", "--dir", str(tmp_path / "x"), "--disks", "5")
    assert proc.returncode == 2 and "--disks" in proc.stderr and "hint:" in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("offline_lab", [2], indirect=True)
def test_two_disk_fixture_marks_every_file_it_made(offline_lab: Lab) -> None:
    lab = offline_lab
    assert lab.targets == ["vda", "vdb"]
    layers = ["base", "sn1", "sn2", "sn3", "sn4"]
    marker = (lab.dir / ".vshx-lab").read_text().splitlines()
    assert marker[0] == lab.name and marker[1].startswith("#owner ")
    made = sorted(lab.layer(n, d).name for d in lab.targets for n in layers)
    names = [line for line in marker[2:] if not line.startswith("#id ")]
    assert sorted(names) == made
    ids = [line.rsplit("/", 1)[-1] for line in marker[2:] if line.startswith("#id ")]
    assert sorted(ids) == made  # each file's identity (device, inode, birth), for lab-destroy
    assert chain_files(lab.active_of("vdb")) == [lab.layer(n, "vdb").name for n in reversed(layers)]
    mine = lab.dir / "mine.txt"
    mine.write_text("a user's file")
    proc = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in lab.dir.iterdir()) == ["mine.txt"]
    # one line says what went, as virsh says "Domain ... has been undefined" (nu13 #6)
    said = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line]
    assert any(f"lab {lab.name}: undefine {lab.name}" in line for line in said), said
    mine.unlink()
