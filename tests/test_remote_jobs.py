"""jobs and recover on a remote host: a qemu-img a killed vshx left running there is found on
that host (its /proc, read over ssh), recover refuses or waits for it, and the chain ends as
the local flow (tests/test_clear_errors.py) leaves it.

vshx runs where the lab's directory is an empty tmpfs (``hidden``), so this machine's file
system knows nothing of the images; after the vshx that started the commit is gone, jobs and
recover also run in a private pid namespace, so this machine's /proc shows none of the host's
processes either: only what vshx asks the host over ssh can find (and follow) the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import chain_files, destroy_lab, make_lab, qemu_check, virsh
from sshd import Sshd, hidden
from test_remote import committed_sn3_into_sn1

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # hidden() mounts; qemu:///system

CHAIN = ["sn4", "sn3", "sn2", "sn1", "base"]
NO_PIDS = ["unshare", "--pid", "--fork", "--mount-proc"]  # this machine's /proc: ours only


def vshx_argv(sshd: Sshd, hide: list[Path], *words: str, pids: bool = False) -> list[str]:
    inner = [sys.executable, "-m", "vshx", "-c", sshd.uri(), *words]
    return hidden(hide, [*NO_PIDS, *inner] if pids else inner)


def env(sshd: Sshd) -> dict[str, str]:
    return {**sshd.env(), "PYTHONUNBUFFERED": "1"}


def remote(
    sshd: Sshd, hide: list[Path], *words: str, pids: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = vshx_argv(sshd, hide, *words, pids=pids)
    return subprocess.run(argv, capture_output=True, text=True, env=env(sshd), timeout=900)


def qemu_img_commit_on(directory: Path) -> int | None:
    """The pid of a running `qemu-img commit` on a file in ``directory`` (the test sees the
    host's processes: the host is this machine)."""
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"qemu-img", b"commit"] and str(directory).encode() in b" ".join(argv):
            return int(entry)
    return None


def wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2400):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_a_remote_qemu_img_a_killed_vshx_left_is_listed_waited_for_and_rolled_forward(
    sshd: Sshd, tmp_path: Path
) -> None:
    lab = make_lab(tmp_path, running=False, fill=8)
    hide = [lab.dir]
    host = f"{sshd.user}@127.0.0.1:{sshd.port}"
    stopped: int | None = None
    try:
        before = lab.guest_hash(tmp_path)
        argv = ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--bandwidth", "2"]
        vshx = subprocess.Popen(
            vshx_argv(sshd, hide, *argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(sshd),
        )
        wait_until(lambda: qemu_img_commit_on(lab.dir) is not None, "qemu-img commit to start")
        worker = qemu_img_commit_on(lab.dir)
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)  # keeps it running, however slow this machine is
        stopped = worker

        busy = remote(sshd, hide, "recover", lab.name, "vda", pids=False)
        assert busy.returncode == 1, busy.stderr  # the chain's lock on the host says who works
        assert "error: another vshx (pid " in busy.stderr, busy.stderr  # its holder's there
        assert f" on {host}) is running: vshx commit" in busy.stderr, busy.stderr
        at_work = json.loads(remote(sshd, hide, "jobs", lab.name, "--json", pids=False).stdout)
        assert [(r["type"], r["pid"]) for r in at_work["jobs"]] == [
            ("running vshx", vshx.pid),
            ("qemu-img", worker),
        ]

        vshx.kill()  # kill -9: its qemu-img goes on writing sn1 on the host
        vshx.communicate()
        assert qemu_img_commit_on(lab.dir) == worker

        listed = remote(sshd, hide, "jobs", lab.name, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)["jobs"]
        assert [(r["type"], r["pid"]) for r in rows] == [
            ("interrupted vshx", vshx.pid),
            ("qemu-img", worker),
        ]
        assert rows[1]["started_by"] is None  # ssh passes no environment: not known there
        assert f"wait until pid {worker} on {host} ends (or kill {worker} there)" in rows[0]["next"]
        table = remote(sshd, hide, "jobs").stdout
        assert f"qemu-img pid {worker} on {host} (started " in table, table
        assert "still runs: qemu-img commit" in table and str(lab.layer("sn3")) in table

        refused = remote(sshd, hide, "recover", lab.name, "vda")
        assert refused.returncode == 1, refused.stderr
        assert f"error: qemu-img pid {worker} on {host}" in refused.stderr
        assert "hint: nothing was changed: wait until pid" in refused.stderr
        assert remote(sshd, hide, "jobs", lab.name, "--json").stdout == listed.stdout

        # --wait follows that very process on the host: it cannot end while the worker is
        # stopped, and ends once the worker has
        waiting = subprocess.Popen(
            vshx_argv(sshd, hide, "recover", lab.name, "vda", "--wait", pids=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(sshd),
        )
        assert waiting.stdout is not None
        said = [waiting.stdout.readline() for _ in range(1)]
        while said[-1] and "waiting for" not in said[-1]:
            said.append(waiting.stdout.readline())
        assert f"waiting for qemu-img pid {worker} on {host} (started " in said[-1], said
        assert waiting.poll() is None
        os.kill(worker, signal.SIGCONT)
        stopped = None
        out, err = waiting.communicate(timeout=900)
        assert waiting.returncode == 0, out + err
        assert gone(worker)
        assert json.loads(remote(sshd, hide, "jobs", lab.name, "--json").stdout)["jobs"] == []

        # as locally: the step ran to its end under nobody, the chain is as it was, sn1 holds
        # sn2..sn3's data; the commit, run again, finishes the job
        assert chain_files(lab.active) == [f"{n}.qcow2" for n in CHAIN]
        assert lab.guest_hash(tmp_path) == before
        for path in lab.dir.glob("*.qcow2"):
            qemu_check(path)
        again = remote(sshd, hide, *argv[:-2])
        assert again.returncode == 0, again.stderr
        committed_sn3_into_sn1(lab, tmp_path, before)
        virsh("start", lab.name)
        lab.running = True
        shown = virsh("qemu-monitor-command", lab.name, "--hmp", "info block -v").stdout
        assert str(lab.layer("sn4")) in shown and str(lab.layer("sn1")) in shown
        assert str(lab.layer("sn3")) not in shown
        assert lab.guest_hash(tmp_path) == before
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        destroy_lab(lab)


# an ssh (named by the URI's command=, which libvirt runs too) that cannot ask the host about
# its processes: it fails as ssh fails (exit 255) for any command reading /proc/stat
BLIND_SSH = """#!/bin/sh
case "$*" in *btime*) echo "ssh: connect to host: Connection timed out" >&2; exit 255;; esac
exec ssh "$@"
"""


def test_a_host_that_cannot_be_asked_about_its_processes_stops_jobs_and_recover(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Fail closed: when the host's /proc cannot be read, jobs and recover say so (error +
    hint, exit 1) and change nothing; they never take "no answer" for "no qemu-img"."""
    lab = make_lab(tmp_path, running=False)
    blind = tmp_path / "blind-ssh"
    blind.write_text(BLIND_SSH)
    blind.chmod(0o755)
    uri = f"{sshd.uri()}&command={blind}"
    entry = (
        f"<journal plan='commit' step='1' steps='4' what='qemu-img commit sn3.qcow2' "
        f"disk='vda' image='{lab.layer('sn4')}' pivot='no' pid='999999' time='0'/>"
    )
    virsh(
        "metadata", lab.name, "--uri", "https://vshx.invalid/journal", "--key", "vshx",
        "--set", entry, "--config",
    )  # fmt: skip
    try:
        files = sorted(os.listdir(lab.dir))
        for words in (["jobs", lab.name], ["recover", lab.name, "vda"]):
            argv = hidden([lab.dir], [sys.executable, "-m", "vshx", "-c", uri, *words])
            done = subprocess.run(argv, capture_output=True, text=True, env=env(sshd), timeout=600)
            assert done.returncode == 1, done.stdout + done.stderr
            assert done.stderr.startswith(f"error: cannot reach {sshd.user}@127.0.0.1"), done.stderr
            assert "Connection timed out" in done.stderr and "\nhint: " in done.stderr
            assert "Traceback" not in done.stderr
        assert sorted(os.listdir(lab.dir)) == files
        kept = virsh("metadata", lab.name, "--uri", "https://vshx.invalid/journal", "--config")
        assert "qemu-img commit sn3.qcow2" in kept.stdout  # the journal stays for a later recover
    finally:
        destroy_lab(lab)
