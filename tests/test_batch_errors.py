"""Where a batch stops: vshx's own errors carry FILE:LINE, and so does a passed-through line's
failure (the README walk-through: a failing virsh or qemu-img line showed only the tool's own
error, without the line).  No daemon needed: the URI is never reached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI


def test_a_failing_pasted_line_is_named_and_a_dash_line_may_fail(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"
    script = tmp_path / "s.vshx"
    script.write_text(f"-qemu-img info {missing}\nqemu-img info {missing}\nqemu-img info x\n")
    argv = [sys.executable, "-m", "vshx", "-c", "test:///default", "-f", str(script)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    said = proc.stderr.splitlines()
    assert (
        f"{script}:2: error: qemu-img failed (exit 1): the lines after this one were not run"
        in (said)
    ), proc.stderr
    assert said[-1].startswith("hint: ") and f"{script}:1:" not in proc.stderr
    assert "'x'" not in proc.stderr  # line 3 never ran


def test_a_pasted_line_vshx_reads_itself_names_its_line_once(tmp_path: Path) -> None:
    script = tmp_path / "s.vshx"
    script.write_text("# a comment\nvirsh blockcommit --nosuchopt x vda\n")
    argv = [sys.executable, "-m", "vshx", "-c", "test:///default", "-f", str(script)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{script}:2: error: command 'commit' has no option --nosuchopt")
    assert proc.stderr.count("error:") == 1, proc.stderr


def _chain_with_a_byte_name(tmp_path: Path) -> tuple[bytes, bytes]:
    """base\\xff.qcow2 <- top.qcow2, top holding 64 KiB of 0x5a (written through qemu-io)."""
    base = bytes(tmp_path) + b"/base\xff.qcow2"
    top = bytes(tmp_path) + b"/top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"], check=True)
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top]
    subprocess.run(create, check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 64k", top], check=True, capture_output=True)
    return base, top


def _shows_the_pattern(image: bytes) -> bool:
    read = ["qemu-io", "-r", "-c", "read -P 0x5a 0 64k", image]
    proc = subprocess.run(read, capture_output=True, text=True)
    return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout


@pytest.mark.libvirt
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_printed_plan_naming_a_byte_that_is_not_utf8_runs_with_dash_f(
    tmp_path: Path, how: str
) -> None:
    """An outside tester's `vshx --dry-run` script for a base named base\\xff.qcow2 ran under
    sh -e but `vshx -f` refused the whole script as "not UTF-8 text": a script is read as the
    command line is (bytes that are not UTF-8 kept as they are)."""
    base, top = _chain_with_a_byte_name(tmp_path)
    plan = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "commit", top, "--dry-run"],
        capture_output=True,
        check=False,
    )
    assert plan.returncode == 0, plan.stderr.decode(errors="replace")
    assert b"base\xff.qcow2" in plan.stdout
    script = tmp_path / "plan.sh"
    script.write_bytes(plan.stdout)
    argv = [sys.executable, "-m", "vshx", "-c", URI, "-x", "-f"]
    argv += [str(script)] if how == "file" else ["-"]
    stdin = None if how == "file" else plan.stdout
    ran = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert b"Traceback" not in ran.stderr
    assert _shows_the_pattern(base)  # top's data is in base now
    check = subprocess.run(["qemu-img", "check", "-q", base], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
