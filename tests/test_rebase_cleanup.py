"""rebase (safe and verified-unsafe) and snapshot-cleanup against real libvirtd, QEMU, qemu-img."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    make_overlay,
    qemu_check,
    run_vshx,
    snapshot_names,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run_vshx(*args)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc


def check_all(lab: Lab) -> None:
    for layer in chain_files(lab.active):
        qemu_check(lab.dir / layer)


def test_seed_walkthrough_commit_cleanup_pull_cleanup(lab: Lab, tmp_path: Path):
    before = lab.guest_hash(tmp_path)
    ok(
        "blockcommit",
        lab.name,
        "vda",
        "--base",
        str(lab.layer("sn1")),
        "--top",
        str(lab.layer("sn3")),
    )
    proc = ok("snapshot-cleanup", lab.name)
    assert "sn2" in proc.stdout and "metadata removed" in proc.stdout
    assert snapshot_names(lab.name) == ["sn1", "sn4"]
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    assert lab.layer("sn2").exists()  # metadata only: the files stay without --delete-files

    ok("blockpull", lab.name, "vda")
    proc = ok("snapshot-cleanup", lab.name, "--delete-files")
    assert chain_files(lab.active) == ["sn4.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    check_all(lab)
    # the pull took base and sn1.qcow2 out of the chain, unchanged: snapshot sn1's moment
    # (base) and sn4's (in sn1.qcow2 since the commit) are intact in them; --delete-files would
    # remove them with their snapshots, but the orphan sn2.qcow2 (kept above) still names
    # sn1.qcow2 as backing, so both files and both snapshots stay
    assert snapshot_names(lab.name) == ["sn1", "sn4"]
    assert lab.layer("sn1").exists() and "sn2.qcow2" in proc.stderr
    assert "file kept" in proc.stdout


def test_cleanup_with_nothing_stale_changes_nothing(lab: Lab):
    proc = ok("snapshot-cleanup", lab.name)
    assert "nothing to do" in proc.stdout
    assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]


def test_delete_files_never_removes_a_file_another_overlay_uses(lab: Lab):
    ok("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
    keeper = lab.dir / "keeper.qcow2"
    make_overlay(keeper, "sn2.qcow2")
    proc = ok("snapshot-cleanup", lab.name, "--delete-files")
    assert lab.layer("sn2").exists(), "sn2 is keeper.qcow2's backing file"
    assert not lab.layer("sn3").exists()
    assert "keeper.qcow2" in proc.stderr
    qemu_check(keeper)


def test_section4_commit_then_verified_unsafe_rebase(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    lab.relative_backing_names()  # as the source blog's chain: libvirt's are absolute
    before = guest_hash(lab.active, tmp_path)
    sn3_view = guest_hash(lab.layer("sn3"), tmp_path)
    # the tutorial's qemu-img commit sn2 (its data into sn1) with qemu-img itself: vshx commit
    # IMAGE of a shut-off domain's layer is the domain's commit, which points sn3 at sn1 too
    subprocess.run(["qemu-img", "commit", "-q", str(lab.layer("sn2"))], check=True)
    proc = ok("rebase", str(lab.layer("sn3")), "-u", "--backing", "sn1", "--teach")
    assert "qemu-img rebase -u -f qcow2 -F qcow2 -b sn1.qcow2" in proc.stdout
    assert chain_files(lab.active) == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]
    assert guest_hash(lab.active, tmp_path) == before
    assert guest_hash(lab.layer("sn3"), tmp_path) == sn3_view
    check_all(lab)


def test_unsafe_rebase_that_would_change_data_is_refused(offline_lab: Lab):
    lab = offline_lab
    untouched = file_state(lab.dir)
    proc = run_vshx("rebase", str(lab.layer("sn3")), "-u", "--backing", "sn1")
    assert proc.returncode == 1
    assert "differ at offset 131072" in proc.stderr and "hint:" in proc.stderr
    assert file_state(lab.dir) == untouched
    proc = run_vshx("rebase", str(lab.layer("sn3")), "-u", "--backing", "sn1", "--dry-run")
    assert proc.returncode == 1 and file_state(lab.dir) == untouched


@pytest.mark.parametrize(
    ("image", "backing", "expected"),
    [
        ("sn3", "sn1", ["sn4", "sn3", "sn1", "base"]),
        ("sn4", "", ["sn4"]),
        ("sn4", "base", ["sn4", "base"]),
    ],
    ids=["onto-lower-layer", "flatten", "active-onto-base"],
)
def test_safe_rebase_and_its_dry_run(tmp_path: Path, image, backing, expected):
    real = make_lab(tmp_path, running=False, dirname="real")
    scripted = make_lab(tmp_path, running=False, dirname="scripted")
    try:
        before = guest_hash(real.active, tmp_path)

        def named(lab: Lab) -> list[str]:  # the domain's disk itself: named through it
            if image == "sn4":
                return ["--domain", lab.name, "--disk", "vda", "--top", "sn4"]
            return [str(lab.layer(image))]

        ok("rebase", *named(real), "--backing", backing)
        assert [f.removesuffix(".qcow2") for f in chain_files(real.active)] == expected
        assert guest_hash(real.active, tmp_path) == before
        check_all(real)

        untouched = file_state(scripted.dir)
        plan = ok("rebase", *named(scripted), "--backing", backing, "--dry-run").stdout
        assert file_state(scripted.dir) == untouched
        assert "qemu-img rebase -f qcow2" in plan
        subprocess.run(["sh", "-e"], input=plan, text=True, check=True)
        assert chain_files(scripted.active) == chain_files(real.active)
        assert guest_hash(scripted.active, tmp_path) == before
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_rebase_a_layer_named_through_its_domain(offline_lab: Lab, tmp_path: Path):
    before = guest_hash(offline_lab.active, tmp_path)
    ok(
        "rebase",
        "--domain",
        offline_lab.name,
        "--path",
        "vda",
        "--top",
        "vda[2]",  # libvirt's numbering: vda[1] is the active sn4
        "--backing",
        "vda[4]",
    )
    assert chain_files(offline_lab.active) == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]
    assert guest_hash(offline_lab.active, tmp_path) == before


def test_rebase_refusals(lab: Lab, tmp_path: Path):
    untouched = file_state(lab.dir)
    proc = run_vshx("rebase", str(lab.layer("sn4")), "--backing", "sn1")
    assert proc.returncode == 1 and "in use by running" in proc.stderr and "pull" in proc.stderr
    proc = run_vshx("rebase", "--domain", lab.name, "--path", "vda", "--backing", "sn1")
    assert proc.returncode == 1 and "is running" in proc.stderr and "hint: use: pull" in proc.stderr
    proc = run_vshx("rebase", str(lab.layer("sn2")))
    assert proc.returncode == 2 and "missing --backing" in proc.stderr
    assert file_state(lab.dir) == untouched


def test_rebase_refuses_loops_and_missing_backing_files(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    untouched = file_state(lab.dir)
    proc = run_vshx("rebase", str(lab.layer("sn2")), "--backing", str(lab.layer("sn3")))
    assert proc.returncode == 1 and "loop" in proc.stderr
    proc = run_vshx(
        "rebase", "--domain", lab.name, "--path", "vda", "--top", "sn2", "--backing", "sn3"
    )
    assert proc.returncode == 1 and "loop" in proc.stderr
    proc = run_vshx("rebase", str(lab.layer("sn2")), "--backing", str(tmp_path / "nope.qcow2"))
    assert proc.returncode == 1 and "neither a layer" in proc.stderr
    assert file_state(lab.dir) == untouched


def test_cleanup_dry_run_piped_into_sh_matches_the_real_run(tmp_path: Path):
    real = make_lab(tmp_path, dirname="real")
    scripted = make_lab(tmp_path, dirname="scripted")
    try:
        for lab in (real, scripted):
            ok("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        ok("snapshot-cleanup", real.name, "--delete-files")
        untouched = file_state(scripted.dir)
        plan = ok("snapshot-cleanup", scripted.name, "--delete-files", "--dry-run").stdout
        assert file_state(scripted.dir) == untouched
        assert snapshot_names(scripted.name) == ["sn1", "sn2", "sn3", "sn4"]
        subprocess.run(["sh", "-e"], input=plan, text=True, check=True, capture_output=True)
        assert snapshot_names(scripted.name) == snapshot_names(real.name) == ["sn1", "sn4"]
        assert sorted(p.name for p in scripted.dir.glob("*.qcow2")) == sorted(
            p.name for p in real.dir.glob("*.qcow2")
        )
    finally:
        destroy_lab(real)
        destroy_lab(scripted)
