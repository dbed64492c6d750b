"""snapshot-revert's new overlays are vshx's own files: none is left behind by vshx.

- lab-destroy removes the overlays snapshot-revert made in the lab's directory
  (``<stem>.<snap>-revert.qcow2``, ``-revert2``...), known by the identity vshx recorded when it
  made them (the domain's metadata), and never a file a user put there under such a name.
  Before, it kept them, and with them the lab files they read (base, sn1: "still used by"),
  the marker and the directory.
- A revert that stops midway (vdb's overlay name taken after vda's overlay was made) removes
  the overlay it made, which no definition names, and says so.  Before, vda's overlay stayed,
  named by nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    WAITING_QEMU_IMG,
    Lab,
    domain_exists,
    killed_at_qemu_img,
    run_vshx,
    snapshot_names,
)

pytestmark = pytest.mark.libvirt


def revert(lab: Lab, snapshot: str) -> None:
    proc = run_vshx("snapshot-revert", lab.name, snapshot)
    assert proc.returncode == 0, proc.stderr


def test_lab_destroy_removes_the_overlays_snapshot_revert_made(made) -> None:
    lab = made(running=False)
    revert(lab, "sn2")
    revert(lab, "sn2")
    revert(lab, "sn3")
    overlays = ["sn1.sn2-revert.qcow2", "sn1.sn2-revert2.qcow2", "sn2.sn3-revert.qcow2"]
    assert all((lab.dir / name).exists() for name in overlays)
    # a user's own image under a name snapshot-revert would give: never vshx's to remove
    mine = lab.dir / "sn2.sn3-revert2.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mine), "1M"], check=True)
    done = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
    assert done.returncode == 0, done.stderr
    assert not domain_exists(lab.name)
    assert sorted(p.name for p in lab.dir.iterdir()) == [mine.name], done.stderr
    assert "still used by" not in done.stderr


def test_lab_destroy_keeps_a_file_put_under_a_revert_overlays_name(made) -> None:
    """The overlay vshx made was replaced by another file of that name: not vshx's any more."""
    lab = made(running=False)
    revert(lab, "sn2")
    revert(lab, "sn3")  # the domain leaves sn1.sn2-revert.qcow2 behind
    first = lab.dir / "sn1.sn2-revert.qcow2"
    first.unlink()
    first.write_bytes(b"a user's file")
    done = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in lab.dir.iterdir()) == [first.name]
    assert first.read_bytes() == b"a user's file"


def test_a_revert_stopped_midway_removes_the_overlay_it_made(
    made, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two disks: vdb's overlay name is taken right after vda's overlay was made (run in this
    process to land in that moment).  vda's overlay, made by this run and named by no
    definition, is removed again; the user's file stays, the domain is as before."""
    from vshx.frontends import cli
    from vshx.storage import host

    lab = made(running=False, disks=2)
    before = sorted(p.name for p in lab.dir.iterdir())
    real_create = host.create_new
    calls: list[str] = []

    def create_then_race(path: str) -> None:
        calls.append(path)
        real_create(path)
        if len(calls) == 1:  # vda's overlay: made; then someone takes vdb's planned name
            taken = Path(path).parent / Path(path).name.replace("sn1.", "vdb-sn1.", 1)
            taken.write_bytes(b"someone else's file")

    monkeypatch.setattr(host, "create_new", create_then_race)
    status = cli.main(["-c", URI, "snapshot-revert", lab.name, "sn2"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "exists: vshx does not write over it" in err and "Traceback" not in err
    assert (
        "vshx then removed the new overlays this run made" in err and "sn1.sn2-revert.qcow2" in err
    )
    assert not (lab.dir / "sn1.sn2-revert.qcow2").exists()
    assert (lab.dir / "vdb-sn1.sn2-revert.qcow2").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in lab.dir.iterdir()) == sorted(
        [*before, "vdb-sn1.sn2-revert.qcow2"]
    )
    assert lab.active == lab.layer("sn4") and snapshot_names(lab.name) == [
        "sn1",
        "sn2",
        "sn3",
        "sn4",
    ]


MADE = "https://vshx.invalid/made"


@pytest.mark.parametrize(
    ("recorded", "written"),
    [(True, False), (False, False), (True, True)],
    ids=["recorded", "record-lost", "written-since"],
)
def test_recover_removes_the_overlay_a_killed_revert_made(
    made, tmp_path: Path, recorded: bool, written: bool
) -> None:
    """atk9 F9: a revert killed (-9) at its `qemu-img create` (which then runs to its end) left
    its new overlay, named by nothing, after `recover`.  recover now removes it: the journal
    says the plan was making it, and vshx's record says it is the very file vshx made.  Where
    that record is gone, nothing proves the file vshx's: recover keeps it and says how to
    remove it; one written since (atk11 F2: qemu-io wrote 1 MiB into it) holds a user's data
    and is kept, named."""
    lab = made(running=False)
    overlay = lab.dir / "sn1.sn2-revert.qcow2"
    killed_at_qemu_img(
        tmp_path,
        WAITING_QEMU_IMG,
        ("snapshot-revert", lab.name, "sn2"),
        VSHX_STOP_AT="*create*",
    )
    assert overlay.exists()
    if not recorded:
        virsh = ["virsh", "-c", URI, "metadata", lab.name, MADE, "--remove", "--config"]
        subprocess.run(virsh, check=True, capture_output=True)
    if written:
        write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", str(overlay)]
        subprocess.run(write, check=True, capture_output=True)
    removed = recorded and not written
    planned = run_vshx("recover", lab.name, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert (f"rm -f -- {overlay}" in planned.stdout) is removed, planned.stdout
    done = run_vshx("recover", lab.name)
    assert done.returncode == 0, done.stderr
    assert overlay.exists() is not removed
    if removed:
        assert f"deleted {overlay}" in done.stdout + done.stderr
    else:
        assert f"kept {overlay}" in done.stderr
    if not recorded:
        assert f"rm -- {overlay}" in done.stderr
    assert "sn4.qcow2" in run_vshx("chain", lab.name, "vda").stdout  # the disk as before
    revert(lab, "sn2")  # and the revert, run again, works (another name where one is kept)
