"""virsh 9.0 takes no abbreviated option of a command (unlike qemu-img's getopt_long), so no
abbreviation can turn a read vshx runs under --dry-run into a change.

Checked against the real virsh on its built-in test driver (test:///default, no daemon):
virsh refuses each abbreviation, and vshx's reading calls each one "may change" (printed,
never run) all the same.  virsh's own options before the command do go through getopt_long
(``--conn=URI``): such a line is never taken for this session's URI, so under --dry-run it is
only printed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vshx.shell.passthrough import strip_virsh_prefix
from vshx.shell.readonly import virsh_reads

ABBREVIATED = [
    ("list", ["--al"]),
    ("dumpxml", ["test", "--inact"]),
    ("dumpxml", ["--dom", "test"]),
    ("domjobinfo", ["test", "--comp"]),  # --completed (which deletes the statistics)
    ("snapshot-current", ["test", "--na"]),
    ("dominfo", ["--d", "test"]),
    ("schedinfo", ["test", "--conf"]),
    ("blockjob", ["test", "vda", "--ab"]),  # --abort: not a read in any spelling
]


@pytest.mark.parametrize(("command", "args"), ABBREVIATED)
def test_an_abbreviated_virsh_option_is_not_a_read(command: str, args: list[str]):
    assert not virsh_reads(command, args)


@pytest.mark.skipif(shutil.which("virsh") is None, reason="needs virsh")
@pytest.mark.parametrize(("command", "args"), ABBREVIATED)
def test_real_virsh_refuses_abbreviated_options(command: str, args: list[str]):
    proc = subprocess.run(
        ["virsh", "-c", "test:///default", command, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "doesn't support option" in proc.stderr, proc.stderr


def test_an_abbreviated_global_virsh_option_never_counts_as_this_uri():
    uri = "qemu:///system"
    assert strip_virsh_prefix(["--conn=" + uri, "destroy", "d"], uri) is None
    assert strip_virsh_prefix(["--conn", uri, "destroy", "d"], uri) is None
    assert strip_virsh_prefix(["-c", uri, "dominfo", "d"], uri) == ["dominfo", "d"]
