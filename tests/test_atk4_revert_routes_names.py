"""Three findings of an outside attack (atk4 F-D, F-B, F-C), against real libvirtd and qemu-img.

- F-D: ``snapshot-revert`` was refused, ``--force`` too, when the domain's active file was
  missing or its header damaged, with a false reason ("the domain has no such disk now",
  "sn1.qcow2 left the chain and vshx has no record of how"), though the snapshot's moment
  files were untouched.  A revert needs only those: it now runs, the guest sees the moment,
  the domain starts, and the file it reverts away from is left as it is (never deleted).
  Where the layers below are not the chain the definition names, it is still refused, with
  a reason that says so.
- F-B: ``shorten --drop`` refused outright when the active layer holds an internal snapshot,
  though its commit route leaves that file's view alone (only re-pointed, as ``commit --top``
  does): it now takes the commit route, and the pull route is shown unsafe in the table.
- F-C: a bare layer reached through a hard link was planned as the domain's commit, but the
  plan's note named the hard link (``--top alias.qcow2``): a command that fails.  It names the
  layer as the chain does.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    Lab,
    destroy_lab,
    domain_source,
    file_state,
    guest_hash,
    make_lab,
    qemu_check,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt


@pytest.fixture
def shut_lab(tmp_path: Path) -> Iterator[Lab]:
    """base <- sn1 <- sn2 <- sn3 (active), shut off; each snapshot's moment recorded."""
    lab = make_lab(tmp_path, running=False, layers=3)
    lab.record_moments(tmp_path)
    yield lab
    if virsh("domstate", lab.name).stdout.strip() == "running":  # started by the revert
        virsh("destroy", lab.name)
    destroy_lab(lab)


def break_active(lab: Lab, how: str) -> Path:
    """The active layer made unreadable: moved away (a lost file) or its header zeroed."""
    active = lab.layer("sn3")
    if how == "missing":
        active.rename(lab.dir / "sn3-renamed.qcow2")
    else:
        with active.open("r+b") as f:
            f.write(b"\0" * 512)
    return active


@pytest.mark.parametrize("how", ["missing", "damaged"])
def test_revert_works_when_the_active_layer_cannot_be_read(
    shut_lab: Lab, tmp_path: Path, how: str
) -> None:
    active = break_active(shut_lab, how)
    kept = file_state(shut_lab.dir)
    listed = run_vshx("snapshot-list", shut_lab.name)
    assert listed.returncode == 0, listed.stderr
    assert "no such disk" not in listed.stdout and "left the chain" not in listed.stdout
    assert "sn1.qcow2 (intact)" in listed.stdout, listed.stdout
    dry = run_vshx("snapshot-revert", shut_lab.name, "sn2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "sn3.qcow2" in dry.stdout and "neither read nor deleted" in dry.stdout
    assert "rm " not in dry.stdout
    proc = run_vshx("snapshot-revert", shut_lab.name, "sn2", "--running")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert virsh("domstate", shut_lab.name).stdout.strip() == "running"
    new = Path(domain_source(shut_lab.name))
    assert new == shut_lab.dir / "sn1.sn2-revert.qcow2"
    qemu_check(new)
    assert guest_hash(new, tmp_path) == shut_lab.moments["sn2"]["vda"]
    # nothing that was there changed: the file reverted away from is kept as it was
    after = file_state(shut_lab.dir)
    assert {k: v for k, v in after.items() if k in kept} == kept
    assert os.path.exists(active) == (how == "damaged")


def test_revert_past_an_unproven_chain_is_refused_saying_why(shut_lab: Lab) -> None:
    """The layers below the missing active one are not the chain the definition names (sn2
    was re-pointed by hand onto base): nothing proves sn2's overlay sat on sn1 since."""
    break_active(shut_lab, "missing")
    subprocess.run(
        ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(shut_lab.layer("base")),
         str(shut_lab.layer("sn2"))],
        check=True,
    )  # fmt: skip
    before = file_state(shut_lab.dir)
    for extra in ([], ["--force"]):
        proc = run_vshx("snapshot-revert", shut_lab.name, "sn2", *extra)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "the active layer sn3.qcow2 is missing" in proc.stderr, proc.stderr
        assert "no such disk" not in proc.stderr
    assert file_state(shut_lab.dir) == before


def internal_view(path: Path, tmp: Path) -> str:
    """What the internal snapshot int1 of ``path`` shows (its own clusters, the rest read
    through the file's backing chain as it is now)."""
    raw = tmp / "int1.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-l", "snapshot.name=int1", "-O", "raw", str(path),
         str(raw)],
        check=True,
    )  # fmt: skip
    return guest_hash(raw, tmp)


def test_shorten_takes_the_commit_route_past_an_internal_snapshot_above(
    tmp_path: Path,
) -> None:
    lab = make_lab(tmp_path, running=False, layers=2)  # base <- sn1 <- sn2 (active)
    try:
        active = lab.layer("sn2")
        subprocess.run(["qemu-img", "snapshot", "-c", "int1", str(active)], check=True)
        moment, seen = internal_view(active, tmp_path), lab.guest_hash(tmp_path)
        forced = run_vshx("shorten", lab.name, "vda", "--drop", "sn1.qcow2", "--route", "pull")
        assert forced.returncode == 1 and "int1" in forced.stderr, forced.stderr
        proc = run_vshx("shorten", lab.name, "vda", "--drop", "sn1.qcow2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        qemu_check(active)
        qemu_check(lab.layer("base"))
        assert lab.guest_hash(tmp_path) == seen
        assert internal_view(active, tmp_path) == moment
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(active)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "base.qcow2" in info and "sn1.qcow2" not in info
    finally:
        destroy_lab(lab)


def test_a_hard_linked_layer_is_planned_under_the_chains_name(
    shut_lab: Lab, tmp_path: Path
) -> None:
    other = tmp_path / "x"
    other.mkdir()
    alias = other / "alias.qcow2"
    os.link(shut_lab.layer("sn2"), alias)
    before = file_state(shut_lab.dir)
    proc = run_vshx("commit", str(alias), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    note = next(line for line in proc.stdout.splitlines() if "planned as" in line)
    command = note.split("planned as ", 1)[1].split(", which", 1)[0]
    assert "alias.qcow2" not in command and "--top sn2.qcow2" in command, note
    words = shlex.split(command)
    assert words[0] == "vshx"
    again = run_vshx(*words[1:], "--dry-run")
    assert again.returncode == 0, again.stderr
    assert file_state(shut_lab.dir) == before
