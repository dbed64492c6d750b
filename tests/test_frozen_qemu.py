"""A QEMU that stops answering (atk7 F6): libvirtd waits for its monitor without a limit, and
the libvirt call beneath blocks in C, where Python runs no signal handler.  vshx hung without a
word: `--timeout` was not honoured, SIGTERM and Ctrl-C did nothing until QEMU ran again.  Now
it says that it waits, and `--timeout`, SIGTERM or Ctrl-C end the wait (exit 1, error and hint,
the journal kept: the job may still start once QEMU answers); once QEMU runs again, `vshx
recover` finishes the merge as for a vshx that was killed, and nothing is lost.

Real QEMU, stopped with SIGSTOP (as a debugger, or a dead NFS server, leaves it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import URI, Lab, block_job, chain_files, domain_source, qemu_check, run_vshx, virsh
from conftest import wait_for as wait_until

pytestmark = pytest.mark.libvirt

JOURNAL = "https://vshx.invalid/journal"
WORDS = ["--base", "sn1", "--top", "sn3"]
AFTER = ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]


@contextmanager
def stopped_qemu(lab: Lab) -> Iterator[None]:
    """The lab's QEMU stopped (SIGSTOP) inside the block; running again after it."""
    pid = int(Path(f"/run/libvirt/qemu/{lab.name}.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def journal_left(lab: Lab) -> bool:
    shown = subprocess.run(["virsh", "-c", URI, "metadata", lab.name, JOURNAL], capture_output=True)
    return shown.returncode == 0


def finished_by_recover(lab: Lab, tmp_path: Path, before: str) -> None:
    """Once QEMU runs again, the commit libvirt was asked for starts and ends by itself;
    recover finishes what the stopped vshx left, and every byte and moment is where it was."""
    recovered = run_vshx("recover", lab.name, "vda")
    assert recovered.returncode == 0, recovered.stderr
    wait_until(lambda: "Block Commit" not in block_job(lab.name), "the commit's end")
    assert not journal_left(lab)
    assert chain_files(domain_source(lab.name)) == AFTER
    assert lab.guest_hash(tmp_path) == before
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)
    cleaned = run_vshx("snapshot-cleanup", lab.name)  # the metadata follows the moments
    assert cleaned.returncode == 0, cleaned.stderr
    assert lab.check_moments(tmp_path) == ["sn1", "sn4"]
    # QEMU runs on the chain vshx reports
    shown = run_vshx("chain", lab.name, "vda")
    assert "base.qcow2 <- sn1.qcow2 <- sn4.qcow2 (active)" in shown.stdout, shown.stdout
    assert virsh("domstate", lab.name).stdout.strip() == "running"


def test_timeout_ends_the_wait_for_a_stopped_qemu(lab: Lab, tmp_path: Path) -> None:
    lab.record_moments(tmp_path)
    before = lab.guest_hash(tmp_path)
    with stopped_qemu(lab):
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "vshx", "-c", URI, "commit", lab.name, "vda", *WORDS,
             "--timeout", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        took = time.monotonic() - began
        assert done.returncode == 1, done.stderr
        assert "timed out: libvirt did not answer the start of the block job" in done.stderr
        assert f"vshx recover {lab.name} vda" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert took < 60, took
        assert journal_left(lab)  # recover's to finish: the job may start once QEMU answers
    finished_by_recover(lab, tmp_path, before)


def test_sigterm_ends_the_wait_for_a_stopped_qemu_after_saying_so(lab: Lab, tmp_path: Path) -> None:
    lab.record_moments(tmp_path)
    before = lab.guest_hash(tmp_path)
    with stopped_qemu(lab):
        waiting = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, "commit", lab.name, "vda", *WORDS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(12)  # past the 10 s after which vshx says that it waits
        assert waiting.poll() is None, waiting.communicate()
        waiting.send_signal(signal.SIGTERM)
        _out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 1, err
        assert "warning: libvirt has not answered the start of the block job for 10 s" in err
        assert "interrupted: libvirt did not answer the start of the block job" in err, err
        assert "Traceback" not in err
        assert journal_left(lab)
    finished_by_recover(lab, tmp_path, before)
