"""A bare image's interrupted plan holds back every command on a file of its chain, not only
on the image it named: `pull top.qcow2` killed (its qemu-img may still run) and then
`commit mid.qcow2` must not run (the journal is keyed by the image the plan named)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import file_state, make_overlay, run_vshx

from vshx.plans import journal

pytestmark = pytest.mark.libvirt  # the usage scan asks libvirtd


def test_a_killed_bare_pull_holds_back_a_commit_of_its_middle_layer(tmp_path: Path) -> None:
    d = tmp_path / "bare"
    d.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "16M"])
    make_overlay(d / "mid.qcow2", "base.qcow2")
    make_overlay(d / "top.qcow2", "mid.qcow2")
    top = str(d / "top.qcow2")
    gone = subprocess.Popen(["true"])  # a pid that ran vshx once and is gone now
    gone.wait()
    entry = {
        "plan": f"pull {top}",
        "step": 2,
        "steps": 2,
        "what": "qemu-img rebase: copy what the guest sees into top.qcow2",
        "disk": "",
        "image": top,
        "pivot": "no",
        "pid": gone.pid,
        "time": f"{time.time():.0f}",
    }
    journal.state_place().write(journal.state_name(top), json.dumps(entry))
    before = file_state(d)
    for words in (
        ["commit", str(d / "mid.qcow2")],
        ["rebase", str(d / "mid.qcow2"), "--backing", ""],
    ):
        proc = run_vshx(*words)
        said = (words, proc.stderr)
        assert proc.returncode == 1, said
        assert f"an earlier vshx operation on {top}, whose chain shares files" in proc.stderr, said
        assert f"hint: see it with: vshx jobs; resolve it with: vshx recover {top}" in proc.stderr
        assert "Traceback" not in proc.stderr and file_state(d) == before, said
    assert top in run_vshx("jobs").stdout
    journal.state_place().remove(journal.state_name(top))  # resolved: the commit runs
    done = run_vshx("commit", str(d / "mid.qcow2"))
    assert done.returncode == 0, done.stderr


@pytest.mark.root  # mount --bind
def test_an_interrupted_plan_is_found_whatever_name_reaches_its_image(tmp_path: Path) -> None:
    """The journal of a bare image is keyed by the name the plan was given; the same file
    reached through a hard link in another directory, a bind mount of its directory or a
    symlinked directory is the same image (atk4 F-G): pull and shorten refuse there too."""
    d = tmp_path / "bare"
    d.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "16M"])
    make_overlay(d / "mid.qcow2", str(d / "base.qcow2"))
    make_overlay(d / "top.qcow2", str(d / "mid.qcow2"))
    for image, write in (("base", "write -P 1 0 2M"), ("mid", "write -P 2 0 1M"),
                         ("top", "write -P 3 1M 1M")):  # fmt: skip
        subprocess.run(["qemu-io", "-c", write, str(d / f"{image}.qcow2")], capture_output=True)
    top = str(d / "top.qcow2")
    gone = subprocess.Popen(["true"])  # a pid that ran vshx once and is gone now
    gone.wait()
    entry = {
        "plan": f"shorten {top}: drop mid.qcow2",
        "step": 2,
        "steps": 3,
        "what": "qemu-img commit: write mid.qcow2's view into base.qcow2",
        "disk": "",
        "image": top,
        "pivot": "no",
        "pid": gone.pid,
        "time": f"{time.time():.0f}",
    }
    journal.state_place().write(journal.state_name(top), json.dumps(entry))
    (tmp_path / "other").mkdir()
    linked = tmp_path / "other" / "t.qcow2"
    os.link(top, linked)
    (tmp_path / "symlinked").symlink_to(d)
    bound = tmp_path / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(bound)], check=True)
    try:
        before = file_state(d)
        for image in (linked, bound / "top.qcow2", tmp_path / "symlinked" / "top.qcow2"):
            for words in (
                ["pull", str(image)],
                ["pull", str(image), "--dry-run"],
                ["shorten", str(image), "--drop", "mid.qcow2"],
                ["shorten", str(image), "--drop", "mid.qcow2", "--dry-run"],
            ):
                proc = run_vshx(*words)
                said = (words, proc.stdout, proc.stderr)
                assert proc.returncode == 1, said
                # through the symlink the journal's own key is found (the same real path):
                # it is named as given, and recover of that name finds the journal
                named = str(image) if "symlinked" in str(image) else top
                assert f"an earlier vshx operation on {named}" in proc.stderr, said
                assert f"did not finish: shorten {top}" in proc.stderr, said
                assert f"resolve it with: vshx recover {named}" in proc.stderr, said
                assert "Traceback" not in proc.stderr and file_state(d) == before, said
        assert top in run_vshx("jobs").stdout
    finally:
        subprocess.run(["umount", str(bound)], check=False)
        journal.state_place().remove(journal.state_name(top))
