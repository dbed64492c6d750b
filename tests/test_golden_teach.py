"""Golden files of what `explain` teaches, in the style of libvirt's virshtestdata.

Each case's output (lab name, directory and test URI replaced by LAB, DIR and URI, the sizes
of free-space checks by SIZE and BYTES, the state checks' UUID and hash by UUID and SHA256)
must match tests/golden/NAME.out;
VSHX_UPDATE_GOLDEN=1 rewrites them after a deliberate change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import URI, Lab, run_vshx

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU

GOLDEN = Path(__file__).resolve().parent / "golden"

LIVE = {
    "commit": ["commit", "{lab}", "vda", "--base", "sn1", "--top", "sn3"],
    "active-commit": ["commit", "{lab}", "vda", "--active", "--pivot"],
    "pull": ["pull", "{lab}", "vda", "--base", "sn2"],
    "full-pull": ["pull", "{lab}", "vda"],
    "keep-overlay": ["commit", "{lab}", "vda", "--active", "--keep-overlay"],
}
OFFLINE = {
    "offline-commit": ["commit", "{lab}", "vda", "--base", "sn1", "--top", "sn3"],
    "offline-flatten-pull": ["pull", "{lab}", "vda"],
    "rebase-safe": ["rebase", "{dir}/sn3.qcow2", "--backing", "sn1"],
}


def explained(lab: Lab, argv: list[str]) -> str:
    words = [w.format(lab=lab.name, dir=lab.dir) for w in argv]
    proc = run_vshx("explain", *words)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace(str(lab.dir), "DIR").replace(lab.name, "LAB")
    text = text.replace(f"virsh -c {URI} ", "virsh -c URI ")
    # free-space checks count allocated blocks, which the file system decides
    text = re.sub(r"check: [\d.]+ \w+ free", "check: SIZE free", text)
    text = re.sub(r"\$1 >= \d+", "$1 >= BYTES", text)
    # the state checks name the domain's UUID and the hash of the names in the directories
    text = re.sub(
        r"(grep -qxF --|dumpxml --inactive|checkpoint-list --name|snapshot-list) "
        r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
        r"\1 UUID",
        text,
    )
    return re.sub(r"'[0-9a-f]{64}  -'", "'SHA256  -'", text)


def check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.out"
    if os.environ.get("VSHX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name}: explain output changed (see {path})"


@pytest.mark.parametrize("name", sorted(LIVE))
def test_live_explain_matches_its_golden_file(lab: Lab, name: str):
    check(name, explained(lab, LIVE[name]))


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_explain_matches_its_golden_file(offline_lab: Lab, name: str):
    check(name, explained(offline_lab, OFFLINE[name]))
