"""The warm server on the real daemon: a one-shot merge handed to `vshx --warm start`'s server
ends as the same merge run alone on a twin domain (two disks, running and shut off: same
output, same chain, same snapshots, the guest's bytes, clean images, a domain that runs on
the chain vshx reports), and a signal to the client reaches the merge as it would reach vshx:
SIGTERM and Ctrl-C end it with its error and hint and its journal, `kill -9` kills it there
and then; `vshx recover` finishes each with every byte where it was."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import URI, Lab, chain_files, domain_source, qemu_check, virsh, wait_for
from conftest import make_lab as build_lab
from test_sigterm import qemu_img_runs
from test_warm_units import VSHX, cold, runtime, served, vshx, warm

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # its own XDG_RUNTIME_DIR: no session daemon


@pytest.fixture(autouse=True)
def unbuffered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Server and clients with PYTHONUNBUFFERED=1 (a client's PYTHON* must be the server's):
    each line of the merge's output goes out when written, warm as alone."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")


__all__ = ["runtime", "warm"]  # the fixtures, shared with the unit tests


def masked(text: bytes, lab: Lab) -> bytes:
    """Output with the lab's name, directory and times as words, to compare twin labs."""
    text = text.replace(str(lab.dir).encode(), b"DIR").replace(lab.name.encode(), b"LAB")
    return re.sub(rb"\(\d+(\.\d+)? s\)", b"(T s)", text)


def snapshots(name: str) -> list[str]:
    return virsh("snapshot-list", name, "--name").stdout.split()


@pytest.mark.parametrize("running", [True, False], ids=["running", "shutoff"])
def test_a_warm_merge_ends_as_the_same_merge_alone_on_a_twin_domain(
    warm: Path, made: Callable[..., Lab], tmp_path: Path, running: bool
) -> None:
    twins = [made(running=running, disks=2), made(running=running, disks=2)]
    before = [{d: lab.guest_hash(tmp_path, d) for d in lab.targets} for lab in twins]
    count = served() or 0
    args = ("-c", URI, "commit", "--base", "sn1", "--top", "sn3")
    runs = [vshx(*args[:3], twins[0].name, "vda", *args[3:])]
    runs.append(cold(*args[:3], twins[1].name, "vda", *args[3:]))
    assert served() == count + 1  # the first went to the server, the second did not
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert masked(runs[0].stdout, twins[0]) == masked(runs[1].stdout, twins[1])
    assert masked(runs[0].stderr, twins[0]) == masked(runs[1].stderr, twins[1])
    chains = []
    for lab, seen in zip(twins, before, strict=True):
        assert {d: lab.guest_hash(tmp_path, d) for d in lab.targets} == seen
        chain = chain_files(domain_source(lab.name, inactive=not running))
        chains.append(chain)
        for name in chain:
            qemu_check(lab.dir / name)
    assert chains[0] == chains[1] == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert snapshots(twins[0].name) == snapshots(twins[1].name)
    lab = twins[0]
    if not running:
        started = vshx("-c", URI, "start", lab.name)  # warm too
        assert started.returncode == 0, started.stderr
    # QEMU runs on the chain vshx reports
    reported = vshx("-c", URI, "domblklist", lab.name)
    assert str(lab.dir / "sn4.qcow2").encode() in reported.stdout
    assert domain_source(lab.name) == str(lab.dir / "sn4.qcow2")
    assert chain_files(domain_source(lab.name)) == chains[0]


def fork_of_server() -> int:
    """The pid of the one command the warm server runs now (its child)."""
    server = int(vshx("--warm", "status").stdout.decode().split("pid ", 1)[1].split(",")[0])
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def slow_commit(lab: Lab, mib_per_second: int) -> subprocess.Popen[str]:
    """A warm offline commit whose qemu-img step runs (``--bandwidth``: qemu-img commit -r,
    so the step still runs when a test acts), as a script starts it: no terminal."""
    merging = subprocess.Popen(
        [*VSHX, "-c", URI, "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3",
         "--bandwidth", str(mib_per_second)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: qemu_img_runs(lab.dir) or merging.poll() is not None, "qemu-img")
    return merging


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGINT, signal.SIGKILL, -signal.SIGKILL],
    ids=["TERM", "INT", "KILL", "KILL-the-fork"],
)
def test_a_signal_to_the_client_reaches_the_merge_as_it_would_reach_vshx(
    warm: Path, tmp_path: Path, signum: int
) -> None:
    lab = build_lab(tmp_path, running=False, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        count = served() or 0
        merging = slow_commit(lab, 1)
        assert served() == count + 1  # the merge runs in the server's fork
        time.sleep(0.5)
        if signum < 0:  # the command itself killed (`kill PID` of the pid jobs names)
            os.kill(fork_of_server(), -signum)
        else:
            merging.send_signal(signum)
        out, err = merging.communicate(timeout=60)
        # its first line went out as soon as it was written (this run: PYTHONUNBUFFERED)
        assert out.startswith("commit sn3.qcow2 down into sn1.qcow2"), out
        if abs(signum) == signal.SIGKILL:  # killed, as vshx alone would be: no word
            assert merging.returncode == -signal.SIGKILL, err
            assert "Traceback" not in err, err
        else:  # as vshx alone: its error and hint, status 1 (test_sigterm.py)
            assert merging.returncode == 1, err
            assert "error: interrupted" in err and "vshx recover" in err, err
            assert "Traceback" not in err
        if signum == signal.SIGINT:  # as a terminal's Ctrl-C: its qemu-img got it too
            wait_for(lambda: not qemu_img_runs(lab.dir), "qemu-img to stop on SIGINT")

        def interrupted() -> bool:  # the fork is gone: the journal's writer is dead
            jobs = cold("-c", URI, "jobs", lab.name)
            return b"interrupted vshx" in jobs.stdout

        wait_for(interrupted, "the journal of a dead vshx")
        recovered = vshx("-c", URI, "recover", lab.name, "vda", "--wait")
        assert recovered.returncode == 0, recovered.stderr
        assert lab.guest_hash(tmp_path) == before
        for name in chain_files(domain_source(lab.name, inactive=True)):
            qemu_check(lab.dir / name)
    finally:
        from conftest import destroy_lab

        destroy_lab(lab)


def test_a_merge_whose_server_was_killed_meanwhile_ends_with_its_own_status(
    warm: Path, tmp_path: Path
) -> None:
    """atk19 #2: the server killed while its fork merges: the fork finishes and says its own
    status to the client (0), as the same merge alone would have ended."""
    lab = build_lab(tmp_path, running=False, fill=8)
    try:
        before = lab.guest_hash(tmp_path)
        server = int(vshx("--warm", "status").stdout.decode().split("pid ", 1)[1].split(",")[0])
        merging = slow_commit(lab, 2)
        os.kill(server, signal.SIGKILL)
        _out, err = merging.communicate(timeout=120)
        assert merging.returncode == 0, err
        assert chain_files(domain_source(lab.name, inactive=True)) == [
            "sn4.qcow2", "sn1.qcow2", "base.qcow2"
        ]  # fmt: skip
        assert lab.guest_hash(tmp_path) == before
        for name in chain_files(domain_source(lab.name, inactive=True)):
            qemu_check(lab.dir / name)
    finally:
        from conftest import destroy_lab

        destroy_lab(lab)
