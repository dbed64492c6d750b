"""A layer smaller than the file below it hides that file's data past its end (QEMU reads
zeros there): a commit that removes it would show the guest that data again.  vshx refuses
such a commit, and where it chooses the route itself it pulls (which copies the view)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    destroy_lab,
    flush_guest,
    make_lab,
    qemu_check,
    run_vshx,
    snapshot_names,
    virsh,
)

from vshx.merging.routes import hidden_tail
from vshx.storage.chain import Layer

MIB = 1024 * 1024


def layer(name: str, position: int, mib: int | None) -> Layer:
    return Layer(f"/x/{name}", "qcow2", position, virtual_size=None if mib is None else mib * MIB)


def test_only_a_removed_layer_smaller_than_the_base_is_unsafe():
    base, small, big = layer("base", 3, 64), layer("small", 2, 32), layer("big", 2, 128)
    above = [layer("active", 0, 64), layer("mid", 1, 64)]
    assert hidden_tail([big], base, above) is None  # larger: the tail reads zeros before/after
    assert hidden_tail([layer("same", 2, 64)], base, above) is None
    refusal = hidden_tail([small], base, above)
    assert refusal is not None and "small (32.0 MiB) is smaller than base" in refusal.message
    assert "pull" in refusal.hint
    # the layers that stay are no larger than the removed one: they never read past its end
    assert hidden_tail([small], base, [layer("active", 0, 32)]) is None
    # the base becomes the disk (active commit): the disk would grow
    grows = hidden_tail([layer("active", 0, 32)], base, [])
    assert grows is not None and "the disk would grow to 64.0 MiB" in grows.message
    unknown = hidden_tail([layer("small", 2, None)], base, above)
    assert unknown is not None and "cannot read the virtual size of small" in unknown.message


def io(lab: Lab, command: str) -> None:
    virsh(
        "qemu-monitor-command", lab.name, "--hmp",
        f'qemu-io -d virtio-disk0/virtio-backend "{command}"',
    )  # fmt: skip


def snapshot(lab: Lab, name: str) -> None:
    flush_guest(lab.name)
    virsh(
        "snapshot-create-as", lab.name, name, "--disk-only", "--atomic",
        "--diskspec", f"vda,file={lab.dir / (name + '.qcow2')}",
    )  # fmt: skip


def shrunk_lab(tmp_path: Path, running: bool) -> Lab:
    """base <- sn1 <- s1 (32M) <- s2 <- s3 (active), as virsh builds it: the guest writes at
    50M on the 64M disk, snapshot s1, blockresize to 32M, snapshot s2, blockresize to 64M,
    snapshot s3.  The guest reads zeros at 50M (s1 hides sn1's data there)."""
    lab = make_lab(tmp_path, layers=1)
    io(lab, "write -P 0x77 50M 1M")
    snapshot(lab, "s1")
    virsh("blockresize", lab.name, "vda", "32M")
    snapshot(lab, "s2")
    virsh("blockresize", lab.name, "vda", "64M")
    snapshot(lab, "s3")
    io(lab, "write -P 0x44 3M 1M")
    flush_guest(lab.name)
    if not running:
        virsh("destroy", lab.name)
        lab.running = False
    assert chain_files(lab.active) == [
        "s3.qcow2",
        "s2.qcow2",
        "s1.qcow2",
        "sn1.qcow2",
        "base.qcow2",
    ]
    return lab


def tail(lab: Lab, tmp: Path) -> bytes:
    """The guest's bytes at 50M (flushed first when it runs)."""
    if lab.running:
        flush_guest(lab.name)
    raw = tmp / "view.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", str(lab.active), str(raw)], check=True
    )
    with raw.open("rb") as view:
        view.seek(50 * MIB)
        data = view.read(4)
    raw.unlink()
    return data


def refuses_unchanged(lab: Lab, tmp: Path, *args: str) -> str:
    before, files = lab.guest_hash(tmp), chain_files(lab.active)
    proc = run_vshx(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: " in proc.stderr and "hint: " in proc.stderr and "Traceback" not in proc.stderr
    assert lab.guest_hash(tmp) == before and chain_files(lab.active) == files
    return proc.stderr


@pytest.mark.libvirt
@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
def test_a_commit_never_exposes_what_a_shrunk_layer_hides(tmp_path: Path, running: bool):
    lab = shrunk_lab(tmp_path, running)
    try:
        assert tail(lab, tmp_path) == b"\0\0\0\0"
        err = refuses_unchanged(
            lab, tmp_path, "commit", lab.name, "vda", "--top", "s1", "--base", "sn1"
        )
        assert "s1.qcow2 (32.0 MiB) is smaller than sn1.qcow2" in err and "--route pull" in err
        # s1's moment lives in sn1 under s1.qcow2, which is not the active layer: no pull
        # reaches it, so the delete refuses (virsh's own snapshot-delete exposes the tail)
        err = refuses_unchanged(lab, tmp_path, "snapshot-delete", lab.name, "s1")
        assert "smaller than sn1.qcow2" in err and "--metadata" in err
        assert sorted(snapshot_names(lab.name)) == ["s1", "s2", "s3", "sn1"]
        shorten = ("shorten", lab.name, "vda", "--drop", "s1")
        if running:  # libvirt pulls only into the active layer: no safe route
            assert "no safe route: commit: s1.qcow2 (32.0 MiB)" in refuses_unchanged(
                lab, tmp_path, *shorten
            )
        else:  # a safe rebase of s2 onto sn1 copies the view
            assert "# * pull" in run_vshx(*shorten, "--dry-run").stdout
        if not running:  # the pointer alone (rebase -u) of s2 past s1: its proof compares
            pointer = ("rebase", "--domain", lab.name, "--disk", "vda", "--top", "s2", "-u")
            err = refuses_unchanged(lab, tmp_path, *pointer, "-b", "sn1")
            assert f"differ at offset {50 * MIB}" in err
        forced = refuses_unchanged(
            lab, tmp_path, "flatten", lab.name, "vda", "--route", "commit", "--force"
        )
        assert "s1.qcow2 (32.0 MiB) is smaller than base.qcow2" in forced
        # flatten chooses by itself: the commit is unsafe, the pull copies the view
        before = lab.guest_hash(tmp_path)
        done = run_vshx("flatten", lab.name, "vda", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "# * pull" in done.stdout and "commit " in done.stdout
        flat = run_vshx("flatten", lab.name, "vda")
        assert flat.returncode == 0, flat.stderr
        assert chain_files(lab.active) == ["s3.qcow2"]
        assert lab.guest_hash(tmp_path) == before and tail(lab, tmp_path) == b"\0\0\0\0"
        qemu_check(lab.active)
    finally:
        destroy_lab(lab)


@pytest.mark.libvirt
def test_deleting_the_current_snapshot_over_a_larger_moment_pulls(tmp_path: Path):
    """s3's moment (s2.qcow2, 64M) under an active layer shrunk to 32M: the commit would grow
    the disk back to 64M; the pull keeps it as the guest sees it."""
    lab = shrunk_lab(tmp_path, running=True)
    try:
        virsh("blockresize", lab.name, "vda", "32M")
        before = lab.guest_hash(tmp_path)
        forced = refuses_unchanged(
            lab, tmp_path, "snapshot-delete", lab.name, "s3", "--route", "commit"
        )
        assert "the disk would grow to 64.0 MiB" in forced
        done = run_vshx("snapshot-delete", lab.name, "s3")
        assert done.returncode == 0, done.stderr
        assert chain_files(lab.active) == ["s3.qcow2", "s1.qcow2", "sn1.qcow2", "base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
        qemu_check(lab.active)
        assert sorted(snapshot_names(lab.name)) == ["s1", "s2", "sn1"]
        virsh("destroy", lab.name)
        virsh("start", lab.name)  # QEMU runs on the chain vshx reports
        assert chain_files(lab.active) == ["s3.qcow2", "s1.qcow2", "sn1.qcow2", "base.qcow2"]
    finally:
        destroy_lab(lab)
