"""A domain whose description holds a character XML 1.0 forbids (atk8 F4).

libvirt keeps `virsh desc D $'\\x1c'` in the definition as the raw byte, which no XML parser
reads: vshx failed with "internal error ... ParseError ... this is a bug" on that domain and,
through the usage scan, on every merge on the host.  Now its disks are read without its
description and title (text only, never a disk), and an offline plan that must update its
definition refuses up front, since libvirt's own update-device fails on such a definition.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Lab, chain_files, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def test_a_control_character_in_a_description(made, tmp_path: Path):
    odd: Lab = made(running=False)
    other: Lab = made(running=False)
    assert virsh("desc", odd.name, "--config", "--new-desc", "a\x1cb").returncode == 0
    try:
        shown = run_vshx("chain", odd.name, "vda")
        assert shown.returncode == 0, shown.stderr
        files = sorted(p.name for p in odd.dir.iterdir())
        refused = run_vshx("commit", odd.name, "vda", "--top", "sn2", "--base", "sn1")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "character XML 1.0 does not allow" in refused.stderr, refused.stderr
        assert "nothing was changed" in refused.stderr and "Traceback" not in refused.stderr
        assert sorted(p.name for p in odd.dir.iterdir()) == files
        # another domain's merge scans this one too: not stopped by its description
        done = run_vshx("commit", other.name, "vda", "--top", "sn2", "--base", "sn1")
        assert done.returncode == 0, done.stderr
        assert "sn2.qcow2" not in chain_files(other.active)
        listed = run_vshx("jobs")
        assert listed.returncode == 0, listed.stderr
    finally:
        subprocess.run(
            ["virsh", "desc", odd.name, "--config", "--new-desc", ""], capture_output=True
        )
