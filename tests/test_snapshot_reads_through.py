"""Another domain's snapshot whose moment file is a layer of our chain reads through the
layers below it too (its qcow2 headers name them): a file vshx keeps for it keeps its whole
backing chain, and a write into a file below that moment is refused like one into the moment
itself (findings F10, F11, F12)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    Lab,
    define_domain,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt


@pytest.fixture(params=["disk-only", "memory"])
def reader(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, str, Path]]:
    """A shut-off lab x (base <- sn1 <- sn2 <- sn3 <- sn4) and a domain z that ran on x's
    sn2.qcow2, took the snapshot zs there (disk-only, or with its memory: its moment file is
    x's sn2.qcow2) and was then flattened by vshx: z's chain no longer holds any of x's files,
    zs's moment does."""
    lab = make_lab(tmp_path, running=False)
    other = f"{lab.name}-z"
    zdir = tmp_path / "z"
    zdir.mkdir()
    define_domain(other, {"vda": lab.layer("sn2")})
    try:
        overlay = f"vda,file={zdir / 'o1.qcow2'}"
        if request.param == "memory":
            started = virsh("start", other)
            assert started.returncode == 0, started.stderr
            made = virsh(
                "snapshot-create-as", other, "zs", "--memspec", f"file={zdir / 'zs.mem'}",
                "--diskspec", overlay,
            )  # fmt: skip
            virsh("destroy", other)
        else:
            made = virsh("snapshot-create-as", other, "zs", "--disk-only", "--diskspec", overlay)
        assert made.returncode == 0, made.stderr
        flat = run_vshx("flatten", other, "vda", "--route", "pull")
        assert flat.returncode == 0, flat.stderr
        yield lab, other, zdir
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            virsh("destroy", other)  # the memory variant's, if a step above failed
        virsh("undefine", other, "--snapshots-metadata")
        destroy_lab(lab)


def readable(path: Path) -> bool:
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_a_kept_moment_keeps_the_files_it_reads_through(
    reader: tuple[Lab, str, Path], tmp_path: Path
) -> None:
    lab, other, _zdir = reader
    moment = guest_hash(lab.layer("sn2"), tmp_path)
    done = run_vshx("commit", lab.name, "vda", "--top", "sn2.qcow2", "--delete")
    assert done.returncode == 0, done.stderr
    assert f"keeping {lab.layer('sn2')}" in done.stderr, done.stderr
    assert f"keeping {lab.layer('sn1')}" in done.stderr, done.stderr
    assert "reads through it" in done.stderr, done.stderr
    assert lab.layer("sn1").exists() and lab.layer("base").exists()
    assert readable(lab.layer("sn2"))
    assert guest_hash(lab.layer("sn2"), tmp_path) == moment


def test_lab_destroy_keeps_the_chain_below_a_kept_moment(reader: tuple[Lab, str, Path]) -> None:
    lab, other, _zdir = reader
    planned = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    removed = [line for line in planned.stdout.splitlines() if line.startswith("rm ")]
    for name in ("base", "sn1", "sn2"):
        assert all(str(lab.layer(name)) not in line for line in removed), planned.stdout
    done = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
    assert done.returncode == 0, done.stderr
    assert all(lab.layer(name).exists() for name in ("base", "sn1", "sn2"))
    assert readable(lab.layer("sn2"))


def test_a_write_below_another_domains_moment_is_refused(
    reader: tuple[Lab, str, Path], tmp_path: Path
) -> None:
    lab, other, _zdir = reader
    before = file_state(lab.dir)
    into_sn1 = ("commit", lab.name, "vda", "--top", "sn3.qcow2", "--base", "sn1.qcow2")
    planned = run_vshx(*into_sn1, "--dry-run")
    assert planned.returncode == 1 and "would change what these see" in planned.stderr
    refused = run_vshx(*into_sn1)
    assert refused.returncode == 1, refused.stderr
    assert "would change what these see" in refused.stderr, refused.stderr
    assert f"domain {other} snapshot zs" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and file_state(lab.dir) == before
    flat = run_vshx("flatten", lab.name, "vda", "--route", "commit")
    assert flat.returncode == 1, flat.stderr
    assert file_state(lab.dir) == before
