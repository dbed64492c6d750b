"""The loopback sshd the remote-host and Ansible tests stand on: really another way in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import virsh
from sshd import Sshd, hidden

pytestmark = [pytest.mark.libvirt, pytest.mark.root]


def test_libvirt_reaches_this_host_through_the_server(sshd: Sshd) -> None:
    """libvirt's own ssh transport logs in with the URI's keyfile and the wrapper's known host."""
    done = subprocess.run(
        ["virsh", "-c", sshd.uri(), "hostname"],
        capture_output=True,
        text=True,
        env=sshd.env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == virsh("hostname").stdout.strip()


def test_hidden_directories_are_empty_only_inside(sshd: Sshd, tmp_path: Path) -> None:
    """A local read fails where the remote host still sees the file."""
    (tmp_path / "image").write_text("x")
    inside = subprocess.run(
        hidden([tmp_path], ["ls", "-A", str(tmp_path)]), capture_output=True, text=True
    )
    assert inside.returncode == 0 and inside.stdout == "", inside.stderr
    remote = subprocess.run(
        hidden([tmp_path], sshd.ssh_argv(f"cat {tmp_path}/image")),
        capture_output=True,
        text=True,
        env=sshd.env(),
        timeout=120,
    )
    assert remote.stdout == "x", remote.stderr
    assert (tmp_path / "image").read_text() == "x"
