"""The unit tier runs anywhere: no virsh on PATH, no libvirtd, any user (pgcli-style skips).

Each test runs a small pytest session of its own with an empty PATH, so neither virsh nor
qemu-img can be found, and reads its summary: the session must end with its summary (the
clean-up hook once died there without virsh) and a daemon test must skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def pytest_without_virsh(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        env=env,
        check=False,
    )


def test_a_unit_file_passes_and_the_session_ends_cleanly_without_virsh(tmp_path: Path):
    proc = pytest_without_virsh(tmp_path, str(TESTS / "test_lexer.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_a_daemon_test_skips_with_the_reason_without_virsh(tmp_path: Path):
    proc = pytest_without_virsh(tmp_path, str(TESTS / "test_shell_integration.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIPPED" in proc.stdout and "virsh is not on PATH" in proc.stdout, proc.stdout
    assert " passed" not in proc.stdout and "error" not in proc.stdout.lower()
