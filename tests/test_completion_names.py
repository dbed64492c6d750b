"""Shell completion reads one candidate per line: a name with a line break must not come back
as pieces (one of them a live shell word, found by a hostile tester in zsh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, virsh


@pytest.mark.libvirt
def test_a_domain_name_with_a_newline_is_not_offered_in_pieces(tmp_path: Path):
    plain = f"{LAB_PREFIX}nl"
    xml = (
        f"<domain type='qemu'><name>{plain}</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    # define refuses a line break in a name, domrename takes it (libvirt 9.0); only "/" is out
    name = f"{plain}\n$(touch PWNED)"
    virsh("domrename", plain, name)
    try:
        for shell in ("bash", "zsh", "fish"):
            proc = subprocess.run(
                [sys.executable, "-m", "vshx", "complete", "--shell", shell, "-c", URI, "--"]
                + [f"chain {LAB_PREFIX}nl"],
                capture_output=True,
                text=True,
                env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / shell)),
                cwd=tmp_path,
            )
            assert proc.returncode == 0
            assert "touch" not in proc.stdout and "PWNED" not in proc.stdout, proc.stdout
    finally:
        virsh("undefine", "--domain", name)
    assert not (tmp_path / "PWNED").exists()
