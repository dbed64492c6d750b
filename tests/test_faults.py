"""The fault suite: vshx on a busy host where processes die, daemons freeze and names attack.

Every case checks what a user cares about: the guest sees the same bytes (flushed hash), no
file anything uses is deleted, no snapshot metadata is dropped on a guess, no traceback, a
clear error, and jobs/recover bring the disk back to a clean chain with no job left.
docs/reliability.md has one row per test here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    Lab,
    chain_files,
    destroy_lab,
    domain_source,
    ensure_daemon,
    file_state,
    guest_hash,
    make_lab,
    make_overlay,
    qemu_check,
    run_vshx,
    snapshot_names,
    virsh,
)

# kills and restarts the system libvirtd, mounts file systems: root on qemu:///system only
pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.serial]

VSHX = [sys.executable, "-m", "vshx", "-c", URI]


@pytest.fixture
def slow_lab(tmp_path: Path) -> Iterator[Lab]:
    """A running lab with 16 MiB in every layer: at 1 MiB/s a job runs for a minute."""
    made = make_lab(tmp_path, fill=16)
    yield made
    ensure_daemon()
    destroy_lab(made)


def start_vshx(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VSHX, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def job_info(domain: str) -> str:
    proc = virsh("blockjob", domain, "vda", "--info")
    return proc.stdout + proc.stderr


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def wait_for_job(domain: str) -> None:
    wait_for(lambda: "Block" in job_info(domain), "the block job to start")


def unthrottle(domain: str) -> None:
    virsh("blockjob", domain, "vda", "--bandwidth", "0")


def jobs_of(domain: str) -> list[dict]:
    proc = run_vshx("jobs", domain, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["jobs"]


def all_clean(lab: Lab) -> None:
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)


def test_killed_vshx_mid_active_commit_is_found_and_recovered(slow_lab: Lab, tmp_path: Path):
    lab = slow_lab
    before = lab.guest_hash(tmp_path)
    proc = start_vshx("commit", lab.name, "vda", "--active", "--pivot", "--bandwidth", "1")
    wait_for_job(lab.name)
    proc.kill()
    proc.wait()
    listed = jobs_of(lab.name)
    assert [j["type"] for j in listed] == ["active commit", "interrupted vshx"]
    refused = run_vshx("pull", lab.name, "vda")
    assert refused.returncode == 1 and "did not finish" in refused.stderr
    assert f"vshx recover {lab.name} vda" in refused.stderr
    assert "active commit" in run_vshx("chain", lab.name, "vda").stderr
    unthrottle(lab.name)
    wait_for(lambda: jobs_of(lab.name)[0]["ready"], "READY")
    recovered = run_vshx("recover", lab.name, "vda")
    assert recovered.returncode == 0, recovered.stderr
    assert chain_files(lab.active) == ["base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    assert jobs_of(lab.name) == []
    all_clean(lab)


def test_libvirtd_killed_mid_commit_is_state_unknown_and_deletes_nothing(
    slow_lab: Lab, tmp_path: Path
):
    lab = slow_lab
    before = lab.guest_hash(tmp_path)
    args = ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete"]
    proc = start_vshx(*args, "--bandwidth", "1")
    wait_for_job(lab.name)
    subprocess.run(["pkill", "-9", "-x", "libvirtd"], check=False)
    try:
        _out, err = proc.communicate(timeout=120)
    finally:
        ensure_daemon()
    assert proc.returncode == 1
    assert "state is unknown" in err and ": done" not in err and "Traceback" not in err
    assert lab.layer("sn2").exists() and lab.layer("sn3").exists()
    unthrottle(lab.name)
    wait_for(lambda: "Block" not in job_info(lab.name), "the job to end in QEMU")
    recovered = run_vshx("recover", lab.name, "vda")
    assert recovered.returncode == 0, recovered.stderr
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    assert jobs_of(lab.name) == []
    all_clean(lab)


def test_a_second_vshx_on_the_same_disk_is_refused(slow_lab: Lab, tmp_path: Path):
    lab = slow_lab
    before = lab.guest_hash(tmp_path)
    first = start_vshx(
        "commit", lab.name, "vda", "--base", "sn2", "--top", "sn3", "--bandwidth", "1"
    )
    wait_for_job(lab.name)
    second = run_vshx("pull", lab.name, "vda")
    assert second.returncode == 1
    assert f"another vshx (pid {first.pid}) is running" in second.stderr
    unthrottle(lab.name)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert lab.guest_hash(tmp_path) == before
    assert jobs_of(lab.name) == []


def test_frozen_daemon_is_an_error_within_seconds_not_a_hang(lab: Lab, tmp_path: Path):
    pids = subprocess.run(
        ["pgrep", "-x", "-r", "R,S,D", "libvirtd"], capture_output=True, text=True
    )
    pid = int(pids.stdout.split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        shown = subprocess.run(
            [*VSHX, "chain", lab.name, "vda"], capture_output=True, text=True, timeout=60
        )
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), VSHX_COMPLETE_DEADLINE="0.3")
        completed = subprocess.run(
            [*VSHX, "complete", "--", f"chain {lab.name[:4]}"],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
        ensure_daemon()
    assert shown.returncode == 1 and "no answer" in shown.stderr
    assert "hint:" in shown.stderr and "Traceback" not in shown.stderr
    assert completed.returncode == 0 and completed.stdout == "" and completed.stderr == ""


def test_snapshot_cleanup_refuses_on_a_corrupt_middle_layer(offline_lab: Lab):
    lab = offline_lab
    with open(lab.layer("sn2"), "r+b") as handle:
        handle.write(b"XXXX")
    snapshots = snapshot_names(lab.name)
    files = file_state(lab.dir)
    for extra in ([], ["--delete-files"]):
        proc = run_vshx("snapshot-cleanup", lab.name, *extra)
        assert proc.returncode == 1
        assert "cannot read the chain" in proc.stderr and "hint:" in proc.stderr
        assert snapshot_names(lab.name) == snapshots
        assert file_state(lab.dir) == files


def test_snapshot_cleanup_refuses_while_a_layer_is_missing(offline_lab: Lab):
    lab = offline_lab
    moved = lab.dir / "away.bin"
    lab.layer("sn1").rename(moved)
    snapshots = snapshot_names(lab.name)
    proc = run_vshx("snapshot-cleanup", lab.name, "--delete-files")
    moved.rename(lab.layer("sn1"))
    assert proc.returncode == 1 and "cannot read the chain" in proc.stderr
    assert snapshot_names(lab.name) == snapshots
    assert all(lab.layer(n).exists() for n in ("base", "sn1", "sn2", "sn3", "sn4"))


def test_offline_active_commit_never_pivots_a_domain_started_meanwhile(
    tmp_path: Path,
):
    lab = make_lab(tmp_path, running=False, fill=64)
    try:
        before = lab.guest_hash(tmp_path)
        proc = start_vshx("commit", lab.name, "vda", "--active", "--pivot", "--delete")
        started = False
        while proc.poll() is None:  # try to start it at every moment of the plan
            started = started or virsh("start", lab.name).returncode == 0
        _out, err = proc.communicate()
        assert "Traceback" not in err
        running = virsh("domstate", lab.name).stdout.strip() == "running"
        if proc.returncode != 0:  # refused: the domain started before the switch
            assert started and "was started while the offline plan ran" in err, err
        lab = Lab(lab.name, lab.dir, running)
        assert lab.guest_hash(tmp_path) == before  # what it runs on (or will boot) shows it all
        for path in chain_files(lab.active):
            assert (lab.dir / path).exists(), "nothing the disk uses was deleted"
        all_clean(lab)
    finally:
        destroy_lab(lab)


def test_domains_defined_and_undefined_during_commands_do_not_fail_them(lab: Lab):
    stop = threading.Event()
    churn = f"{LAB_PREFIX}churn-{uuid.uuid4().hex[:6]}"
    xml = (
        f"<domain type='qemu'><name>{churn}</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        "<source file='/nonexistent/churn.qcow2'/><target dev='vda'/></disk></devices></domain>"
    )

    def define_undefine() -> None:
        import libvirt

        conn = libvirt.open(URI)
        while not stop.is_set():
            conn.defineXML(xml).undefine()
        conn.close()

    worker = threading.Thread(target=define_undefine)
    worker.start()
    try:
        results = [
            run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
            for _ in range(8)
        ]
    finally:
        stop.set()
        worker.join()
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]


def test_who_uses_the_base_whole_chains_any_name_any_pool(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    args = ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3"]
    untouched = file_state(lab.dir)
    # a clone without an image suffix, beside the chain, two levels above sn2
    mid = lab.dir / "mid.disk"
    make_overlay(mid, str(lab.layer("sn2")))
    clone = lab.dir / "clone.disk"
    make_overlay(clone, str(mid))
    proc = run_vshx(*args)
    assert proc.returncode == 1 and f"image {clone}" in proc.stderr and "scanned" in proc.stderr
    clone.unlink()
    mid.unlink()
    # an overlay elsewhere: found with --scan DIR, or as a volume of a pool (active or not)
    elsewhere = tmp_path / "pool"
    elsewhere.mkdir()
    make_overlay(elsewhere / "vol.qcow2", str(lab.layer("sn2")))
    assert run_vshx(*args, "--dry-run").returncode == 0, "not scanned without being told"
    assert run_vshx(*args, "--scan", str(elsewhere)).returncode == 1
    pool = f"{LAB_PREFIX}pool-{uuid.uuid4().hex[:6]}"
    virsh("pool-define-as", pool, "dir", "--target", str(elsewhere))
    try:
        inactive = run_vshx(*args)
        assert inactive.returncode == 1 and "vol.qcow2" in inactive.stderr
        virsh("pool-start", pool)
        active = run_vshx(*args)
        assert active.returncode == 1 and f"pool {pool} volume vol.qcow2" in active.stderr
    finally:
        virsh("pool-destroy", pool)
        virsh("pool-undefine", pool)
    assert file_state(lab.dir) == untouched


HOSTILE = ["new\nline", "$(touch PWNED1)", "`touch PWNED2`", "-rf", "sp ace'quote\""]


@pytest.mark.parametrize("name", HOSTILE)
def test_dry_run_scripts_are_safe_for_any_file_name(tmp_path: Path, name: str):
    work = tmp_path / "w"
    work.mkdir()
    base, mid, top = (work / f"{name}-{n}.qcow2" for n in ("base", "mid", "top"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x11 0 1M", str(base)], check=True, capture_output=True
    )
    make_overlay(mid, base.name)
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x22 1M 1M", str(mid)], check=True, capture_output=True
    )
    make_overlay(top, mid.name)
    before = guest_hash(top, tmp_path)
    for command in (
        ["commit", str(top), "--dry-run"],
        ["pull", str(top), "--base", str(base), "--dry-run"],
        ["rebase", str(top), "--backing", str(base), "--dry-run"],
        ["chain", str(top), "--dry-run"],
    ):
        script = run_vshx(*command)
        assert script.returncode == 0, script.stderr
        ran = subprocess.run(
            ["sh", "-e"], input=script.stdout, capture_output=True, text=True, cwd=work
        )
        assert ran.returncode == 0, ran.stderr
        assert not list(work.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
        assert guest_hash(top, tmp_path) == before
        qemu_check(top)


def test_lab_create_never_takes_over_a_directory(tmp_path: Path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "precious.txt").write_text("mine")
    for args in (["lab-create", ""], ["lab-create", "../x"], ["lab-create", "a/b"]):
        proc = run_vshx(*args)
        assert proc.returncode == 2 and "invalid lab name" in proc.stderr
    name = f"{LAB_PREFIX}{uuid.uuid4().hex[:6]}"
    for command in ("lab-create", "lab-destroy"):
        proc = run_vshx(command, name, "--dir", str(precious))
        assert proc.returncode == 1 and "is not the lab directory" in proc.stderr
    assert (precious / "precious.txt").read_text() == "mine"
    lab = make_lab(tmp_path, dirname="mine")
    (lab.dir / "notes.txt").write_text("mine too")
    kept = file_state(lab.dir)
    rebuilt = run_vshx("lab-create", lab.name, "--dir", str(lab.dir), "--layers", "4")
    assert rebuilt.returncode == 1 and "nothing was changed" in rebuilt.stderr
    assert file_state(lab.dir) == kept and domain_source(lab.name)  # the old lab stands
    destroy_lab(lab)
    assert (lab.dir / "notes.txt").read_text() == "mine too"
    assert not list(lab.dir.glob("*.qcow2"))


def test_bad_input_is_a_clear_error(tmp_path: Path, offline_lab: Lab):
    script = tmp_path / "bad.vshx"
    script.write_bytes(b"list\n\xff\xfe\n")
    proc = run_vshx("-f", str(script))  # read as a command line is: the bytes as they are
    assert proc.returncode == 2 and ":2: error: unknown command '\\xff\\xfe'" in proc.stderr
    script.write_bytes(b"chain a\x00b\n")
    proc = run_vshx("-f", str(script))
    assert proc.returncode == 2 and "NUL byte" in proc.stderr
    image = str(offline_lab.layer("sn4"))
    for option, value in (("--bandwidth", "18446744073709551615"), ("--timeout", "9" * 300)):
        proc = run_vshx("pull", offline_lab.name, "vda", option, value)
        assert proc.returncode == 2 and "must be at most" in proc.stderr
    proc = run_vshx("pull", image, "--base", "")
    assert proc.returncode == 2 and "empty layer REF" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert chain_files(offline_lab.active)[-1] == "base.qcow2"


def test_no_space_is_refused_before_anything_changes(tmp_path: Path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        base = small / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
        top = tmp_path / "top.qcow2"
        make_overlay(top, str(base))
        written = ["qemu-io", "-c", "write -P 0x5a 0 16M", str(top)]
        subprocess.run(written, check=True, capture_output=True)
        before = guest_hash(top, tmp_path)
        files = file_state(small)
        proc = run_vshx("commit", str(top))
        assert proc.returncode == 1 and "not enough space" in proc.stderr
        assert "free" in proc.stderr and "hint:" in proc.stderr
        assert file_state(small) == files
        assert guest_hash(top, tmp_path) == before
    finally:
        subprocess.run(["umount", str(small)], check=False)
