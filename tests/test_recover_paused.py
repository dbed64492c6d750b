"""A vshx killed inside its own flush step (suspend, then resume, before it deletes the
merged-away files) leaves the domain paused.  Its journal says so (written before the suspend),
``jobs`` says vshx left it paused, and ``recover`` resumes it and finishes.  A pause the
journal does not show to be vshx's is never resumed: recover refuses, keeps the journal and
says to resume it (exit 1), never "recovered" (atk7 F2, F5).

An offline plan whose domain is started after its last step: its journal and its record of
moments are cleared and written where the running domain keeps them too (atk7 F3).

The kills are made at the exact moment by the vshx process itself (its libvirt call wrapped),
not by a race with a timer.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import URI, Lab, destroy_lab, make_lab, run_vshx, snapshot_names, virsh

pytestmark = pytest.mark.libvirt

JOURNAL = "https://vshx.invalid/journal"
MOMENTS = "https://vshx.invalid/moments"

# vshx, killed (-9) right after its suspend returned: the domain is paused by vshx's own call
KILLED_AFTER_SUSPEND = """
import os, signal
import libvirt
real = libvirt.virDomain.suspend
def suspend(self):
    real(self)
    os.kill(os.getpid(), signal.SIGKILL)
libvirt.virDomain.suspend = suspend
from vshx.frontends.cli import run
run()
"""

# vshx whose shut-off domain is started (by another client) after its last step, once it has
# looked whether the domain runs, right before it writes its record of moments and clears its
# journal: libvirt copies the persistent metadata (the journal) into the live definition
STARTED_BEFORE_RECORD = """
import subprocess, sys
from vshx.plans import ledger
real = ledger.merged
def merged(target, *args, **kwargs):
    if target.dom is not None and not target.dom.isActive():
        subprocess.run(["virsh", "-c", sys.argv[2], "start", target.dom.name()], check=True)
    return real(target, *args, **kwargs)
ledger.merged = merged
from vshx.frontends.cli import run
run()
"""


def run_patched(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, "-c", URI, *args], capture_output=True, text=True
    )


def state(lab: Lab) -> str:
    return virsh("domstate", lab.name, "--reason").stdout.strip()


def metadata(lab: Lab, ns: str, *where: str) -> str | None:
    found = subprocess.run(
        ["virsh", "-c", URI, "metadata", lab.name, "--uri", ns, *where],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def killed_in_flush(lab: Lab, *args: str) -> None:
    done = run_patched(KILLED_AFTER_SUSPEND, *args)
    assert done.returncode == -9, (done.stdout, done.stderr)
    assert state(lab) == "paused (user)"


COMMIT = ["commit", "vda", "--top", "sn3", "--base", "sn1", "--delete"]


def test_recover_asks_for_the_domain_vshx_probably_left_paused(tmp_path: Path) -> None:
    """Killed between its suspend and its resume: jobs says vshx probably left the domain
    paused; recover (and its --dry-run) refuses, changing nothing, since that pause cannot be
    told from one its user made since (atk8 F5); resumed by its user, recover finishes."""
    lab = make_lab(tmp_path, layers=4, fill=8)
    try:
        before = lab.guest_hash(tmp_path)
        killed_in_flush(lab, COMMIT[0], lab.name, *COMMIT[1:])
        entry = metadata(lab, JOURNAL)
        assert entry is not None and 'pauses="yes"' in entry  # journaled before the suspend
        jobs = run_vshx("jobs", lab.name)
        assert jobs.returncode == 0, jobs.stderr
        assert f"{lab.name} was probably left paused by vshx" in jobs.stdout, jobs.stdout

        for dry in (["--dry-run"], []):
            refused = run_vshx(*dry, "recover", lab.name)
            assert refused.returncode == 1, (refused.stdout, refused.stderr)
            assert "probably vshx's" in refused.stderr and "recovered" not in refused.stdout
            assert f"virsh resume {lab.name}" in refused.stderr
            assert state(lab) == "paused (user)"  # nothing resumed, nothing deleted
            assert lab.layer("sn2").exists() and lab.layer("sn3").exists()
            assert metadata(lab, JOURNAL) is not None

        virsh("resume", lab.name)
        done = run_vshx("recover", lab.name)
        assert done.returncode == 0, done.stderr
        assert "recovered" in done.stderr + done.stdout
        assert state(lab).startswith("running")
        assert not lab.layer("sn2").exists() and not lab.layer("sn3").exists()
        assert metadata(lab, JOURNAL) is None
        assert lab.guest_hash(tmp_path) == before
    finally:
        destroy_lab(lab)


def test_recover_refuses_a_pause_it_cannot_tell_its_own(tmp_path: Path) -> None:
    """The journal does not say vshx was at its flush step (as an older vshx's): recover
    resumes nothing, deletes nothing, keeps the journal, exits 1 with the way on."""
    lab = make_lab(tmp_path, layers=4, fill=8)
    try:
        killed_in_flush(lab, COMMIT[0], lab.name, *COMMIT[1:])
        text = metadata(lab, JOURNAL)
        assert text is not None
        node = ET.fromstring(text)
        node.attrib.pop("pauses", None)
        virsh(
            "metadata", lab.name, "--uri", JOURNAL, "--key", "vshx", "--set",
            ET.tostring(node, encoding="unicode"), "--live", "--config",
        )  # fmt: skip
        assert "left paused by vshx" not in run_vshx("jobs", lab.name).stdout

        done = run_vshx("recover", lab.name)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "recovered" not in done.stdout + done.stderr
        assert "does not show that vshx paused it" in done.stderr
        assert f"virsh resume {lab.name}" in done.stderr
        assert state(lab) == "paused (user)"
        assert lab.layer("sn2").exists() and lab.layer("sn3").exists()
        assert metadata(lab, JOURNAL) is not None  # kept: recover finishes once resumed

        virsh("resume", lab.name)
        again = run_vshx("recover", lab.name)
        assert again.returncode == 0, again.stderr
        assert not lab.layer("sn2").exists() and not lab.layer("sn3").exists()
        assert metadata(lab, JOURNAL) is None
    finally:
        destroy_lab(lab)


def test_recover_of_a_snapshot_delete_killed_in_its_pause(tmp_path: Path) -> None:
    """Two disks: killed after the snapshot's metadata was forgotten, in the flush step.
    recover refuses the paused domain; resumed, recover deletes the files, says the snapshot
    was deleted already (no "Domain snapshot sn3 deleted" for a snapshot that is not there)
    and clears the journal: a second recover has nothing to do."""
    lab = make_lab(tmp_path, layers=4, fill=8, disks=2)
    try:
        killed_in_flush(lab, "snapshot-delete", lab.name, "sn3")
        assert "sn3" not in snapshot_names(lab.name)
        refused = run_vshx("recover", lab.name)
        assert refused.returncode == 1 and "probably vshx's" in refused.stderr, refused.stderr
        assert state(lab) == "paused (user)"
        virsh("resume", lab.name)
        done = run_vshx("recover", lab.name)
        assert done.returncode == 0, (done.stdout, done.stderr)
        out = done.stdout + done.stderr
        assert "Domain snapshot sn3 deleted" not in out
        assert "sn3: already deleted" in out
        assert state(lab).startswith("running")
        assert metadata(lab, JOURNAL) is None
        for disk in lab.targets:
            assert not lab.layer("sn3", disk).exists()
        again = run_vshx("recover", lab.name)
        assert again.returncode == 0, again.stderr
        assert "no job and no journal" in again.stdout + again.stderr
    finally:
        destroy_lab(lab)


def test_a_domain_started_before_the_journal_is_cleared_keeps_no_journal(
    tmp_path: Path,
) -> None:
    lab = make_lab(tmp_path, layers=3, running=False)
    try:
        done = run_patched(
            STARTED_BEFORE_RECORD, "commit", lab.name, "vda", "--top", "sn2", "--base", "base"
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert state(lab).startswith("running")  # started at that moment
        assert metadata(lab, JOURNAL) is None  # the live definition's copy too
        assert metadata(lab, JOURNAL, "--config") is None
        assert metadata(lab, MOMENTS) == metadata(lab, MOMENTS, "--config") is not None
        jobs = run_vshx("jobs", lab.name)
        assert "no block jobs and no interrupted vshx operations" in jobs.stdout, jobs.stdout
        plan = run_vshx("--dry-run", "pull", lab.name, "vda")
        assert plan.returncode == 0, plan.stderr
    finally:
        destroy_lab(lab)
