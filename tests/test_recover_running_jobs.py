"""recover and the block jobs that outlive the vshx that started them, checked against the same
merge run in the foreground on an identical lab (atk5 F7, F8).

F7: a vshx killed (SIGKILL) while its commit below the active layer runs: the job goes on and
ends by itself, and the journal says so.  `jobs` said "Next: vshx recover D vda", and that
recover exited 2 ("nothing says how it should end") while the job ran.  Now recover waits for
the job, as the killed vshx would have (Ctrl-C leaves it running, saying so), then writes the
record of moments and clears the journal as when run after the job ended.

F8: `commit --active --background` then `recover --pivot`: the record of moments kept the
stamp of the background start, while the guest wrote the old active layer until the pivot, so
`snapshot-cleanup --delete-files` kept sn4.qcow2 ("created or changed after vshx recorded
sn4's moment").  Now recover's pivot stamps that record again, as the foreground commit writes
it after its own pivot: the same record and the same cleanup plan.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import URI, Lab, block_job, destroy_lab, make_lab, qemu_check, run_vshx, virsh
from conftest import wait_for as wait_until
from test_recover_ledger import killed_mid_job, moments

pytestmark = pytest.mark.libvirt

JOURNAL = "https://vshx.invalid/journal"
LEDGER = "https://vshx.invalid/moments"


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[Lab, Lab]]:
    """Two identical running labs (16 MiB in every layer: at 1 MiB/s a commit runs for
    about 17 s): one for the interrupted or background run, one for the foreground run."""
    built: list[Lab] = []
    try:
        for name in ("interrupted", "foreground"):
            built.append(make_lab(tmp_path, fill=16, dirname=name))
        yield built[0], built[1]
    finally:
        for lab in built:
            destroy_lab(lab)


def record(lab: Lab) -> list[dict[str, str]]:
    """The domain's record of moments, without the stamps, the lab's names made neutral."""
    text = virsh("metadata", lab.name, LEDGER).stdout
    found = []
    for node in ET.fromstring(text).findall("moment"):
        attrs = {k: v.replace(str(lab.dir), "LAB") for k, v in node.attrib.items()}
        attrs.pop("stamp")
        attrs.pop("created")
        found.append(attrs)
    return sorted(found, key=lambda a: a["snapshot"])


def cleanup_plan(lab: Lab) -> list[str]:
    """snapshot-cleanup --delete-files --dry-run's verdict lines, the lab's names made neutral."""
    plan = run_vshx("snapshot-cleanup", lab.name, "--delete-files", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    lines = [line for line in plan.stdout.splitlines() if re.match(r"# \S+ \| ", line)]
    return [line.replace(str(lab.dir), "LAB").replace(lab.name, "DOM") for line in lines]


def check_data(lab: Lab, tmp_path: Path, before: str) -> None:
    assert lab.guest_hash(tmp_path) == before
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)


def journal_left(lab: Lab) -> bool:
    shown = subprocess.run(["virsh", "-c", URI, "metadata", lab.name, JOURNAL], capture_output=True)
    return shown.returncode == 0


def test_recover_waits_for_a_commit_that_ends_by_itself(
    twins: tuple[Lab, Lab], tmp_path: Path
) -> None:
    killed, plain = twins
    words = ["--base", "sn1", "--top", "sn3"]
    done = run_vshx("commit", plain.name, "vda", *words)
    assert done.returncode == 0, done.stderr

    before = killed.guest_hash(tmp_path)
    killed_mid_job(killed, "commit", killed.name, "vda", *words, unthrottle=False)
    jobs = run_vshx("jobs", killed.name)
    assert jobs.returncode == 0, jobs.stderr
    assert (
        f"vshx recover {killed.name} vda (waits until the commit job ends by itself" in jobs.stdout
    ), jobs.stdout
    plan = run_vshx("recover", killed.name, "vda", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"blockjob {killed.name} vda --info --raw | grep -q .; do sleep 1; done" in plan.stdout
    assert LEDGER in plan.stdout  # then the record of moments, as after the job's end

    # Ctrl-C while recover waits: the job goes on, the journal stays, and recover says so
    waiting = subprocess.Popen(
        [sys.executable, "-m", "vshx", "-c", URI, "recover", killed.name, "vda"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    assert waiting.poll() is None, waiting.communicate()
    waiting.send_signal(signal.SIGINT)
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1, err
    assert "interrupted while waiting; the job was left running" in err, err
    assert "Block Commit" in block_job(killed.name)
    assert journal_left(killed)

    recovered = run_vshx("recover", killed.name, "vda")  # the job runs on, throttled: waited for
    assert recovered.returncode == 0, recovered.stderr
    assert "commit job on vda: ended by itself" in recovered.stderr
    assert "base.qcow2 <- sn1.qcow2 <- sn4.qcow2 (active)" in recovered.stdout + recovered.stderr
    assert not journal_left(killed)
    assert (
        "no block jobs and no interrupted vshx operations" in run_vshx("jobs", killed.name).stdout
    )
    assert moments(killed) == moments(plain)
    assert record(killed) == record(plain)
    assert cleanup_plan(killed) == cleanup_plan(plain)
    check_data(killed, tmp_path, before)


def test_recover_tells_what_to_do_with_a_job_nothing_says_how_to_end(
    twins: tuple[Lab, Lab],
) -> None:
    """A commit job the journal says nothing about (an older vshx's entry): exit 1, not 2
    (a state, not a wrong command line), and `jobs` says what recover then needs."""
    killed, _plain = twins
    args = ["commit", killed.name, "vda", "--base", "sn1", "--top", "sn3"]
    killed_mid_job(killed, *args, unthrottle=False)
    node = ET.fromstring(virsh("metadata", killed.name, JOURNAL).stdout)
    node.attrib.pop("completes", None)  # an older vshx wrote no such attribute
    virsh(
        "metadata", killed.name, "--uri", JOURNAL, "--key", "vshx", "--set",
        ET.tostring(node, encoding="unicode"), "--live", "--config",
    )  # fmt: skip
    jobs = run_vshx("jobs", killed.name, "--json")
    rows = [r for r in json.loads(jobs.stdout)["jobs"] if r["type"] == "interrupted vshx"]
    assert rows[0]["next"].startswith("wait until the commit job ends by itself, then vshx")
    refused = run_vshx("recover", killed.name, "vda")
    assert refused.returncode == 1, refused.stderr
    assert "nothing says how it should end" in refused.stderr
    assert f"then vshx recover {killed.name} vda" in refused.stderr
    assert "Block Commit" in block_job(killed.name)  # nothing was changed
    virsh("blockjob", killed.name, "vda", "--abort")


def test_background_active_commit_pivoted_by_recover_records_as_the_foreground(
    twins: tuple[Lab, Lab], tmp_path: Path
) -> None:
    background, foreground = twins
    words = ["--active", "--base", "sn1"]
    done = run_vshx("commit", foreground.name, "vda", *words, "--pivot")
    assert done.returncode == 0, done.stderr

    before = background.guest_hash(tmp_path)
    started = run_vshx("commit", background.name, "vda", *words, "--background")
    assert started.returncode == 0, started.stderr
    assert "pivoted:" not in started.stdout + started.stderr  # nothing pivoted (nu12 #5)
    wait_until(lambda: "100 %" in block_job(background.name), "the active commit to be READY")
    time.sleep(1)  # the guest's layer is written until the pivot: a later time than the start
    pivoted = run_vshx("recover", background.name, "vda", "--pivot")
    assert pivoted.returncode == 0, pivoted.stderr
    assert "base.qcow2 <- sn1.qcow2 (active)" in pivoted.stdout + pivoted.stderr

    assert record(background) == record(foreground)
    plan = cleanup_plan(background)
    assert plan == cleanup_plan(foreground)
    assert any(line.startswith("# sn4.qcow2 | file removed") for line in plan), plan
    check_data(background, tmp_path, before)

    cleaned = run_vshx("snapshot-cleanup", background.name, "--delete-files")
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(p.name for p in background.dir.glob("*.qcow2")) == ["base.qcow2", "sn1.qcow2"]
    check_data(background, tmp_path, before)
