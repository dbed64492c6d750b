"""SIGTERM (kill, timeout, systemd stopping a unit) during a merge (atk9 F8): vshx ended
without a word, where Ctrl-C says `error: interrupted` and how to go on.  Now SIGTERM ends a
command as Ctrl-C does: its error and hint, its journal kept for `vshx recover`, which then
finishes the merge with every byte where it was."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import URI, chain_files, domain_source, qemu_check, run_vshx
from conftest import make_lab as build_lab
from conftest import wait_for as wait_until

pytestmark = pytest.mark.libvirt


def qemu_img_runs(lab_dir: Path) -> bool:
    found = subprocess.run(["pgrep", "-f", f"qemu-img commit .*{lab_dir}"], capture_output=True)
    return found.returncode == 0


def test_sigterm_ends_an_offline_commit_as_ctrl_c_does(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, running=False, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        # --bandwidth 1: qemu-img commit -r 1 MiB/s, so the step is still running when told
        merging = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, "commit", lab.name, "vda",
             "--base", "sn1", "--top", "sn3", "--bandwidth", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: qemu_img_runs(lab.dir) or merging.poll() is not None, "qemu-img")
        time.sleep(0.5)
        merging.send_signal(signal.SIGTERM)
        _out, err = merging.communicate(timeout=60)
        assert merging.returncode == 1, err
        assert "error: interrupted" in err and "vshx recover" in err, err
        assert "Traceback" not in err
        jobs = run_vshx("jobs", lab.name)
        assert "interrupted vshx" in jobs.stdout, jobs.stdout
        # its qemu-img runs on (as after kill -9; Ctrl-C stops it with the terminal's SIGINT):
        # recover waits for it, and leaves the chain as before (the commit's data step only)
        recovered = run_vshx("recover", lab.name, "vda", "--wait")
        assert recovered.returncode == 0, recovered.stderr
        assert "recovered" in recovered.stdout + recovered.stderr
        assert lab.guest_hash(tmp_path) == before  # the chain as before, the same bytes
        again = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        assert again.returncode == 0, again.stderr
        after = ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert chain_files(domain_source(lab.name, inactive=True)) == after
        assert lab.guest_hash(tmp_path) == before
        for path in lab.dir.glob("*.qcow2"):
            qemu_check(path)
        started = run_vshx("start", lab.name)  # the domain starts on the chain vshx reports
        assert started.returncode == 0, started.stderr
        assert chain_files(domain_source(lab.name)) == after
    finally:
        from conftest import destroy_lab

        destroy_lab(lab)
