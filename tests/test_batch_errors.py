"""Where a batch stops: vshx's own errors carry FILE:LINE, and so does a passed-through line's
failure (the README walk-through: a failing virsh or qemu-img line showed only the tool's own
error, without the line).  No daemon needed: the URI is never reached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
