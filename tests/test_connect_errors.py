"""What vshx says when it cannot reach the URI it was given (no daemon needed: libvirt refuses
these URIs before it looks for one)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_vshx_uri(uri: str, *words: str, stdin: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vshx", "-c", uri, *words]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


@pytest.mark.root  # a user who is not root meets libvirt's session-daemon start first, whose
# error (no system bus, here) says nothing of the URI
def test_a_uri_libvirt_cannot_read_gets_a_uri_hint_and_the_tour_fails() -> None:
    for uri in ("qemu:///nosuch", "nosuchdriver:///x"):
        for words in (["list"], ["--tour"]):
            proc = run_vshx_uri(uri, *words, stdin="")
            assert proc.returncode == 1, (uri, words, proc.stdout, proc.stderr)
            assert f"error: cannot connect to {uri}" in proc.stderr
            assert "hint: check the URI: qemu:///system" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("uri", "transport"),
    [("qemu+tcp://127.0.0.1:1/system", "tcp"), ("qemu+ssh://root@127.0.0.1:1/system", "ssh")],
)
def test_a_remote_uri_that_cannot_be_reached_gets_a_remote_hint(uri: str, transport: str) -> None:
    """An outside tester met "as root: virtlogd -d; libvirtd -d" for a refused qemu+ssh:// URI:
    advice to start daemons on this machine, when the daemon is on another one."""
    proc = run_vshx_uri(uri, "list", stdin="")
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot connect to {uri}" in proc.stderr
    hint = proc.stderr.split("hint: ", 1)[1]
    assert f"reaches its daemon over {transport} at 127.0.0.1:1" in hint, hint
    assert "virtlogd -d" not in hint and "nothing needs starting on this machine" in hint
    assert "Traceback" not in proc.stderr
