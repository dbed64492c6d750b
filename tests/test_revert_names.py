"""snapshot-revert names its new overlays from the starting state (the moment file and the
snapshot's name), never from the clock.

Before, each overlay was ``<moment file without suffix>.<int(time.time())>``, libvirt's default
for an external snapshot's files: a ``--dry-run`` printed a second before the real run named
other files than the real run made, so ``vshx ... --dry-run | sh -e`` did not reach the real
run's end state, and two dry runs differed.  Now the name is
``<stem>.<snapshot>-revert.qcow2``, ``-revert2``... when taken, chosen when the plan is made;
the real run takes the name with ``O_EXCL`` (checks.new_file_step), so a file that appears
meanwhile is never written over.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    domain_source,
    guest_hash,
    make_lab,
    qemu_check,
    run_vshx,
    snapshot_names,
    snapshot_sources,
    virsh,
)
from vshx_plugins.snapshot_revert import file_piece, free_overlay_name, overlay_name

from vshx.errors import VshxError
from vshx.merging import checks
from vshx.plans.plan import Step

HOSTILE = ["a/b", "../../etc/passwd", "..", "a b", "it's", 'say "x"', "new\nline", "$(touch x)"]


# -- the names, without libvirt ----------------------------------------------------------------


def test_the_name_is_the_moment_files_stem_and_the_snapshot() -> None:
    assert overlay_name("/d/sn1.qcow2", "sn2") == "/d/sn1.sn2-revert.qcow2"
    assert overlay_name("/d/sn1.qcow2", "sn2", 2) == "/d/sn1.sn2-revert2.qcow2"
    assert overlay_name("/d/disk", "s") == "/d/disk.s-revert.qcow2"
    assert overlay_name("/d.x/disk", "s") == "/d.x/disk.s-revert.qcow2"
    assert overlay_name("/d/base.img", "before update") == "/d/base.before_update-revert.qcow2"


@pytest.mark.parametrize("name", [*HOSTILE, "\udcff\udcfe", "tab\there", "é-ü_1.2+3"])
def test_a_snapshot_name_stays_one_safe_piece_of_a_file_name(name: str) -> None:
    path = overlay_name("/d/sn1.qcow2", name)
    assert os.path.dirname(path) == "/d"  # a '/' or '..' cannot leave the directory
    piece = os.path.basename(path)[len("sn1.") : -len("-revert.qcow2")]
    assert piece == file_piece(name)
    assert all(c.isalnum() or c in "._+-" for c in piece), piece
    assert os.fsencode(piece).decode("utf-8")  # a valid file name on any UTF-8 host


def test_a_long_snapshot_name_is_cut_to_64_bytes_on_a_character() -> None:
    assert len(file_piece("x" * 300)) == 64
    cut = file_piece("é" * 100)  # 2 bytes each: never half a character
    assert cut == "é" * 32


def test_the_next_free_name_counts_past_files_and_other_disks(tmp_path: Path) -> None:
    moment = tmp_path / "sn1.qcow2"
    moment.write_bytes(b"")
    (tmp_path / "sn1.sn2-revert.qcow2").write_bytes(b"kept")
    os.symlink(tmp_path / "missing", tmp_path / "sn1.sn2-revert2.qcow2")  # dangling: taken
    taken: set[str] = set()
    first = free_overlay_name(str(moment), "sn2", taken)
    assert first == str(tmp_path / "sn1.sn2-revert3.qcow2")
    # a second disk whose moment file has the same stem in the same directory
    assert free_overlay_name(str(tmp_path / "sn1.raw"), "sn2", taken) == str(
        tmp_path / "sn1.sn2-revert4.qcow2"
    )
    assert free_overlay_name(str(moment), "sn2", set()) == first  # the same state, the same name


def test_a_name_too_long_for_a_file_is_refused_when_planned(tmp_path: Path) -> None:
    moment = tmp_path / ("m" * 200 + ".qcow2")
    with pytest.raises(VshxError, match="too long"):
        free_overlay_name(str(moment), "s" * 60, set())


def create(path: Path, backing: Path) -> Step:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing)]
    return checks.new_file_step("create", [*argv, str(path)], str(path))


def test_the_create_step_never_writes_over_a_file_that_appeared(tmp_path: Path) -> None:
    """The name appears after the check step passed: qemu-img would truncate it; the step
    refuses instead, with nothing changed (before: a plain qemu-img create step)."""
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    path = tmp_path / "new.qcow2"
    checks.absent_step(str(path)).run()
    path.write_bytes(b"a user's file")  # between the check and the create
    with pytest.raises(VshxError, match="exists: vshx does not write over it") as caught:
        create(path, base).run()
    assert caught.value.clean
    assert path.read_bytes() == b"a user's file"
    os.unlink(path)
    os.symlink(tmp_path / "elsewhere", path)  # a dangling link: qemu-img would follow it
    with pytest.raises(VshxError, match="exists"):
        create(path, base).run()
    assert not (tmp_path / "elsewhere").exists()


def test_the_create_step_makes_the_overlay_or_leaves_nothing(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    path = tmp_path / "new.qcow2"
    create(path, base).run()
    assert chain_files(path) == ["new.qcow2", "base.qcow2"]
    failed = tmp_path / "failed.qcow2"
    with pytest.raises(VshxError):
        create(failed, tmp_path / "no such base.qcow2").run()
    assert not os.path.lexists(failed)  # the empty file the step made is gone again


# -- on real domains ---------------------------------------------------------------------------


def revert(lab: Lab, snapshot: str, *extra: str) -> subprocess.CompletedProcess[str]:
    done = run_vshx("snapshot-revert", lab.name, snapshot, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def end_state(lab: Lab) -> dict[str, object]:
    """What a revert leaves, by file name (labs live in different directories)."""
    sources = {d: domain_source(lab.name, inactive=True, disk=d) for d in lab.targets}
    assert all(os.path.dirname(p) == str(lab.dir) for p in sources.values()), sources
    made = {
        s: {d: os.path.basename(p) for d, p in snapshot_sources(lab.name, s)[1].items()}
        for s in snapshot_names(lab.name)
    }
    return {
        "sources": {d: os.path.basename(p) for d, p in sources.items()},
        "chains": {d: chain_files(lab.active_of(d)) for d in lab.targets},
        "snapshots": made,
        "current": virsh("snapshot-current", lab.name, "--name").stdout.strip(),
        "files": sorted(p.name for p in lab.dir.iterdir() if not p.name.startswith(".vshx")),
    }


@pytest.mark.libvirt
def test_two_dry_runs_seconds_apart_print_the_same_script(offline_lab: Lab) -> None:
    lab = offline_lab
    files = sorted(p.name for p in lab.dir.iterdir())
    first = revert(lab, "sn2", "--dry-run").stdout
    time.sleep(1.1)  # the old names came from int(time.time())
    assert revert(lab, "sn2", "--dry-run").stdout == first
    assert f"qemu-img create -q -f qcow2 -F qcow2 -b {lab.layer('sn1')} " in first
    assert f"{lab.dir}/sn1.sn2-revert.qcow2\n" in first, first
    assert sorted(p.name for p in lab.dir.iterdir()) == files  # a dry run changes nothing


@pytest.mark.libvirt
@pytest.mark.parametrize(
    ("snapshot", "disks"), [("sn2", 1), ("sn4", 2)], ids=["with-children", "leaf-two-disks"]
)
def test_the_printed_script_and_the_real_run_end_alike(
    tmp_path: Path, snapshot: str, disks: int
) -> None:
    """Two identical shut-off labs in directories whose names need quoting: one reverted by
    its --dry-run script under ``sh -e``, the other by vshx a second later.  The same files,
    definition (domblklist), chains (qemu-img), snapshot metadata and guest view."""
    labs = [
        make_lab(tmp_path, running=False, disks=disks, dirname=f'it\'s "lab" {n}') for n in (1, 2)
    ]
    try:
        moments = [lab.record_moments(tmp_path)[snapshot] for lab in labs]
        scripted, real = labs
        script = revert(scripted, snapshot, "--dry-run").stdout
        time.sleep(1.1)
        revert(real, snapshot)
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr + script
        states = [end_state(lab) for lab in labs]
        assert states[0] == states[1]
        new = "sn1.sn2-revert.qcow2" if snapshot == "sn2" else "sn3.sn4-revert.qcow2"
        assert states[1]["sources"]["vda"] == new
        assert states[1]["chains"]["vda"][:2] == [new, new.split(".")[0] + ".qcow2"]
        assert states[1]["current"] == snapshot
        for lab, moment in zip(labs, moments, strict=True):
            for disk in lab.targets:
                assert guest_hash(lab.active_of(disk), tmp_path) == moment[disk]
                qemu_check(lab.active_of(disk))
    finally:
        for lab in labs:
            destroy_lab(lab)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.libvirt
def test_a_second_revert_to_the_same_snapshot_makes_a_second_file(
    offline_lab: Lab, tmp_path: Path
) -> None:
    lab = offline_lab
    moment = lab.record_moments(tmp_path)["sn2"]["vda"]
    revert(lab, "sn2")
    first = lab.dir / "sn1.sn2-revert.qcow2"
    assert lab.active == first
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x55 0 64k", str(first)], check=True
    )
    kept = digest(first)  # the guest's writes on the branch the next revert leaves behind
    plan = revert(lab, "sn2", "--dry-run").stdout
    second = lab.dir / "sn1.sn2-revert2.qcow2"
    assert f"-b {lab.layer('sn1')} {second}\n" in plan, plan
    revert(lab, "sn2")
    assert lab.active == second
    assert digest(first) == kept  # kept, never written over nor reused
    assert "nothing is deleted: vda: sn1.sn2-revert.qcow2 (" in plan, plan  # left behind, kept
    assert chain_files(second) == ["sn1.sn2-revert2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == moment
    assert "sn1.sn2-revert3.qcow2" in revert(lab, "sn2", "--dry-run").stdout


@pytest.mark.libvirt
def test_a_name_taken_after_the_dry_run_stops_its_script(offline_lab: Lab) -> None:
    """The script's check line stops ``sh -e`` before qemu-img writes over the file."""
    lab = offline_lab
    script = revert(lab, "sn2", "--dry-run").stdout
    planned = lab.dir / "sn1.sn2-revert.qcow2"
    planned.write_bytes(b"a user's file")
    ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
    assert ran.returncode != 0
    assert planned.read_bytes() == b"a user's file"
    assert lab.active == lab.layer("sn4")
    revert(lab, "sn2")  # planned again: the next free name
    assert lab.active == lab.dir / "sn1.sn2-revert2.qcow2"
    assert planned.read_bytes() == b"a user's file"


@pytest.mark.libvirt
def test_a_snapshot_name_with_spaces_and_quotes_stays_in_the_directory(
    offline_lab: Lab, tmp_path: Path
) -> None:
    """libvirt refuses a '/' in a snapshot name (the unit tests above cover it); a space, quotes
    and a command substitution reach the file name as ``_``, in the moment file's directory,
    and the printed script runs as the real run does."""
    lab = offline_lab
    name = 'it\'s "odd" $(touch pwned)'
    odd = lab.dir / "odd.qcow2"
    virsh("snapshot-create-as", lab.name, name, "--disk-only", "--diskspec", f"vda,file={odd}")
    around = sorted(os.listdir(lab.dir.parent))
    script = revert(lab, name, "--dry-run").stdout
    ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + script
    new = lab.dir / "sn4.it_s__odd____touch_pwned_-revert.qcow2"
    assert lab.active == new
    assert chain_files(new)[:2] == [new.name, "sn4.qcow2"]
    revert(lab, name)
    assert lab.active == lab.dir / "sn4.it_s__odd____touch_pwned_-revert2.qcow2"
    assert sorted(os.listdir(lab.dir.parent)) == around
    assert not (tmp_path / "pwned").exists() and not (lab.dir / "pwned").exists()
    assert virsh("snapshot-current", lab.name, "--name").stdout.strip() == name


@pytest.mark.libvirt
def test_a_name_taken_midway_says_the_steps_before_it_changed_things(
    made, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two disks: vdb's overlay name is taken right after vda's overlay was made (run in this
    process to land in that moment).  The refusal must not say "nothing was changed": vda's new
    overlay exists (an outside attacker's finding); the user's file is untouched."""
    from vshx.frontends import cli
    from vshx.storage import host

    lab = made(running=False, disks=2)
    real_create = host.create_new
    calls: list[str] = []

    def create_then_race(path: str) -> None:
        calls.append(path)
        if len(calls) == 1:  # vda's overlay: made; then someone takes vdb's planned name
            real_create(path)
            taken = Path(path).parent / Path(path).name.replace("sn1.", "vdb-sn1.", 1)
            taken.write_bytes(b"someone else's file")
            return
        real_create(path)

    monkeypatch.setattr(host, "create_new", create_then_race)
    status = cli.main(["-c", URI, "snapshot-revert", lab.name, "sn2"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "exists: vshx does not write over it" in err and "nothing was changed" not in err
    assert "ran and changed" in err and "Traceback" not in err
    assert (lab.dir / "vdb-sn1.sn2-revert.qcow2").read_bytes() == b"someone else's file"
