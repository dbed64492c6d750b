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
