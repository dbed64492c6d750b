"""virsh lines from the libvirt QE team's tp-libvirt matrices (virsh_blockcommit.cfg,
virsh_blockpull.cfg), each run by real virsh on one fresh lab and pasted into vshx on an
identical one (running; some also paused and transient); both must end alike: success or
failure, chain, guest data.

Run alone with ``pytest -m differential``.  Where vshx differs on purpose (its exit status 2
for a line virsh refuses as a usage error; it pivots an --active commit itself),
docs/virsh-differences.md says so, and the tests at the end expect it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import URI, Lab, chain_files, destroy_lab, labs_left, make_lab, run_vshx

pytestmark = [pytest.mark.libvirt, pytest.mark.differential]

# (id, the virsh words after the domain; {sn1}.. are the lab's layer paths)
CASES = [
    ("commit-base-top", "blockcommit {d} vda --base {sn1} --top {sn3} --wait --verbose"),
    ("commit-shallow", "blockcommit {d} vda --top {sn3} --shallow --wait --verbose"),
    ("commit-shallow-base", "blockcommit {d} vda --top {sn3} --base {sn2} --shallow --wait"),
    ("commit-shallow-base-far", "blockcommit {d} vda --top {sn3} --base {sn1} --shallow --wait"),
    ("commit-bandwidth-positional", "blockcommit {d} vda 200 {sn1} {sn2} --wait"),
    ("commit-async-wait", "blockcommit {d} vda --base {sn2} --top {sn3} --wait --async"),
    ("commit-timeout-async", "blockcommit {d} vda --top {sn2} --shallow --timeout 60 --async"),
    ("commit-active-pivot", "blockcommit {d} vda --active --pivot --wait --verbose"),
    ("commit-active-keep-overlay", "blockcommit {d} vda --base {sn1} --keep-overlay --wait"),
    ("commit-async-alone", "blockcommit {d} vda --base {sn1} --top {sn3} --async"),
    ("commit-pivot-keep-overlay", "blockcommit {d} vda --pivot --keep-overlay"),
    ("commit-bad-timeout", "blockcommit {d} vda --top {sn3} --shallow --wait --timeout 0"),
    ("pull-base", "blockpull {d} vda --base {sn1} --wait --verbose"),
    ("pull-full", "blockpull {d} vda --wait --verbose"),
    ("pull-bandwidth-bytes", "blockpull {d} vda --base {sn2} --bandwidth 100M --bytes --wait"),
    ("pull-no-op", "blockpull {d} vda --base {sn3} --wait"),
    ("pull-async-needs-wait", "blockpull {d} vda --timeout 60 --async"),
    ("pull-keep-relative", "blockpull {d} vda --base {sn2} --keep-relative --wait"),
]


def words(lab: Lab, line: str) -> list[str]:
    names = {f"sn{i}": str(lab.layer(f"sn{i}")) for i in range(1, 5)}
    return line.format(d=lab.name, **names).split()


def outcome(lab: Lab, tmp: Path, status: int) -> tuple[bool, list[str], str]:
    return status == 0, chain_files(lab.active), lab.guest_hash(tmp)


PAUSED = {"commit-base-top", "pull-base", "commit-active-pivot"}


MADE: list[str] = []  # every lab this module built, by name


@pytest.fixture(scope="module", autouse=True)
def labs_removed() -> Iterator[None]:
    """No lab of this module outlives it (conftest.labs_left: a transient lab's definition
    file libvirt wrote back counts too)."""
    yield
    assert not labs_left(MADE), "labs outlived their tests:\n" + "\n".join(labs_left(MADE))


def two_labs(tmp_path: Path, state: str = "running") -> tuple[Lab, Lab]:
    """Two identical fresh labs: running, paused, transient (undefined while it runs, its
    snapshot metadata with it) or shut off."""
    labs = (
        make_lab(tmp_path / "virsh", running=state != "shut off"),
        make_lab(tmp_path / "vshx", running=state != "shut off"),
    )
    MADE.extend(lab.name for lab in labs)
    for lab in labs:
        if state == "paused":
            virsh_ok("suspend", lab.name)
        elif state == "transient":
            virsh_ok("undefine", lab.name, "--snapshots-metadata")
    return labs


def virsh_ok(*args: str) -> None:
    subprocess.run(["virsh", "-c", URI, *args], check=True, capture_output=True)


VARIANTS = [(n, line, "running") for n, line in CASES] + [
    (n, line, state) for state in ("paused", "transient") for n, line in CASES if n in PAUSED
]


@pytest.mark.parametrize(
    ("name", "line", "state"),
    VARIANTS,
    ids=[n if s == "running" else f"{n}-{s}" for n, _, s in VARIANTS],
)
def test_virsh_and_vshx_end_alike(tmp_path: Path, name: str, line: str, state: str):
    by_virsh, by_vshx = two_labs(tmp_path, state)
    try:
        assert by_virsh.guest_hash(tmp_path) == by_vshx.guest_hash(tmp_path)
        plain = subprocess.run(
            ["virsh", "-c", URI, *words(by_virsh, line)], capture_output=True, text=True
        )
        pasted = run_vshx("-f", "-", stdin=" ".join(words(by_vshx, line)) + "\n")
        assert "Traceback" not in pasted.stderr
        expected = outcome(by_virsh, tmp_path, plain.returncode)
        got = outcome(by_vshx, tmp_path, pasted.returncode)
        detail = (plain.stdout, plain.stderr, pasted.stdout, pasted.stderr)
        assert got == expected, detail
        if plain.returncode and pasted.returncode == 2:  # a usage error: virsh's own words
            assert pasted.stderr.startswith("<stdin>:1: error: "), pasted.stderr
    finally:
        destroy_lab(by_virsh)
        destroy_lab(by_vshx)


def test_active_commit_without_pivot_is_a_documented_difference(tmp_path: Path):
    """virsh --active --wait stops in the synchronized phase and leaves the job running;
    vshx ends it with a pivot (docs/virsh-differences.md), so no job is left behind."""
    by_virsh, by_vshx = two_labs(tmp_path)
    try:
        line = "blockcommit {d} vda --active --wait"
        plain = subprocess.run(
            ["virsh", "-c", URI, *words(by_virsh, line)], capture_output=True, text=True
        )
        assert plain.returncode == 0 and "synchronized phase" in plain.stdout
        pasted = run_vshx(*words(by_vshx, line))
        assert pasted.returncode == 0, pasted.stderr
        assert chain_files(by_vshx.active) == ["base.qcow2"]
        job = subprocess.run(
            ["virsh", "-c", URI, "blockjob", by_virsh.name, "vda", "--info"],
            capture_output=True,
            text=True,
        )
        assert "Active Block Commit" in job.stdout + job.stderr  # virsh left it to the user
        subprocess.run(["virsh", "-c", URI, "blockjob", by_virsh.name, "vda", "--abort"])
    finally:
        destroy_lab(by_virsh)
        destroy_lab(by_vshx)


def test_offline_commit_is_a_documented_difference(tmp_path: Path):
    """virsh blockcommit refuses a shut-off domain; vshx commits it with qemu-img."""
    by_virsh, by_vshx = two_labs(tmp_path, "shut off")
    try:
        line = "blockcommit {d} vda --base {sn1} --top {sn3} --wait"
        plain = subprocess.run(
            ["virsh", "-c", URI, *words(by_virsh, line)], capture_output=True, text=True
        )
        # libvirt 9.0 reads a shut-off domain's chain as its one file: "could not find image"
        assert plain.returncode == 1 and plain.stderr.startswith("error: "), plain.stderr
        before = by_vshx.guest_hash(tmp_path)
        pasted = run_vshx(*words(by_vshx, line))
        assert pasted.returncode == 0, pasted.stderr
        assert chain_files(by_vshx.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert by_vshx.guest_hash(tmp_path) == before
    finally:
        destroy_lab(by_virsh)
        destroy_lab(by_vshx)
