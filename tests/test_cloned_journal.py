"""A clone carries a copy of vshx's journal and ledger (domain metadata): never acted on.

``virsh dumpxml`` + ``define`` (and virt-clone) copy the domain's ``<metadata>``, vshx's
journal and ledger with it.  An outside tester found ``vshx recover CLONE`` rolling the
ORIGINAL's interrupted snapshot-delete forward on the original's files, and the clone stuck
for good.  Entries and ledgers now carry the UUID of the domain they were written for.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import (
    LAB_PREFIX,
    URI,
    block_job,
    destroy_lab,
    make_lab,
    run_vshx,
    snapshot_names,
    virsh,
    wait_for,
)


class FakeDom:
    """The two calls the journal and the ledger readers make."""

    def __init__(self, own: str, text: str) -> None:
        self.own, self.text = own, text

    def UUIDString(self) -> str:
        return self.own

    def metadata(self, _kind: int, _ns: str, _flags: int) -> str:
        return self.text


def test_an_entry_written_for_another_domain_is_a_copy() -> None:
    from vshx.plans import journal

    text = '<journal plan="delete s2" step="2" steps="5" pid="1" uuid="aaaa"/>'
    copied = journal.read_domain(FakeDom("bbbb", text))  # type: ignore[arg-type]
    assert copied is not None and copied.copied and not copied.still_running()
    assert "copy of another domain's vshx journal" in copied.describe()
    own = journal.read_domain(FakeDom("aaaa", text))  # type: ignore[arg-type]
    assert own is not None and not own.copied
    old = journal.read_domain(FakeDom("bbbb", text.replace(' uuid="aaaa"', "")))  # type: ignore[arg-type]
    assert old is not None and not old.copied  # an older vshx's entry: the domain's own


def test_a_ledger_written_for_another_domain_vouches_for_nothing() -> None:
    from vshx.storage.moments import Verdict, ledger_xml, read_ledger

    verdict = Verdict("s1", 1, "vda", "intact", "/x/base.qcow2", "", "5", "/x/base.qcow2")
    text = ledger_xml([verdict], "aaaa")
    assert read_ledger(FakeDom("bbbb", text)) == {}  # type: ignore[arg-type]
    assert list(read_ledger(FakeDom("aaaa", text))) == [verdict.key]  # type: ignore[arg-type]
    assert list(read_ledger(FakeDom("bbbb", ledger_xml([verdict])))) == [verdict.key]  # type: ignore[arg-type]


def images_in(directory: Path) -> list[str]:
    """The directory's files but vshx's chain locks (a killed vshx leaves one per layer; the
    next vshx that meets one removes it: vshx/plans/lock.py)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def interrupted_delete(name: str) -> None:
    """vshx deleting sn2, killed while its (throttled) block commit runs; the job then ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vshx", "-c", URI, "snapshot-delete", name, "sn2"]
        + ["--bandwidth", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "Block Commit" in block_job(name), "sn2's block commit")
    proc.kill()
    proc.communicate()
    virsh("blockjob", name, "vda", "--bandwidth", "0")
    wait_for(lambda: "Block Commit" not in block_job(name), "the commit to end")


def define_clone(name: str, clone: str, directory: Path, active: str) -> None:
    """As users clone: dumpxml, another name, no UUID, a copy of the disk."""
    copy = directory / "clone.qcow2"
    subprocess.run(["cp", "--sparse=always", active, str(copy)], check=True)
    root = ET.fromstring(virsh("dumpxml", name, "--inactive").stdout)
    root.find("name").text = clone  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    root.find("./devices/disk/source").set("file", str(copy))  # type: ignore[union-attr]
    virsh("define", "/dev/stdin", stdin=ET.tostring(root, encoding="unicode"))


@pytest.mark.libvirt
def test_recover_on_a_clone_only_clears_its_copied_journal(tmp_path: Path) -> None:
    """The original's interrupted snapshot-delete is the original's: recover CLONE clears the
    clone's copy and nothing else (before: it rolled the original's plan forward on the
    original's files and left the clone stuck)."""
    lab = make_lab(tmp_path, running=True, layers=3, fill=6)
    clone = LAB_PREFIX + "clone-" + uuid.uuid4().hex[:6]
    try:
        interrupted_delete(lab.name)
        snaps, files = snapshot_names(lab.name), images_in(lab.dir)
        define_clone(lab.name, clone, tmp_path, str(lab.active))
        listed = run_vshx("jobs", clone)
        assert "copied vshx journal" in listed.stdout, listed.stdout + listed.stderr
        dry = run_vshx("recover", clone, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        acting = [w for w in dry.stdout.splitlines() if w and not w.startswith("#")]
        assert all(lab.name not in line for line in acting), dry.stdout
        refused = run_vshx("commit", clone, "vda", "--active", "--dry-run")
        assert refused.returncode == 1 and f"vshx recover {clone}" in refused.stderr
        done = run_vshx("recover", clone)
        assert done.returncode == 0, done.stderr
        assert "no interrupted vshx operations" in run_vshx("jobs", clone).stdout
        # the original: untouched, its journal still its own to recover
        assert snapshot_names(lab.name) == snaps
        assert images_in(lab.dir) == files
        assert "interrupted vshx" in run_vshx("jobs", lab.name).stdout
        finished = run_vshx("recover", lab.name)
        assert finished.returncode == 0, finished.stderr
        assert "sn2" not in snapshot_names(lab.name)
    finally:
        subprocess.run(["virsh", "-c", URI, "undefine", clone], capture_output=True, check=False)
        destroy_lab(lab)


@pytest.mark.libvirt
def test_an_entry_only_in_the_persistent_definition_stops_a_live_merge(tmp_path: Path) -> None:
    """The live state holds no entry, the persistent definition does (`virsh metadata
    --config`): the merge reads the definition's entry (on a thread, once the chain is locked)
    and refuses, naming it; nothing changes."""
    lab = make_lab(tmp_path, running=True)
    try:
        uid = virsh("domuuid", lab.name).stdout.strip()
        entry = f'<journal plan="commit vda" step="2" steps="3" pid="1" uuid="{uid}"/>'
        virsh(
            "metadata", lab.name, "--uri", "https://vshx.invalid/journal", "--key", "vshx",
            "--set", entry, "--config",
        )  # fmt: skip
        before = virsh("domblklist", lab.name, "--details").stdout
        proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "did not finish: commit vda" in proc.stderr, proc.stderr
        assert "vshx recover" in proc.stderr and "Traceback" not in proc.stderr
        assert virsh("domblklist", lab.name, "--details").stdout == before
        assert "No current block job" in block_job(lab.name)
    finally:
        destroy_lab(lab)
