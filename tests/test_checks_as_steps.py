"""Every check is a step: what vshx refuses on, a printed script stops on under `sh -e`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import destroy_lab, file_state, make_lab, run_vshx

from vshx.merging import checks
from vshx.spec import heredoc


def test_check_lines_paste_back_as_the_same_check():
    space = checks.space_step("/var/lib/x.qcow2", 12345)
    words = ["df", "--output=avail", "-B1", "--", "/var/lib", "|", "awk"]
    words.append("NR == 2 { ok = $1 >= 12345 } END { exit !ok }")
    again = checks.pasted(words)
    assert again is not None and again.equivalent() == space.equivalent()
    absent = checks.absent_step("/a b/c")
    words = ["test", "!", "-e", "/a b/c", "-a", "!", "-L", "/a b/c"]
    assert checks.pasted(words).equivalent() == absent.equivalent()  # type: ignore[union-attr]
    assert checks.pasted(["test", "!", "-e", "/a", "-a", "!", "-L", "/b"]) is None
    assert checks.pasted(["df", "-h"]) is None


def test_device_check_lines_paste_back_as_the_same_check():
    step = checks.device_step("/dev/vg 0/lv", 12345)
    words = [*checks.LSBLK, "/dev/vg 0/lv", "|", "awk"]
    words.append("NR == 1 { ok = $1 >= 12345 } END { exit !ok }")
    again = checks.pasted(words)
    assert again is not None and again.equivalent() == step.equivalent()
    shown = "lsblk --bytes --nodeps --noheadings --output SIZE -- '/dev/vg 0/lv' | awk '"
    assert step.equivalent().startswith(shown)
    assert checks.pasted([*words[:-1], "1"]) is None
    assert checks.pasted(["lsblk", "/dev/x"]) is None


def test_here_document_openers():
    assert heredoc.opened("virsh update-device d /dev/stdin --config <<'VSHX_EOF'") == (
        "virsh update-device d /dev/stdin --config",
        "VSHX_EOF",
    )
    assert heredoc.opened('x <<"END"') == ("x", "END")
    assert heredoc.opened("x <<END") == ("x", "END")
    assert heredoc.opened("x '<<END'") is None  # quoted: a word, not a here-document
    assert heredoc.opened("x a<<b c") is None
    lines = iter(["<disk/>\n", "VSHX_EOF\n", "after\n"])
    assert heredoc.read_body("VSHX_EOF", lambda: next(lines, None)) == "<disk/>\n"


@pytest.mark.libvirt
@pytest.mark.root  # mounts a tmpfs
# a file system whose name holds spaces shifted df -P's columns (found by a hostile tester)
@pytest.mark.parametrize("source", ["tmpfs", "vshx small fs"])
def test_a_full_disk_stops_vshx_and_its_printed_script_alike(tmp_path: Path, source: str):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", source, str(small)], check=True)
    lab = None
    try:
        lab = make_lab(small, running=False, fill=4)
        argv = ("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        script = run_vshx(*argv, "--dry-run").stdout
        assert "df --output=avail -B1 -- " in script
        stat = os.statvfs(small)
        with open(small / "filler", "wb") as filler:  # leave 1 MiB free
            os.posix_fallocate(filler.fileno(), 0, stat.f_bavail * stat.f_frsize - (1 << 20))
        untouched = file_state(lab.dir)
        refused = run_vshx(*argv)
        assert refused.returncode == 1 and "not enough space" in refused.stderr
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode != 0
        assert file_state(lab.dir) == untouched  # neither went past the check
    finally:
        if lab is not None:
            destroy_lab(lab)
        subprocess.run(["umount", str(small)], check=False)
