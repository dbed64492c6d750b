"""Snapshots as points in time, on domains built only with libvirt's commands.

Each lab (lab-create) gets its snapshots from ``virsh snapshot-create-as --disk-only --atomic`` with
guest writes (through QEMU) before each one; right after building, every snapshot's moment is
recorded per disk as the hash of what the file its metadata names shows.  After a layer command
and ``snapshot-cleanup``, every remaining snapshot must name an existing file that shows exactly
that moment, the guest must see the same bytes, and ``# keeps:``/``# loses:`` must have said
which snapshots survive.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    Lab,
    chain_files,
    define_domain,
    guest_hash,
    qemu_check,
    run_vshx,
    snapshot_names,
    virsh,
)

from vshx.storage.identity import birth_ns

pytestmark = pytest.mark.libvirt


def guest_view(lab: Lab, tmp: Path) -> dict[str, str]:
    return {disk: lab.guest_hash(tmp, disk) for disk in lab.targets}


def check_domain(lab: Lab, tmp: Path, before: dict[str, str]) -> None:
    """Every remaining snapshot shows its moment, the guest sees the same bytes, the images
    are clean, and QEMU runs on the chain vshx reports."""
    lab.check_moments(tmp)
    assert guest_view(lab, tmp) == before
    for disk in lab.targets:
        for layer in chain_files(lab.active_of(disk)):
            qemu_check(lab.dir / layer)
    if not lab.running:
        virsh("start", lab.name)
        lab.running = True
        assert guest_view(lab, tmp) == before
        virsh("destroy", lab.name)
        lab.running = False
    for disk in lab.targets:
        chain = run_vshx("chain", lab.name, disk)
        assert chain.returncode == 0, chain.stderr


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run_vshx(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def said(script: str, kind: str) -> str:
    """The text after ``# keeps:`` (or ``# keeps on vda:``) in a printed plan."""
    for line in script.splitlines():
        if line.startswith(f"# {kind}"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no # {kind} line in:\n{script}")


KINDS = [(True, 1), (False, 1), (True, 2), (False, 2)]


@pytest.mark.parametrize(("running", "disks"), KINDS)
def test_commit_middle_then_cleanup(made, tmp_path: Path, running: bool, disks: int):
    lab = made(running, disks)
    before = guest_view(lab, tmp_path)
    for disk in lab.targets:
        args = ["commit", lab.name, disk, "--top", str(lab.layer("sn2", disk))]
        args += ["--base", str(lab.layer("sn1", disk))]
        plan = ok(*args, "--dry-run").stdout
        assert said(plan, "keeps").startswith("sn1 (")
        assert "sn3 (moves into" in said(plan, "keeps") and said(plan, "loses").startswith("sn2")
        ok(*args)
    proc = ok("snapshot-cleanup", lab.name)
    assert "re-pointed" in proc.stdout
    assert snapshot_names(lab.name) == ["sn1", "sn3", "sn4"]
    check_domain(lab, tmp_path, before)


def test_half_merged_two_disk_snapshot_is_reported_with_its_finish(made, tmp_path: Path):
    lab = made(True, 2)
    top, base = lab.layer("sn2"), lab.layer("sn1")
    plan = ok("commit", lab.name, "vda", "--top", str(top), "--base", str(base), "--dry-run")
    assert "half-merged" in plan.stdout
    ok("commit", lab.name, "vda", "--top", str(top), "--base", str(base))
    proc = ok("snapshot-cleanup", lab.name)
    assert "half-merged" in proc.stdout and "sn2" in snapshot_names(lab.name)
    finish = next(w for w in proc.stdout.split("to finish: ")[1:])
    words = finish.split()
    assert words[:4] == ["vshx", "commit", lab.name, "vdb"]
    ok(*words[1:8])
    ok("snapshot-cleanup", lab.name)
    assert snapshot_names(lab.name) == ["sn1", "sn3", "sn4"]
    lab.check_moments(tmp_path)


@pytest.mark.parametrize(("running", "disks"), [(True, 1), (False, 2)])
def test_pull_keeps_moments_out_of_the_chain_until_their_files_go(
    made, tmp_path: Path, running: bool, disks: int
):
    lab = made(running, disks)
    before = guest_view(lab, tmp_path)
    for disk in lab.targets:
        args = ["pull", lab.name, disk, "--base", str(lab.layer("sn1", disk))]
        plan = ok(*args, "--dry-run").stdout
        assert said(plan, "loses") == "no snapshot"
        assert "sn3 (" in said(plan, "keeps") and "out of the chain" in said(plan, "keeps")
        ok(*args)
    ok("snapshot-cleanup", lab.name)
    assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]  # all still revertible
    lab.check_moments(tmp_path)
    ok("snapshot-cleanup", lab.name, "--delete-files")
    # the blog's cleanup by files kept sn4 and dropped sn1..sn3: by moments, sn1 and sn2 stay
    assert snapshot_names(lab.name) == ["sn1", "sn2"]
    assert not lab.layer("sn2").exists()
    check_domain(lab, tmp_path, before)


@pytest.mark.parametrize("route", ["pull", "commit"])
def test_flatten_says_what_each_route_keeps(made, tmp_path: Path, route: str):
    lab = made(False, 1)
    before = guest_view(lab, tmp_path)
    args = ["flatten", lab.name, "vda", "--route", route]
    plan = ok(*args, "--dry-run").stdout
    if route == "pull":
        assert said(plan, "loses") == "no snapshot"
    else:
        assert said(plan, "keeps") == "no snapshot"
        assert all(f"sn{k}" in said(plan, "loses") for k in range(1, 5))
    ok(*args)
    ok("snapshot-cleanup", lab.name)
    check_domain(lab, tmp_path, before)


@pytest.mark.parametrize("running", [True, False])
def test_shorten_says_what_it_keeps(made, tmp_path: Path, running: bool):
    lab = made(running, 1)
    before = guest_view(lab, tmp_path)
    args = ["shorten", lab.name, "vda", "--drop", str(lab.layer("sn2"))]
    plan = ok(*args, "--dry-run").stdout
    assert "sn1 (" in said(plan, "keeps") and "sn4 (" in said(plan, "keeps")
    ok(*args)
    ok("snapshot-cleanup", lab.name)
    check_domain(lab, tmp_path, before)


def test_losing_a_memory_snapshots_moment_is_refused(made, tmp_path: Path):
    lab = made(True, 1)
    mem = tmp_path / "sm.mem"
    virsh(
        "snapshot-create-as",
        lab.name,
        "sm",
        "--memspec",
        f"file={mem},snapshot=external",
        "--diskspec",
        f"vda,file={lab.dir / 'sm.qcow2'}",
    )
    # sm's moment is sn4.qcow2: an active commit into it would destroy it
    state = {p.name: p.stat().st_mtime_ns for p in lab.dir.iterdir()}
    proc = run_vshx(
        "commit", lab.name, "vda", "--base", str(lab.layer("sn4")), "--active", "--pivot"
    )
    assert proc.returncode == 1 and "memory state" in proc.stderr and "hint:" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in lab.dir.iterdir()} == state


def test_a_commit_outside_vshx_is_unknown_not_intact(made):
    lab = made(False, 1)
    subprocess.run(
        [
            "qemu-img",
            "commit",
            "-q",
            "-b",
            str(lab.layer("sn1")),
            str(lab.layer("sn2")),
        ],
        check=True,
    )
    subprocess.run(
        ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", "sn1.qcow2", str(lab.layer("sn3"))],
        check=True,
    )
    listed = ok("snapshot-list", lab.name, "--json").stdout
    moments = {s["name"]: s["disks"]["vda"]["moment"] for s in json.loads(listed)["snapshots"]}
    assert moments["sn2"] == "unknown" and moments["sn1"] == "intact"
    proc = ok("snapshot-cleanup", lab.name)
    assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]  # nothing forgotten on a guess
    assert "cannot tell" in proc.stdout


def test_rebase_keeps_every_moment(made, tmp_path: Path):
    lab = made(False, 1)
    before = guest_view(lab, tmp_path)
    args = ["rebase", "--domain", lab.name, "--path", "vda", "--top", str(lab.layer("sn3"))]
    args += ["--backing", str(lab.layer("sn1"))]
    plan = ok(*args, "--dry-run").stdout
    assert said(plan, "loses") == "no snapshot"
    assert "sn3 (sn2.qcow2, out of the chain)" in said(plan, "keeps")
    ok(*args)
    ok("snapshot-cleanup", lab.name)
    assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]
    check_domain(lab, tmp_path, before)


def test_a_commit_that_keeps_its_top_is_seen_by_the_files_time(made):
    """qemu-img commit -b keeps sn2.qcow2 on sn1.qcow2, yet rewrites sn1.qcow2: the chain's
    shape proves nothing then, and the file's write time says so."""
    lab = made(False, 1)
    # a write within the few seconds after a snapshot's (whole-second) creation time counts as
    # the snapshot's own (vshx.storage.moments): a quick lab is past them only after a while
    time.sleep(4)
    subprocess.run(
        ["qemu-img", "commit", "-q", "-b", str(lab.layer("sn1")), str(lab.layer("sn2"))],
        check=True,
    )
    listed = json.loads(ok("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    moments = {s["name"]: s["disks"]["vda"]["moment"] for s in listed}
    assert moments["sn2"] == "unknown" and moments["sn1"] == "intact"
    assert run_vshx("snapshot-revert", lab.name, "sn2").returncode == 1


def test_a_write_soon_after_a_snapshot_is_timed_by_its_overlays_birth(tmp_path: Path):
    """A write into the frozen file a second and a half after the snapshot: within the whole
    seconds of libvirt's creationTime (it was judged intact: a revert then gave the guest the
    written data; found by two outside attacks), but past the snapshot's own overlay's birth
    (statx, ns) by more than QEMU's last flush of that file takes."""
    name = f"{LAB_PREFIX}soon-{uuid.uuid4().hex[:8]}"
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    define_domain(name, {"vda": base})
    try:
        overlay = tmp_path / "s1.qcow2"
        virsh("snapshot-create-as", name, "s1", "--disk-only", "--diskspec", f"vda,file={overlay}")
        born = birth_ns(str(overlay), True)
        if born is None:
            pytest.skip("this file system does not keep birth times")
        time.sleep(max(0.0, born / 1e9 + 1.4 - time.time()))
        write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x99 1M 64k", str(base)]
        subprocess.run(write, check=True, capture_output=True)
        listed = json.loads(ok("snapshot-list", name, "--json").stdout)["snapshots"]
        assert listed[0]["disks"]["vda"]["moment"] == "unknown", listed
    finally:
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )


def test_a_commit_below_pulled_out_files_loses_their_moments(made, tmp_path: Path):
    lab = made(False, 1)
    before = guest_view(lab, tmp_path)
    ok("pull", lab.name, "vda", "--base", str(lab.layer("sn1")))
    args = ["commit", lab.name, "vda", "--base", str(lab.layer("sn1")), "--active", "--pivot"]
    plan = ok(*args, "--dry-run").stdout
    assert "sn3 (sn2.qcow2 reads through sn1.qcow2" in said(plan, "loses")
    ok(*args)
    listed = json.loads(ok("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    assert {s["name"]: s["disks"]["vda"]["moment"] for s in listed}["sn3"] == "gone"
    ok("snapshot-cleanup", lab.name)
    check_domain(lab, tmp_path, before)


def test_saved_ram_stops_revert_and_file_deletion(made):
    lab = made(True, 1)
    virsh("managedsave", lab.name)
    lab.running = False
    revert = run_vshx("snapshot-revert", lab.name, "sn1")
    assert revert.returncode == 1 and "managed-save" in revert.stderr
    cleanup = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
    assert cleanup.returncode == 1 and "managed-save" in cleanup.stderr
    virsh("managedsave-remove", lab.name)


def test_a_printed_commit_run_by_sh_leaves_no_moment_wrongly_intact(made, tmp_path: Path):
    """A dry-run script holds no record of vshx's (it is virsh and qemu-img only), so after
    `sh -e` vshx judges the scripted lab from its files: a moment the real run recorded gone
    or merged is never shown intact there, only what the files prove, or unknown."""
    real, scripted = made(True, 1), made(True, 1)
    before = guest_view(scripted, tmp_path)
    args = ("vda", "--base", "sn1", "--top", "sn3")
    ok("commit", real.name, *args)
    script = ok("commit", scripted.name, *args, "--dry-run").stdout
    subprocess.run(["sh", "-e"], input=script, text=True, check=True, capture_output=True)

    def states(lab: Lab) -> dict[str, str]:
        listed = json.loads(ok("snapshot-list", lab.name, "--json").stdout)["snapshots"]
        return {s["name"]: s["disks"]["vda"]["moment"] for s in listed}

    truth, seen = states(real), states(scripted)
    assert "unknown" not in truth.values()
    for name, state in seen.items():
        assert state in (truth[name], "unknown"), (name, state, truth[name])
    assert guest_view(scripted, tmp_path) == before
    for layer in chain_files(scripted.active):
        qemu_check(scripted.dir / layer)
    # the script said so, and cleanup, left with nothing it can prove, says what to do
    assert "# run by sh, this script writes no record of where the snapshots' moments" in script
    unsure = [name for name, state in seen.items() if state == "unknown"]
    if unsure:
        cleanup = ok("snapshot-cleanup", scripted.name)
        said = cleanup.stdout + cleanup.stderr
        assert f"snapshot-list {scripted.name} says why" in said, said
        assert any(f"snapshot-delete {scripted.name} {n} --metadata" in said for n in unsure)


def states_of(lab: Lab) -> dict[str, str]:
    listed = json.loads(ok("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    return {s["name"]: s["disks"]["vda"]["moment"] for s in listed}


def write_into_sn2_later(lab: Lab) -> None:
    """A foreign write into sn2.qcow2 (sn3's moment), past the few seconds in which a write
    still counts as the snapshot's own."""
    time.sleep(4)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x99 5M 64k", str(lab.layer("sn2"))],
        check=True,
        capture_output=True,
    )


def test_a_merge_moves_an_unknown_moment_without_proving_it(made, tmp_path: Path):
    """A foreign write into sn3's moment file makes it unknown; snapshot-delete then moves
    that file's view (sn2 into sn1.qcow2, sn1 into base.qcow2): it moves only what was
    there, so sn3 stays unknown wherever it goes and revert refuses it (base.qcow2 shows
    the foreign bytes, not sn3's moment)."""
    lab = made(False, 1)
    write_into_sn2_later(lab)
    assert states_of(lab)["sn3"] == "unknown"
    plan = ok("snapshot-delete", lab.name, "sn2", "--dry-run").stdout
    assert "sn3 (vda: unknown before this plan)" in said(plan, "keeps")
    ok("snapshot-delete", lab.name, "sn2")
    assert states_of(lab)["sn3"] == "unknown"
    ok("snapshot-delete", lab.name, "sn1")
    assert states_of(lab)["sn3"] == "unknown"
    assert guest_hash(lab.dir / "base.qcow2", tmp_path) != lab.moments["sn3"]["vda"]
    revert = run_vshx("snapshot-revert", lab.name, "sn3")
    assert revert.returncode == 1 and "unknown" in revert.stderr and "hint:" in revert.stderr


def test_a_commit_whose_top_stays_keeps_the_views_that_read_through_it(made, tmp_path: Path):
    """sn2.qcow2, pulled out of the chain, reads sn1.qcow2 before base.qcow2: a commit of
    sn1.qcow2 into base.qcow2 writes only clusters sn1.qcow2 holds and keeps (qemu-img commit
    -b implies -d), so sn3's moment in sn2.qcow2 is unchanged and never called lost."""
    lab = made(False, 1)
    ok("shorten", lab.name, "vda", "--drop", "sn2.qcow2")
    args = ["commit", lab.name, "vda", "--top", "sn1.qcow2", "--delete"]
    plan = ok(*args, "--dry-run").stdout
    assert "sn3 (sn2.qcow2, out of the chain)" in said(plan, "keeps")
    assert "sn3" not in said(plan, "loses")
    ok(*args)
    assert (lab.dir / "sn1.qcow2").exists()  # sn2.qcow2 reads it: kept
    assert guest_hash(lab.dir / "sn2.qcow2", tmp_path) == lab.moments["sn3"]["vda"]
    assert states_of(lab)["sn3"] == "intact"


def test_a_commit_under_a_reverted_branch_keeps_the_branch(made, tmp_path: Path):
    """After snapshot-revert sn2, sn3 and sn4 live in sn2.qcow2 and sn3.qcow2 on sn1.qcow2;
    committing sn1.qcow2 (kept, not emptied) into base.qcow2 changes neither view:
    snapshot-cleanup --delete-files keeps those snapshots and their files."""
    lab = made(False, 1)
    ok("snapshot-revert", lab.name, "sn2")
    plan = ok("commit", lab.name, "vda", "--top", "sn1.qcow2", "--dry-run").stdout
    assert "sn3" not in said(plan, "loses") and "sn4" not in said(plan, "loses")
    ok("commit", lab.name, "vda", "--top", "sn1.qcow2")
    states = states_of(lab)
    assert states["sn3"] == "intact" and states["sn4"] == "intact"
    ok("snapshot-cleanup", lab.name, "--delete-files")
    assert {"sn3", "sn4"} <= set(snapshot_names(lab.name))
    for snap, layer in (("sn3", "sn2.qcow2"), ("sn4", "sn3.qcow2")):
        assert guest_hash(lab.dir / layer, tmp_path) == lab.moments[snap]["vda"]


def test_delete_files_keeps_a_gone_moments_file_that_is_itself_unchanged(made):
    """Fail closed: sn3's moment, in the pulled-out sn2.qcow2, is judged gone after a commit
    into sn1.qcow2 below it, but sn2.qcow2's own bytes are still the moment's; a judgment of
    a file below it never costs that copy: --delete-files forgets sn3 and keeps sn2.qcow2."""
    lab = made(False, 1)
    ok("pull", lab.name, "vda", "--base", str(lab.layer("sn1")))
    ok("commit", lab.name, "vda", "--base", str(lab.layer("sn1")), "--active", "--pivot")
    assert states_of(lab)["sn3"] == "gone"
    proc = ok("snapshot-cleanup", lab.name, "--delete-files")
    assert "sn3" not in snapshot_names(lab.name)
    assert lab.layer("sn2").exists() and "sn2.qcow2 is unchanged since snapshot sn3" in proc.stdout


def test_a_commit_says_an_unknown_moment_it_moves_stays_unknown(made):
    lab = made(False, 1)
    write_into_sn2_later(lab)
    args = ["commit", lab.name, "vda", "--top", "sn2.qcow2", "--base", "sn1.qcow2"]
    plan = ok(*args, "--dry-run").stdout
    assert "moves into sn1.qcow2, still unknown" in said(plan, "unknown")
    assert "sn3" not in said(plan, "keeps")
    ok(*args)
    assert states_of(lab)["sn3"] == "unknown"
    assert run_vshx("snapshot-revert", lab.name, "sn3").returncode == 1
