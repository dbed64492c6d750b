"""commit/pull refusals, interruption and timeouts: nothing changes, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    make_overlay,
    qemu_check,
    run_vshx,
    virsh,
    wait_for,
    wait_for_block_job,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def refused(lab: Lab, *args: str, code: int = 1) -> str:
    """Run a command that must be refused; assert exit code and that no file changed."""
    before = file_state(lab.dir)
    proc = run_vshx(*args)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert file_state(lab.dir) == before, "a refused command changed a file"
    return proc.stderr


def test_refusals_before_anything_changes(lab: Lab):
    d = lab.name
    assert "domain 'nosuch' not found" in refused(lab, "commit", "nosuch", "vda")
    err = refused(lab, "commit", d, "vdz")
    assert "has no disk 'vdz'" in err and "its disks: vda" in err
    err = refused(lab, "commit", d, "vda", "--base", "nosuch.qcow2")
    # libvirt's own numbering: each live snapshot's overlay takes the next index (base is 1)
    assert "is not a layer" in err and "vda[4]=sn3.qcow2" in err
    assert "not above base" in refused(lab, "commit", d, "vda", "--base", "sn3", "--top", "sn1")
    err = refused(lab, "commit", d, "vda", "--base", "sn1")
    assert "active commit" in err and "hint: add --active" in err
    done = run_vshx("pull", d, "vda", "--base", "sn3")  # as virsh: a no-op, exit 0
    assert done.returncode == 0 and "nothing to do" in done.stdout, done.stderr
    assert "cannot be used together" in refused(
        lab, "commit", d, "vda", "--pivot", "--keep-overlay", code=2
    )
    assert "which disk" in refused(lab, "commit", d, code=2)


def test_refuses_to_commit_into_a_base_another_overlay_uses(lab: Lab):
    other = lab.dir / "clone of sn1.qcow2"
    make_overlay(other, "sn1.qcow2")
    err = refused(lab, "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
    assert f"image {other}" in err and "hint:" in err and "--force" in err
    # sn2 is merged away by this commit: an overlay of sn2 must be named too
    err = refused(lab, "commit", lab.name, "vda", "--base", "base", "--top", "sn2")
    assert "clone of sn1.qcow2" in err
    # with --force it goes ahead (the clone's view changes; the user said so)
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--force")
    assert proc.returncode == 0 and "warning:" in proc.stderr


def test_refuses_when_another_domain_uses_the_base(tmp_path: Path):
    first = make_lab(tmp_path, running=False, dirname="a")
    second_dir = tmp_path / "b"
    second_dir.mkdir()
    overlay = second_dir / "on-first.qcow2"
    make_overlay(overlay, str(first.layer("sn1")))
    xml = f"""<domain type='qemu'><name>{first.name}-other</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>
<driver name='qemu' type='qcow2'/><source file='{overlay}'/><target dev='vda' bus='virtio'/>
</disk></devices></domain>"""
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        err = refused(first, "commit", first.name, "vda", "--base", "sn1", "--top", "sn3")
        assert f"domain {first.name}-other disk vda" in err
    finally:
        subprocess.run(["virsh", "-c", URI, "undefine", f"{first.name}-other"], capture_output=True)
        destroy_lab(first)


def test_bare_image_in_use_by_a_running_domain_is_refused(lab: Lab):
    err = refused(lab, "commit", str(lab.layer("sn4")))
    assert "in use by running domain" in err and "hint:" in err
    err = refused(lab, "pull", str(lab.layer("sn4")))
    assert "in use by running domain" in err


def test_a_remote_uri_without_ssh_refuses_offline_steps(offline_lab: Lab):
    """vshx reaches a remote host's files over ssh only (tests/test_remote.py): on another
    transport it refuses, also to plan, rather than read a local file of the same name."""
    image = str(offline_lab.layer("sn2"))
    remote = "qemu+tcp://vshx-remote.invalid/system"
    before = file_state(offline_lab.dir)
    for dry_run in ([], ["--dry-run"]):
        proc = subprocess.run(
            [sys.executable, "-m", "vshx", "-c", remote, "commit", image, *dry_run],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "only over ssh" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert file_state(offline_lab.dir) == before


@pytest.mark.root  # mounts a tmpfs
def test_not_enough_space_shows_both_numbers(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        small = make_lab(mount, running=False, layers=2, fill=12, dirname="lab")
        filler = mount / "filler"
        subprocess.run(["fallocate", "-l", "14M", str(filler)], check=True)
        try:
            err = refused(small, "commit", small.name, "vda", "--base", "base", "--top", "sn1")
            assert "not enough space" in err and "needed" in err and "free" in err
        finally:
            destroy_lab(small)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def slow_commit(lab: Lab, *extra: str) -> list[str]:
    """vshx arguments of a 1 MiB/s commit of sn2 into sn1: slow enough to interrupt."""
    return ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn2", "--bandwidth", "1", *extra]


def start_slow_job(lab: Lab, *args: str) -> subprocess.Popen[str]:
    """Start a bandwidth-limited commit as a one-shot vshx process; return once the job runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vshx", "-c", URI, *slow_commit(lab, *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_block_job(lab, "Block Commit", proc)
    return proc


def assert_untouched(lab: Lab, before: str, files: set[str]) -> None:
    job = subprocess.run(
        ["virsh", "-c", URI, "blockjob", lab.name, "vda", "--info"], capture_output=True, text=True
    )
    assert "No current block job" in job.stdout + job.stderr
    assert chain_files(lab.active) == ["sn3.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert {p.name for p in lab.dir.glob("*.qcow2")} == files, "a file was deleted"
    assert lab.guest_hash(lab.dir.parent) == before
    for name in files:
        qemu_check(lab.dir / name)


@pytest.fixture
def slow_lab(tmp_path: Path):
    made = make_lab(tmp_path, layers=3, fill=64)
    yield made
    destroy_lab(made)


def test_ctrl_c_aborts_the_job_and_keeps_everything(slow_lab: Lab):
    files = {p.name for p in slow_lab.dir.glob("*.qcow2")}
    before = slow_lab.guest_hash(slow_lab.dir.parent)
    proc = start_slow_job(slow_lab, "--delete")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "interrupted: the block job was aborted" in err and "Traceback" not in err
    assert_untouched(slow_lab, before, files)


def copied(lab: Lab, base_written: int) -> bool:
    """The lab's commit job (sn2 into sn1) has written data into its base: its write time
    moved past ``base_written`` (libvirt's cur > 0 alone counts walked holes too)."""
    return lab.layer("sn1").stat().st_mtime_ns > base_written


def test_an_aborted_commit_keeps_the_moments_at_and_above_its_top(slow_lab: Lab):
    """nu17 #1: a commit of sn2.qcow2 into sn1.qcow2 aborted once it had copied data: the
    view of its top (sn3's moment) cannot have changed, nor base.qcow2 below it (sn1's),
    and vshx says so; only sn2's (sn1.qcow2 reads the written base) is unknown.  They were
    all unknown, so the command run again kept nothing it could prove."""
    lab, tmp = slow_lab, slow_lab.dir.parent
    views = {f: guest_hash(lab.layer(f), tmp) for f in ("base", "sn2")}
    time.sleep(4)  # past the seconds in which a write still counts as a snapshot's own
    written = lab.layer("sn1").stat().st_mtime_ns
    proc = start_slow_job(lab)
    wait_for(lambda: copied(lab, written), "the commit copying")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "after it had copied data into its base" in err, err
    listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)
    moments = {s["name"]: s["disks"]["vda"] for s in listed["snapshots"]}
    assert moments["sn1"]["moment"] == "intact" and moments["sn3"]["moment"] == "intact", moments
    assert moments["sn2"]["moment"] == "unknown", moments
    assert {f: guest_hash(lab.layer(f), tmp) for f in ("base", "sn2")} == views
    done = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2")  # sn3's moves
    assert done.returncode == 0, done.stderr
    listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)
    sn3 = next(s["disks"]["vda"] for s in listed["snapshots"] if s["name"] == "sn3")
    assert sn3["moment"] == "merged" and sn3["holder"] == str(lab.layer("sn1")), sn3
    assert guest_hash(lab.layer("sn1"), tmp) == views["sn2"]


def test_a_domain_stopped_during_the_job_is_said_so_and_recover_clears_it(slow_lab: Lab):
    """atk20 #4: `virsh destroy` during a live commit was reported as "lost contact with
    libvirtd", which had never stopped answering."""
    lab = slow_lab
    files = {p.name for p in lab.dir.glob("*.qcow2")}
    proc = start_slow_job(lab, "--delete")
    assert virsh("destroy", lab.name).returncode == 0
    lab.running = False
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert f"domain {lab.name} stopped while the block job ran" in err, err
    assert "lost contact" not in err and "\nhint: " in err and "Traceback" not in err
    assert f"vshx recover {lab.name} vda" in err
    recovered = run_vshx("recover", lab.name, "vda")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert chain_files(lab.active) == ["sn3.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert {p.name for p in lab.dir.glob("*.qcow2")} == files, "a file was deleted"
    for name in files:
        qemu_check(lab.dir / name)


def test_a_write_into_the_top_during_an_aborted_commit_is_not_vouched_for(slow_lab: Lab):
    """atk21 #1: a write into the commit's top while its job ran (dd, past QEMU's locks) was
    recorded as the moment's own once the job was aborted; the record is written only where
    no layer the moment's view reads but the base changed meanwhile (here: sn2.qcow2 is
    touched, so sn3's moment in it is unknown, while sn1's, below the base, stays intact)."""
    lab = slow_lab
    time.sleep(4)  # past the seconds in which a write still counts as a snapshot's own
    written = lab.layer("sn1").stat().st_mtime_ns
    proc = start_slow_job(lab)
    wait_for(lambda: copied(lab, written), "the commit copying")
    os.utime(lab.layer("sn2"))  # a write's trace: the file's write time moves on
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "after it had copied data into its base" in err, err
    listed = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)
    moments = {s["name"]: s["disks"]["vda"]["moment"] for s in listed["snapshots"]}
    assert moments == {"sn1": "intact", "sn2": "unknown", "sn3": "unknown"}, moments


def test_timeout_aborts_the_job_and_keeps_everything(slow_lab: Lab):
    files = {p.name for p in slow_lab.dir.glob("*.qcow2")}
    before = slow_lab.guest_hash(slow_lab.dir.parent)
    proc = run_vshx(*slow_commit(slow_lab, "--timeout", "1", "--delete"))
    assert proc.returncode == 1
    assert "timed out after 1 s" in proc.stderr
    assert_untouched(slow_lab, before, files)


def test_a_running_job_blocks_another_and_background_returns_at_once(slow_lab: Lab):
    proc = run_vshx(*slow_commit(slow_lab, "--background"))
    assert proc.returncode == 0, proc.stderr
    assert "--background" in proc.stderr
    try:
        second = run_vshx("pull", slow_lab.name, "vda")
        assert second.returncode == 1
        assert "commit job is already running" in second.stderr and "--abort" in second.stderr
    finally:
        subprocess.run(
            ["virsh", "-c", URI, "blockjob", slow_lab.name, "vda", "--abort"],
            check=True,
            capture_output=True,
        )


def test_a_ready_job_is_named_ready_with_the_pivot_that_finishes_it(lab: Lab):
    """nu15 #9: a READY active commit (virsh blockcommit --active without --pivot) got "wait
    for it": it never ends by waiting.  The refusal says it waits for its pivot, and how."""
    started = virsh("blockcommit", lab.name, "vda", "--active", "--shallow")
    assert started.returncode == 0, started.stderr
    try:
        ready = "ready='yes'"
        wait_for(lambda: ready in virsh("dumpxml", lab.name).stdout, "the job READY")
        stderr = refused(lab, "commit", lab.name, "vda", "--top", "sn3", "--base", "sn1")
        assert "is ready and waits for its pivot" in stderr and "wait for it" not in stderr
        assert f"vshx recover {lab.name} vda --pivot" in stderr
    finally:
        virsh("blockjob", lab.name, "vda", "--abort")


def test_refuses_when_a_storage_pool_volume_uses_the_base(lab: Lab, tmp_path: Path):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    make_overlay(pool_dir / "vol-on-sn1.qcow2", str(lab.layer("sn1")))
    pool = f"{lab.name}-pool"
    xml = f"<pool type='dir'><name>{pool}</name><target><path>{pool_dir}</path></target></pool>"
    virsh("pool-create", "/dev/stdin", stdin=xml)
    try:
        err = refused(lab, "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        assert f"pool {pool} volume vol-on-sn1.qcow2" in err
    finally:
        subprocess.run(["virsh", "-c", URI, "pool-destroy", pool], capture_output=True)


def test_delete_is_refused_where_files_would_still_be_needed(offline_lab: Lab):
    lab = offline_lab
    err = refused(lab, "commit", str(lab.layer("sn3")), "--base", "sn1", "--delete", code=2)
    assert "--delete needs a domain's disk" in err
    err = refused(
        lab, "commit", lab.name, "vda", "--base", "sn1", "--keep-overlay", "--delete", code=2
    )
    assert "cannot be used together" in err
    err = refused(
        lab,
        "commit",
        lab.name,
        "vda",
        "--base",
        "sn1",
        "--top",
        "sn3",
        "--delete",
        "--background",
        code=2,
    )
    assert "cannot be used together" in err
