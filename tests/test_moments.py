"""Snapshots as points in time, on domains built only with libvirt's commands.

Each domain gets its snapshots from ``virsh snapshot-create-as --disk-only --atomic`` with
guest writes (through QEMU) before each one; right after building, every snapshot's moment is
recorded per disk as the hash of what the file its metadata names shows.  After a layer command
and ``snapshot-cleanup``, every remaining snapshot must name an existing file that shows exactly
that moment, the guest must see the same bytes, and ``# keeps:``/``# loses:`` must have said
which snapshots survive.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, flush_guest, qemu_check, run_vshx, snapshot_names, virsh

pytestmark = pytest.mark.libvirt

DISKS = ("vda", "vdb")


@dataclass
class Built:
    name: str
    dir: Path
    running: bool
    disks: tuple[str, ...]
    moments: dict[tuple[str, str], str]  # (snapshot, disk) -> hash of its moment

    def file(self, disk: str, layer: str) -> Path:
        return self.dir / (f"{layer}.qcow2" if disk == "vda" else f"{disk}-{layer}.qcow2")


def view_hash(path: str | Path) -> str:
    raw = Path(f"/tmp/vshx-moment-{uuid.uuid4().hex}.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(raw)], check=True)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    raw.unlink()
    return digest


def guest_write(dom: Built, disk: str, pattern: int, offset: int) -> None:
    """A write the guest makes: through QEMU when running, else qemu-io on the active file."""
    if dom.running:
        index = DISKS.index(disk)
        command = (
            f'qemu-io -d virtio-disk{index}/virtio-backend "write -q -P {pattern} {offset} 65536"'
        )
        virsh("qemu-monitor-command", dom.name, "--hmp", command)
    else:
        active = sources(dom.name)[disk]
        cmd = ["qemu-io", "-f", "qcow2", "-c", f"write -q -P {pattern} {offset} 65536", active]
        subprocess.run(cmd, check=True, capture_output=True)


def sources(domain: str, inactive: bool = False) -> dict[str, str]:
    args = ["domblklist", domain] + (["--inactive"] if inactive else [])
    out = virsh(*args).stdout
    return {
        parts[0]: parts[1]
        for line in out.splitlines()[2:]
        if len(parts := line.split(None, 1)) == 2
    }


def moment_files(domain: str) -> dict[tuple[str, str], str]:
    """(snapshot, disk) -> the file the snapshot's metadata names as its moment."""
    found = {}
    for snap in snapshot_names(domain):
        root = ET.fromstring(virsh("snapshot-dumpxml", domain, snap).stdout)
        for disk in root.findall("./domain/devices/disk"):
            target = disk.find("target")
            source = disk.find("source")
            if target is not None and source is not None:
                found[(snap, target.get("dev", ""))] = source.get("file", "")
    return found


def build(tmp_path: Path, running: bool, disks: int) -> Built:
    name = LAB_PREFIX + "m" + uuid.uuid4().hex[:8]
    directory = tmp_path / "dom"
    directory.mkdir()
    dom = Built(name, directory, running, DISKS[:disks], {})
    devices = ""
    for disk in dom.disks:
        base = dom.file(disk, "base")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
        devices += (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{base}'/><target dev='{disk}' bus='virtio'/></disk>"
        )
    virsh(
        "define",
        "/dev/stdin",
        stdin=f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{devices}<memballoon model='none'/></devices></domain>",
    )
    if running:
        virsh("start", name)
    for disk in dom.disks:
        guest_write(dom, disk, 0x10, 0)
    for k in range(1, 5):
        specs = []
        for disk in dom.disks:
            specs += ["--diskspec", f"{disk},file={dom.file(disk, f'sn{k}')}"]
        virsh("snapshot-create-as", name, f"sn{k}", "--disk-only", "--atomic", *specs)
        for disk in dom.disks:
            guest_write(dom, disk, 0x10 + k, k * 65536)
            guest_write(dom, disk, 0x20 + k, 0)  # a region every layer overwrites
    if running:
        flush_guest(name)
    dom.moments = {key: view_hash(path) for key, path in moment_files(name).items()}
    return dom


def guest_view(dom: Built) -> dict[str, str]:
    if dom.running:
        flush_guest(dom.name)
    return {disk: view_hash(path) for disk, path in sources(dom.name).items()}


def check_moments(dom: Built) -> None:
    """Every remaining snapshot names an existing file showing exactly its moment."""
    for (snap, disk), path in moment_files(dom.name).items():
        assert Path(path).exists(), (snap, disk, path)
        assert view_hash(path) == dom.moments[(snap, disk)], (snap, disk, path)
        qemu_check(path)


def check_domain(dom: Built, before: dict[str, str]) -> None:
    """Same guest bytes, clean images, and QEMU runs on the chain vshx reports."""
    assert guest_view(dom) == before
    for path in sources(dom.name).values():
        qemu_check(path)
    if not dom.running:
        virsh("start", dom.name)
        assert guest_view(dom) == before
        virsh("destroy", dom.name)
    for disk in dom.disks:
        chain = run_vshx("chain", dom.name, disk)
        assert chain.returncode == 0, chain.stderr


@pytest.fixture
def made(tmp_path: Path, request: pytest.FixtureRequest):
    built: list[Built] = []

    def make(running: bool = True, disks: int = 1) -> Built:
        dom = build(tmp_path, running, disks)
        built.append(dom)
        return dom

    yield make
    for dom in built:
        subprocess.run(["virsh", "-c", URI, "destroy", dom.name], capture_output=True)
        subprocess.run(
            ["virsh", "-c", URI, "undefine", dom.name, "--snapshots-metadata"],
            capture_output=True,
        )


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run_vshx(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def said(script: str, kind: str) -> str:
    """The text after ``# keeps:`` (or ``# keeps on vda:``) in a printed plan."""
    for line in script.splitlines():
        if line.startswith(f"# {kind}"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no # {kind} line in:\n{script}")


KINDS = [(True, 1), (False, 1), (True, 2), (False, 2)]


@pytest.mark.parametrize(("running", "disks"), KINDS)
def test_commit_middle_then_cleanup(made, running: bool, disks: int):
    dom = made(running, disks)
    before = guest_view(dom)
    for disk in dom.disks:
        args = ["commit", dom.name, disk, "--top", str(dom.file(disk, "sn2"))]
        args += ["--base", str(dom.file(disk, "sn1"))]
        plan = ok(*args, "--dry-run").stdout
        assert said(plan, "keeps").startswith("sn1 (")
        assert "sn3 (moves into" in said(plan, "keeps") and said(plan, "loses").startswith("sn2")
        ok(*args)
    proc = ok("snapshot-cleanup", dom.name)
    assert "re-pointed" in proc.stdout
    assert snapshot_names(dom.name) == ["sn1", "sn3", "sn4"]
    check_moments(dom)
    check_domain(dom, before)


def test_half_merged_two_disk_snapshot_is_reported_with_its_finish(made):
    dom = made(True, 2)
    top, base = dom.file("vda", "sn2"), dom.file("vda", "sn1")
    plan = ok("commit", dom.name, "vda", "--top", str(top), "--base", str(base), "--dry-run")
    assert "half-merged" in plan.stdout
    ok("commit", dom.name, "vda", "--top", str(top), "--base", str(base))
    proc = ok("snapshot-cleanup", dom.name)
    assert "half-merged" in proc.stdout and "sn2" in snapshot_names(dom.name)
    finish = next(w for w in proc.stdout.split("to finish: ")[1:])
    words = finish.split()
    assert words[:4] == ["vshx", "commit", dom.name, "vdb"]
    ok(*words[1:8])
    ok("snapshot-cleanup", dom.name)
    assert snapshot_names(dom.name) == ["sn1", "sn3", "sn4"]
    check_moments(dom)


@pytest.mark.parametrize(("running", "disks"), [(True, 1), (False, 2)])
def test_pull_keeps_moments_out_of_the_chain_until_their_files_go(made, running, disks):
    dom = made(running, disks)
    before = guest_view(dom)
    for disk in dom.disks:
        args = ["pull", dom.name, disk, "--base", str(dom.file(disk, "sn1"))]
        plan = ok(*args, "--dry-run").stdout
        assert said(plan, "loses") == "no snapshot"
        assert "sn3 (" in said(plan, "keeps") and "out of the chain" in said(plan, "keeps")
        ok(*args)
    ok("snapshot-cleanup", dom.name)
    assert snapshot_names(dom.name) == ["sn1", "sn2", "sn3", "sn4"]  # all still revertible
    check_moments(dom)
    ok("snapshot-cleanup", dom.name, "--delete-files")
    # the blog's cleanup by files kept sn4 and dropped sn1..sn3: by moments, sn1 and sn2 stay
    assert snapshot_names(dom.name) == ["sn1", "sn2"]
    assert not dom.file("vda", "sn2").exists()
    check_moments(dom)
    check_domain(dom, before)


@pytest.mark.parametrize("route", ["pull", "commit"])
def test_flatten_says_what_each_route_keeps(made, route: str):
    dom = made(False, 1)
    before = guest_view(dom)
    args = ["flatten", dom.name, "vda", "--route", route]
    plan = ok(*args, "--dry-run").stdout
    if route == "pull":
        assert said(plan, "loses") == "no snapshot"
    else:
        assert said(plan, "keeps") == "no snapshot"
        assert all(f"sn{k}" in said(plan, "loses") for k in range(1, 5))
    ok(*args)
    ok("snapshot-cleanup", dom.name)
    check_moments(dom)
    check_domain(dom, before)


@pytest.mark.parametrize("running", [True, False])
def test_shorten_says_what_it_keeps(made, running: bool):
    dom = made(running, 1)
    before = guest_view(dom)
    args = ["shorten", dom.name, "vda", "--drop", str(dom.file("vda", "sn2"))]
    plan = ok(*args, "--dry-run").stdout
    assert "sn1 (" in said(plan, "keeps") and "sn4 (" in said(plan, "keeps")
    ok(*args)
    ok("snapshot-cleanup", dom.name)
    check_moments(dom)
    check_domain(dom, before)


def test_losing_a_memory_snapshots_moment_is_refused(made, tmp_path: Path):
    dom = made(True, 1)
    mem = tmp_path / "sm.mem"
    virsh(
        "snapshot-create-as",
        dom.name,
        "sm",
        "--memspec",
        f"file={mem},snapshot=external",
        "--diskspec",
        f"vda,file={dom.dir / 'sm.qcow2'}",
    )
    # sm's moment is sn4.qcow2: an active commit into it would destroy it
    state = {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()}
    proc = run_vshx(
        "commit", dom.name, "vda", "--base", str(dom.file("vda", "sn4")), "--active", "--pivot"
    )
    assert proc.returncode == 1 and "memory state" in proc.stderr and "hint:" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()} == state


def test_a_commit_outside_vshx_is_unknown_not_intact(made):
    dom = made(False, 1)
    subprocess.run(
        [
            "qemu-img",
            "commit",
            "-q",
            "-b",
            str(dom.file("vda", "sn1")),
            str(dom.file("vda", "sn2")),
        ],
        check=True,
    )
    subprocess.run(
        ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", "sn1.qcow2", str(dom.file("vda", "sn3"))],
        check=True,
    )
    listed = ok("snapshot-list", dom.name, "--json").stdout
    moments = {s["name"]: s["disks"]["vda"]["moment"] for s in json.loads(listed)["snapshots"]}
    assert moments["sn2"] == "unknown" and moments["sn1"] == "intact"
    proc = ok("snapshot-cleanup", dom.name)
    assert snapshot_names(dom.name) == ["sn1", "sn2", "sn3", "sn4"]  # nothing forgotten on a guess
    assert "cannot tell" in proc.stdout


def test_rebase_keeps_every_moment(made):
    dom = made(False, 1)
    before = guest_view(dom)
    args = ["rebase", "--domain", dom.name, "--path", "vda", "--top", str(dom.file("vda", "sn3"))]
    args += ["--backing", str(dom.file("vda", "sn1"))]
    plan = ok(*args, "--dry-run").stdout
    assert said(plan, "loses") == "no snapshot"
    assert "sn3 (sn2.qcow2, out of the chain)" in said(plan, "keeps")
    ok(*args)
    ok("snapshot-cleanup", dom.name)
    assert snapshot_names(dom.name) == ["sn1", "sn2", "sn3", "sn4"]
    check_moments(dom)
    check_domain(dom, before)
