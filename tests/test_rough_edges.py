"""The rough edges a user meets first: COMMAND --help, a closed pipe, -x order, polkit noise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import URI, run_vshx


def test_command_help_is_help_command():
    asked = run_vshx("commit", "--help")
    helped = run_vshx("help", "commit")
    assert asked.returncode == 0 and asked.stdout == helped.stdout and asked.stderr == ""
    assert "--background" in asked.stdout
    # explain too (nu14 #1: "unknown command '--help'")
    asked, helped = run_vshx("explain", "--help"), run_vshx("help", "explain")
    assert asked.returncode == 0 and asked.stdout == helped.stdout and asked.stderr == ""


@pytest.mark.parametrize("words", [["--help"], ["help"], ["help", "commit"]])
def test_a_closed_pipe_is_no_traceback(words):
    read, write = os.pipe()
    os.close(read)  # the reader left before vshx wrote a byte: every write is EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vshx", *words], stdout=write, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write)
    assert proc.stderr == "", proc.stderr


def test_trace_lines_come_in_order_with_the_output():
    script = "help exit\nhelp connect\n"
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "-x", "-f", "-"],
        input=script,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    text = proc.stdout
    assert text.index("+ help exit") < text.index("exit - ") < text.index("+ help connect")
    assert text.index("+ help connect") < text.index("connect - ")


@pytest.mark.libvirt
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_passthrough_on_a_terminal_prints_no_polkit_noise():
    """virsh starts pkttyagent when it can open its controlling terminal; without a system
    D-Bus the agent prints "Authorization not available ..." on every command.  vshx runs
    virsh without one where the agent could not be asked anything (root, a session URI, no
    bus), so its output is what virsh prints from a script."""
    vshx = f"{sys.executable} -m vshx -c {URI} uri"
    proc = subprocess.run(
        ["script", "-qc", vshx, "/dev/null"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert URI in proc.stdout
    assert "Authorization not available" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("words", [["rebase"], ["rebase", "--backing", "sn1"]])
def test_rebase_usage_errors_carry_a_hint(words):
    """nu14 #8: two rebase usage errors had no hint: line."""
    proc = run_vshx(*words)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
    assert "\nhint: " in proc.stderr, proc.stderr
