"""An empty argument of a qemu-img at work (``rebase -u -b '' FILE``: make FILE standalone) is
a word of its command: `vshx jobs` and recover's hints show it quoted as '' (shell_line), as
the process has it, never dropped (``-b FILE`` is another command).  No libvirt: a real
process on this machine, and the remote /proc reader's parser."""

from __future__ import annotations

import base64
import shlex
import subprocess
import sys
import time
from pathlib import Path

from vshx_plugins.jobs import worker_text

from vshx.storage import procs
from vshx.storage.remote_procs import parse_ps

ARGV = ["qemu-img", "rebase", "-u", "-b", "", "-F", ""]


def test_cmdline_words_keep_the_empty_ones():
    assert procs.argv_of(b"qemu-img\0rebase\0-b\0\0/x/a b.qcow2\0") == [
        "qemu-img",
        "rebase",
        "-b",
        "",
        "/x/a b.qcow2",
    ]
    assert procs.argv_of(b"qemu-img\0info\0") == ["qemu-img", "info"]
    assert procs.argv_of(b"qemu-img\0info") == ["qemu-img", "info"]  # a rewritten cmdline
    assert procs.argv_of(b"") == []


def test_a_remote_qemu_img_keeps_its_empty_arguments():
    stat = Path("/proc/self/stat").read_text().strip()
    cmdline = base64.b64encode("\0".join([*ARGV, "/x/a.qcow2"]).encode() + b"\0").decode()
    out = "\0".join(["1700000000", "100", "4242", stat, cmdline, "/x", "", ""]).encode()
    (seen,) = parse_ps(out)
    assert seen.argv == [*ARGV, "/x/a.qcow2"]


def test_jobs_shows_a_qemu_img_at_work_with_its_empty_arguments_quoted(tmp_path: Path):
    image = tmp_path / "a b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    # a process that is qemu-img by its argv (as /proc shows it) and sleeps with these words
    code = "import time; time.sleep(120)"
    worker = subprocess.Popen(
        ["bash", "-c", 'exec -a qemu-img "$0" -c "$1" "${@:2}"', sys.executable, code]
        + [*ARGV[1:], str(image)]
    )
    try:
        for _ in range(100):
            found = procs.at_work_on([str(image)])
            if found:
                break
            time.sleep(0.05)
        (seen,) = found
        assert seen.pid == worker.pid
        text = worker_text(seen)
        line = text.split(": ", 1)[1]
        assert line.endswith(f"rebase -u -b '' -F '' {shlex.quote(str(image))}"), text
        assert shlex.split(line)[-7:] == [*ARGV[1:], str(image)]
    finally:
        worker.kill()
        worker.wait()
