"""A storage pool's volume is a user of the file it reaches, whatever its name (atk4 F-H, F-I).

A volume is compared by the file it reaches, as another domain's disk is: a symlink in the
pool's directory or a hard link to a layer keeps that layer from an rm (snapshot-cleanup
--delete-files, commit --delete) and refuses a commit that writes into it; a pool whose
directory holds the chain's own images by their own names is no user.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import URI, Lab, file_state, guest_hash, run_vshx, virsh

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


@contextmanager
def dir_pool(name: str, directory: Path, start: bool = True) -> Iterator[str]:
    """A dir pool on ``directory`` (started and refreshed), undefined afterwards."""
    virsh("pool-define-as", name, "dir", "--target", str(directory))
    try:
        if start:
            virsh("pool-start", name)
            virsh("pool-refresh", name)
        yield name
    finally:
        for argv in (["pool-destroy", name], ["pool-undefine", name]):
            subprocess.run(["virsh", "-c", URI, *argv], capture_output=True, timeout=120)


def volumes(pool: str) -> list[str]:
    virsh("pool-refresh", pool)
    out = virsh("vol-list", pool).stdout
    return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]


def link(kind: str, target: Path, name: Path) -> None:
    if kind == "hardlink":
        os.link(target, name)
    else:
        name.symlink_to(target)


LINKS = ["symlink", "hardlink"]


@pytest.mark.parametrize("kind", [*LINKS, "symlink-inactive-pool"])
def test_cleanup_keeps_a_layer_a_pool_volume_reaches(offline_lab: Lab, tmp_path: Path, kind: str):
    lab = offline_lab
    sn3 = lab.layer("sn3")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    volume = pool_dir / "vol-sn3.qcow2"
    link(kind.split("-")[0], sn3, volume)  # before the pull: a link made later is a change
    seen = guest_hash(volume, tmp_path)
    ok = run_vshx("pull", lab.name, "vda", "--base", "sn1")  # sn2, sn3 leave the chain
    assert ok.returncode == 0, ok.stderr
    active = kind != "symlink-inactive-pool"
    with dir_pool(f"{lab.name}-pool", pool_dir, start=active) as pool:
        dry = run_vshx("snapshot-cleanup", lab.name, "--delete-files", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"rm -f -- {sn3}\n" not in dry.stdout, dry.stdout
        said = dry.stdout + dry.stderr
        assert f"keeping {sn3}" in said and f"pool {pool} volume vol-sn3.qcow2" in said, said
        done = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
        assert done.returncode == 0, done.stderr
        assert sn3.exists() and guest_hash(volume, tmp_path) == seen
        if active:
            assert "vol-sn3.qcow2" in volumes(pool)


@pytest.mark.parametrize("kind", LINKS)
def test_commit_delete_keeps_a_layer_a_pool_volume_reaches(
    offline_lab: Lab, tmp_path: Path, kind: str
):
    lab = offline_lab
    sn1 = lab.layer("sn1")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    volume = pool_dir / "vol-sn1.qcow2"
    link(kind, sn1, volume)
    seen = guest_hash(volume, tmp_path)
    args = ["commit", lab.name, "vda", "--top", "sn1", "--delete"]
    with dir_pool(f"{lab.name}-pool", pool_dir) as pool:
        dry = run_vshx(*args, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"rm -f -- {sn1}\n" not in dry.stdout, dry.stdout
        assert f"pool {pool} volume vol-sn1.qcow2" in dry.stdout + dry.stderr
        done = run_vshx(*args)
        assert done.returncode == 0, done.stderr
        assert f"keeping {sn1}" in done.stderr and f"pool {pool} volume" in done.stderr
        assert sn1.exists() and "vol-sn1.qcow2" in volumes(pool)
        assert guest_hash(volume, tmp_path) == seen


@pytest.mark.parametrize("kind", LINKS)
def test_commit_into_a_file_a_pool_volume_reaches_is_refused(
    offline_lab: Lab, tmp_path: Path, kind: str
):
    lab = offline_lab
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    volume = pool_dir / "tmpl.qcow2"
    link(kind, lab.layer("base"), volume)
    seen = guest_hash(volume, tmp_path)
    before = file_state(lab.dir)
    args = ["commit", lab.name, "vda", "--top", "sn1"]
    with dir_pool(f"{lab.name}-pool", pool_dir) as pool:
        for extra in (["--dry-run"], []):
            proc = run_vshx(*args, *extra)
            assert proc.returncode == 1, (extra, proc.stdout, proc.stderr)
            assert proc.stderr.startswith("error: refusing: committing into"), proc.stderr
            assert f"pool {pool} volume tmpl.qcow2" in proc.stderr
            assert file_state(lab.dir) == before
        assert guest_hash(volume, tmp_path) == seen and "tmpl.qcow2" in volumes(pool)
        # a merge that leaves that file alone still runs with the pool there
        ok = run_vshx("commit", lab.name, "vda", "--base", "sn2", "--top", "sn3", "--delete")
        assert ok.returncode == 0, ok.stderr
        assert not lab.layer("sn3").exists()
        assert guest_hash(volume, tmp_path) == seen


def test_a_pool_on_the_chains_own_directory_is_no_user(offline_lab: Lab, tmp_path: Path):
    """The pool lists the chain's own images by their own names (as the default pool lists
    disks made in it): merges and deletes run as without it."""
    lab = offline_lab
    seen = lab.guest_hash(tmp_path)
    with dir_pool(f"{lab.name}-pool", lab.dir) as pool:
        assert "sn1.qcow2" in volumes(pool)
        ok = run_vshx("commit", lab.name, "vda", "--top", "sn1", "--delete")
        assert ok.returncode == 0, ok.stderr
        assert not lab.layer("sn1").exists()
        ok = run_vshx("pull", lab.name, "vda", "--base", "sn2")
        assert ok.returncode == 0, ok.stderr
        ok = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
        assert ok.returncode == 0, ok.stderr
        assert not lab.layer("sn3").exists()
    assert lab.guest_hash(tmp_path) == seen
