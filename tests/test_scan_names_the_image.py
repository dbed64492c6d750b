"""An image of the scanned directory whose chain vshx cannot read stops the plan, named (atk20
#6: a stray K.qcow2 backed by /dev/zero beside an unrelated chain made `commit J.qcow2` refuse
with "/dev/zero is a character device" and no word of K.qcow2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import file_state, run_vshx

pytestmark = pytest.mark.libvirt  # the usage scan asks libvirtd for domains and pools


def test_an_unreadable_neighbour_is_named_and_nothing_changes(tmp_path: Path) -> None:
    def create(*words: str) -> None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *words], check=True)

    create(str(tmp_path / "C.qcow2"), "16M")
    create("-F", "qcow2", "-b", str(tmp_path / "C.qcow2"), str(tmp_path / "J.qcow2"))
    create("-u", "-F", "raw", "-b", "/dev/zero", str(tmp_path / "K.qcow2"), "16M")
    before = file_state(tmp_path)
    for extra in ([], ["--dry-run"]):
        done = run_vshx("commit", str(tmp_path / "J.qcow2"), *extra)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot tell whether {tmp_path / 'K.qcow2'} uses these files" in done.stderr
        assert "/dev/zero is a character device" in done.stderr and "\nhint: " in done.stderr
    assert file_state(tmp_path) == before
