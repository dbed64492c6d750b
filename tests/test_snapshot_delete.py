"""snapshot-delete next to libvirt's own, on identical domains built with libvirt's commands.

Each case builds two domains the way users do (virsh define/start, guest writes through QEMU,
``virsh snapshot-create-as --disk-only --atomic``), records every snapshot's moment on every disk
right after taking it, runs native ``virsh snapshot-delete`` on one and ``vshx snapshot-delete``
on the other, and compares: the same snapshots left (parents, current), the guest's data
unchanged on every disk, every remaining snapshot naming an existing file that shows exactly its
moment, no more files than native, qemu-img check clean, the domain starts.
"""

from __future__ import annotations

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import (
    LAB_PREFIX,
    URI,
    block_job,
    destroy_lab,
    guest_hash,
    make_lab,
    qemu_check,
    qemu_img_chain,
    run_vshx,
    virsh,
    wait_for,
)

pytestmark = pytest.mark.libvirt

SNAPSHOTS = 3
DISKS = ("vda", "vdb")


@dataclass
class Dom:
    """A test domain built with libvirt's commands, and what each snapshot froze."""

    name: str
    dir: Path
    disks: tuple[str, ...]
    running: bool
    moments: dict[tuple[str, str], str] = field(default_factory=dict)  # (snap, disk) -> hash
    views: dict[str, str] = field(default_factory=dict)  # disk -> the guest's data at the end

    def file(self, disk: str, name: str) -> Path:
        return self.dir / f"{disk}-{name}.qcow2"


def write(dom: Dom, disk: str, pattern: int, offset: int) -> None:
    device = f"virtio-disk{DISKS.index(disk)}"
    virsh(
        "qemu-monitor-command",
        dom.name,
        "--hmp",
        f'qemu-io -d {device}/virtio-backend "write -q -P {pattern:#x} {offset} 65536"',
    )


def flush(dom: Dom) -> None:
    for disk in dom.disks:
        virsh(
            "qemu-monitor-command",
            dom.name,
            "--hmp",
            f'qemu-io -d virtio-disk{DISKS.index(disk)}/virtio-backend "flush"',
        )


def sources(name: str, inactive: bool = False) -> dict[str, str]:
    args = ["dumpxml", name] + (["--inactive"] if inactive else [])
    root = ET.fromstring(virsh(*args).stdout)
    found = {}
    for disk in root.findall("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None:
            found[target.get("dev", "")] = source.get("file", "")
    return found


def view(path: str | Path, tmp: Path) -> str:
    return guest_hash(path, tmp)


def build(
    tmp: Path, disks: int, running: bool, label: str, big: int = 0, checkpoint: str = ""
) -> Dom:
    """base <- s1 <- s2 <- s3 (active) on each disk, distinct guest writes before each;
    ``checkpoint``: a checkpoint of that name taken after the first writes, before s1."""
    name = f"{LAB_PREFIX}{label}-{uuid.uuid4().hex[:6]}"
    directory = tmp / name
    directory.mkdir()
    dom = Dom(name, directory, DISKS[:disks], running)
    devices = ""
    for disk in dom.disks:
        base = dom.file(disk, "base")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
        devices += (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{base}'/><target dev='{disk}' bus='virtio'/></disk>"
        )
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{devices}<memballoon model='none'/></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    virsh("start", name)
    for disk in dom.disks:
        write(dom, disk, 0x10 + DISKS.index(disk), 0)
    if checkpoint:
        virsh("checkpoint-create-as", name, checkpoint)
    moment = {disk: dom.file(disk, "base") for disk in dom.disks}
    for k in range(1, SNAPSHOTS + 1):
        specs = []
        for disk in dom.disks:
            specs += ["--diskspec", f"{disk},file={dom.file(disk, f's{k}')}"]
        flush(dom)  # as a guest syncs before a snapshot
        virsh("snapshot-create-as", name, f"s{k}", "--disk-only", "--atomic", *specs)
        for disk in dom.disks:
            dom.moments[(f"s{k}", disk)] = view(moment[disk], tmp)
            moment[disk] = dom.file(disk, f"s{k}")
            write(dom, disk, 0x20 + k * 2 + DISKS.index(disk), k * 65536)
            write(dom, disk, 0x40 + k * 2 + DISKS.index(disk), 0)
            if k == big:  # s{big}'s overlay holds 8 MiB: a throttled commit takes seconds
                device = f"virtio-disk{DISKS.index(disk)}"
                virsh(
                    "qemu-monitor-command",
                    name,
                    "--hmp",
                    f'qemu-io -d {device}/virtio-backend "write -q -P 0x77 1M 8M"',
                )
    flush(dom)
    for disk, path in sources(name).items():
        dom.views[disk] = view(path, tmp)
    if not running:
        virsh("destroy", name)
    return dom


def destroy(dom: Dom) -> None:
    subprocess.run(["virsh", "-c", URI, "destroy", dom.name], capture_output=True)
    subprocess.run(
        [
            "virsh",
            "-c",
            URI,
            "undefine",
            dom.name,
            "--snapshots-metadata",
            "--checkpoints-metadata",
        ],
        capture_output=True,
    )


@pytest.fixture
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Dom, Dom]]:
    disks, running = request.param
    made: list[Dom] = []
    try:
        made.append(build(tmp_path, disks, running, "native"))
        made.append(build(tmp_path, disks, running, "vshx"))
        yield made[0], made[1]
    finally:
        for dom in made:
            destroy(dom)


def tree(name: str) -> dict[str, str]:
    """Each snapshot's parent ('' for a root), as virsh lists them."""
    out = virsh("snapshot-list", name, "--parent").stdout.splitlines()[2:]
    found = {}
    for line in out:
        words = line.split()
        if words:
            found[words[0]] = words[5] if len(words) > 5 else ""
    return found


def current(name: str) -> str:
    proc = subprocess.run(
        ["virsh", "-c", URI, "snapshot-current", name, "--name"], capture_output=True, text=True
    )
    return proc.stdout.strip()


def snapshot_files(name: str, snap: str) -> dict[str, str]:
    """The file each disk's moment of ``snap`` is in, as its metadata says."""
    root = ET.fromstring(virsh("snapshot-dumpxml", name, snap).stdout)
    found = {}
    for disk in root.findall("./domain/devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None:
            found[target.get("dev", "")] = source.get("file", "")
    return found


def check_after(dom: Dom, tmp: Path) -> None:
    """Guest data unchanged, every remaining snapshot names a file showing its moment, the
    chains check clean, the domain starts."""
    if dom.running:
        flush(dom)
    now = sources(dom.name, inactive=not dom.running)
    for disk in dom.disks:
        assert view(now[disk], tmp) == dom.views[disk], f"{dom.name} {disk}: guest data changed"
    for snap in tree(dom.name):
        for disk, path in snapshot_files(dom.name, snap).items():
            assert Path(path).exists(), f"{snap} {disk}: {path} is gone"
            assert view(path, tmp) == dom.moments[(snap, disk)], f"{snap} {disk}: {path}"
    for path in dom.dir.glob("*.qcow2"):
        qemu_check(path)
    if not dom.running:
        virsh("start", dom.name)
        virsh("destroy", dom.name)


def files(dom: Dom) -> set[str]:
    return {p.name for p in dom.dir.iterdir()}


def differential(pair: tuple[Dom, Dom], tmp: Path, *words: str, route: str = "") -> None:
    native, ours = pair
    virsh("snapshot-delete", native.name, *words)
    proc = run_vshx("snapshot-delete", ours.name, *words, *(["--route", route] if route else []))
    assert proc.returncode == 0, proc.stderr
    assert tree(ours.name) == tree(native.name)
    assert current(ours.name) == current(native.name)
    assert len(files(ours)) <= len(files(native)), "vshx left more files than native"
    check_after(ours, tmp)
    check_after(native, tmp)
    if route == "pull":  # the metadata vshx wrote is what native needs: it deletes s1 next
        virsh("snapshot-delete", ours.name, "s1")
        virsh("snapshot-delete", native.name, "s1")
        assert tree(ours.name) == tree(native.name)
        check_after(ours, tmp)


KINDS = [(1, True), (2, True), (1, False), (2, False)]
IDS = ["1disk-running", "2disks-running", "1disk-off", "2disks-off"]


@pytest.mark.parametrize("pair", KINDS, ids=IDS, indirect=True)
def test_middle_snapshot_as_native(pair: tuple[Dom, Dom], tmp_path: Path) -> None:
    differential(pair, tmp_path, "s2")


@pytest.mark.parametrize("pair", [KINDS[0], KINDS[3]], ids=[IDS[0], IDS[3]], indirect=True)
def test_first_snapshot_as_native(pair: tuple[Dom, Dom], tmp_path: Path) -> None:
    differential(pair, tmp_path, "s1")


@pytest.mark.parametrize(
    ("pair", "route"),
    [(KINDS[0], "commit"), (KINDS[0], "pull"), (KINDS[3], "commit"), (KINDS[3], "pull")],
    ids=[f"{IDS[0]}-commit", f"{IDS[0]}-pull", f"{IDS[3]}-commit", f"{IDS[3]}-pull"],
    indirect=["pair"],
)
def test_current_snapshot_as_native(pair: tuple[Dom, Dom], route: str, tmp_path: Path) -> None:
    """Both routes for the current snapshot: libvirt's active commit, or the pull of its file
    into the active layer (vshx picks the one that moves fewer bytes)."""
    differential(pair, tmp_path, "--current", route=route)


@pytest.fixture
def one(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dom]:
    disks, running = request.param
    dom = build(tmp_path, disks, running, "one")
    try:
        yield dom
    finally:
        destroy(dom)


def refused_by_native(dom: Dom, *words: str) -> str:
    proc = subprocess.run(
        ["virsh", "-c", URI, "snapshot-delete", dom.name, *words], capture_output=True, text=True
    )
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


@pytest.mark.parametrize("one", [KINDS[1], KINDS[2]], ids=[IDS[1], IDS[2]], indirect=True)
def test_children_where_native_refuses(one: Dom, tmp_path: Path) -> None:
    """--children: s2 and s3 go (native: not supported), s1 stays with its moment."""
    assert "children" in refused_by_native(one, "s2", "--children")
    before = {p.name for p in one.dir.iterdir()}
    proc = run_vshx("snapshot-delete", one.name, "s2", "--children")
    assert proc.returncode == 0, proc.stderr
    assert tree(one.name) == {"s1": ""}
    assert current(one.name) == "s1"
    check_after(one, tmp_path)
    left = {p.name for p in one.dir.iterdir()}
    assert left == before - {f"{d}-s{k}.qcow2" for d in one.disks for k in (2, 3)}


@pytest.mark.parametrize("one", [KINDS[0]], ids=[IDS[0]], indirect=True)
def test_children_only_where_native_refuses(one: Dom, tmp_path: Path) -> None:
    assert "children" in refused_by_native(one, "s1", "--children-only")
    proc = run_vshx("snapshot-delete", one.name, "s1", "--children-only")
    assert proc.returncode == 0, proc.stderr
    assert tree(one.name) == {"s1": ""}
    assert current(one.name) == "s1"
    check_after(one, tmp_path)
    assert sources(one.name)["vda"] == str(one.file("vda", "s1"))


@pytest.mark.parametrize("one", [KINDS[0]], ids=[IDS[0]], indirect=True)
def test_diverged_metadata_where_native_refuses(one: Dom, tmp_path: Path) -> None:
    """After a layer commit (no snapshot-cleanup), s3's metadata names a file that no longer
    holds its moment: native refuses; vshx removes s3's moment where it is now and re-points."""
    top, base = one.file("vda", "s2"), one.file("vda", "s1")
    proc = run_vshx("commit", one.name, "vda", "--top", str(top), "--base", str(base))
    assert proc.returncode == 0, proc.stderr
    assert "not the same" in refused_by_native(one, "s3")
    proc = run_vshx("snapshot-delete", one.name, "s3")
    assert proc.returncode == 0, proc.stderr
    assert set(tree(one.name)) == {"s1", "s2"}
    flush(one)
    assert view(sources(one.name)["vda"], tmp_path) == one.views["vda"]
    # s1 names base, which shows its moment; s2's moment was lost to the earlier commit
    assert snapshot_files(one.name, "s1")["vda"] == str(one.file("vda", "base"))
    assert view(one.file("vda", "base"), tmp_path) == one.moments[("s1", "vda")]
    for path in one.dir.glob("*.qcow2"):
        qemu_check(path)


def test_metadata_only_is_virsh(tmp_path: Path) -> None:
    """--metadata drops the metadata as virsh does and touches no file."""
    dom = build(tmp_path, 1, False, "meta")
    try:
        before = {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()}
        proc = run_vshx("snapshot-delete", dom.name, "s2", "--metadata")
        assert proc.returncode == 0, proc.stderr
        assert tree(dom.name) == {"s1": "", "s3": "s1"}
        assert {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()} == before
    finally:
        destroy(dom)


def test_revert_shut_off_two_disks(tmp_path: Path) -> None:
    """New overlays on s2's moment files, the definition on them, s2 current, every file
    kept; the domain starts on s2's moment; a running domain is refused first."""
    dom = build(tmp_path, 2, True, "revert")
    try:
        proc = run_vshx("snapshot-revert", dom.name, "s2")
        assert proc.returncode == 1 and "running" in proc.stderr
        virsh("destroy", dom.name)
        before = {p.name for p in dom.dir.iterdir()}
        proc = run_vshx("snapshot-revert", dom.name, "s2")
        assert proc.returncode == 0, proc.stderr
        assert current(dom.name) == "s2"
        assert {p.name for p in dom.dir.iterdir()} > before  # nothing deleted
        now = sources(dom.name, inactive=True)
        for disk in dom.disks:
            assert Path(now[disk]).name == f"{disk}-s1.s2-revert.qcow2"
            assert view(now[disk], tmp_path) == dom.moments[("s2", disk)]
            # the branch left behind still shows what the guest wrote
            assert view(dom.file(disk, "s3"), tmp_path) == dom.views[disk]
        for path in dom.dir.glob("*.qcow2"):
            qemu_check(path)
        virsh("start", dom.name)
        virsh("destroy", dom.name)
        listing = run_vshx("snapshot-list", dom.name)
        assert "unknown" not in listing.stdout and "gone" not in listing.stdout, listing.stdout
        # the branch the revert left behind is another history: cleanup never removes it
        files = {p.name for p in dom.dir.iterdir()}
        proc = run_vshx("snapshot-cleanup", dom.name, "--delete-files")
        assert proc.returncode == 0, proc.stderr
        assert {p.name for p in dom.dir.iterdir()} == files
        assert tree(dom.name) == {"s1": "", "s2": "s1", "s3": "s2"}
        assert "branch" in proc.stdout + proc.stderr
    finally:
        destroy(dom)


@pytest.mark.parametrize("running", [False, True], ids=["shut-off", "running"])
def test_deleting_the_snapshot_reverted_to_keeps_the_branch(tmp_path: Path, running: bool) -> None:
    """After snapshot-revert s2 the old branch (s2.qcow2 <- s3.qcow2) reads through s1.qcow2,
    s2's moment file: deleting s2 would commit the new overlay into it and change s3's moment.
    vshx refuses before anything changes (--force too, --dry-run too), as libvirt 9.0's own
    snapshot-delete does, and refuses an active commit that would overwrite the branch's leaf;
    s3 still shows exactly its moment."""
    dom = build(tmp_path, 1, True, "branch")
    try:
        virsh("destroy", dom.name)
        proc = run_vshx("snapshot-revert", dom.name, "s2")
        assert proc.returncode == 0, proc.stderr
        active = sources(dom.name, inactive=True)["vda"]
        if running:
            virsh("start", dom.name)
            write(dom, "vda", 0x77, 1 << 20)
            flush(dom)
        else:  # the guest's write after the revert, made offline
            subprocess.run(
                ["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x77 1M 64k", active], check=True
            )
        branch = view(dom.file("vda", "s2"), tmp_path)
        assert branch == dom.moments[("s3", "vda")]
        files = {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()}
        parents = tree(dom.name)
        for extra in ([], ["--force"], ["--dry-run"]):
            proc = run_vshx("snapshot-delete", dom.name, "s2", *extra)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "refusing" in proc.stderr and "s3 (vda: vda-s2.qcow2 reads through" in (
                proc.stderr
            ), proc.stderr
            assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
        # a commit into what the branch reads through would also overwrite the branch's leaf
        # (s3.qcow2: the guest's writes before the revert, no snapshot's moment): refused
        proc = run_vshx("commit", dom.name, "vda", "--active", "--pivot")
        assert proc.returncode == 1 and f"{dom.file('vda', 's3')}" in proc.stderr, proc.stderr
        assert {p.name: p.stat().st_mtime_ns for p in dom.dir.iterdir()} == files
        assert tree(dom.name) == parents and current(dom.name) == "s2"
        assert view(dom.file("vda", "s2"), tmp_path) == dom.moments[("s3", "vda")]
        listing = run_vshx("snapshot-list", dom.name).stdout
        assert "unknown" not in listing and "gone" not in listing, listing
        native = subprocess.run(
            ["virsh", "-c", URI, "snapshot-delete", dom.name, "s2"], capture_output=True, text=True
        )
        assert native.returncode != 0, native.stdout  # libvirt 9.0 refuses it too
        assert view(dom.file("vda", "s2"), tmp_path) == dom.moments[("s3", "vda")]
    finally:
        destroy(dom)


def test_deleting_after_a_partial_pull_never_commits_into_what_pulled_out_files_read(
    tmp_path: Path,
) -> None:
    """After `pull --base sn1`, sn3 and sn4 keep their moments in sn2.qcow2 and sn3.qcow2, out
    of the chain, reading through sn1.qcow2.  Deleting sn2 by a commit into sn1.qcow2 would
    change them: refused; the default route (a pull into the active layer) keeps them, and
    sn1.qcow2 too (those files still read it)."""
    lab = make_lab(tmp_path, running=False)
    try:
        assert run_vshx("pull", lab.name, "vda", "--base", "sn1").returncode == 0
        lab.record_moments(tmp_path)
        proc = run_vshx("snapshot-delete", lab.name, "sn2", "--route", "commit")
        assert proc.returncode == 1 and "sn2.qcow2 reads through sn1.qcow2" in proc.stderr
        proc = run_vshx("snapshot-delete", lab.name, "sn2")
        assert proc.returncode == 0, proc.stderr
        assert lab.layer("sn1").exists()
        assert lab.check_moments(tmp_path) == ["sn1", "sn3", "sn4"]  # each shows its moment
    finally:
        destroy_lab(lab)


def throttled_delete(dom: Dom) -> subprocess.Popen[str]:
    """vshx deleting s2 with each block job held at 1 MiB/s, started in the background."""
    return subprocess.Popen(
        [*run_vshx_argv(), "snapshot-delete", dom.name, "s2", "--bandwidth", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rolled_forward(dom: Dom, tmp: Path) -> None:
    """After recover: s2 deleted on every disk, s3 current with its moment, data intact, and
    the record written (s3 stays deletable)."""
    assert tree(dom.name) == {"s1": "", "s3": "s1"}
    assert current(dom.name) == "s3"
    check_after(dom, tmp)
    assert not any(dom.file(disk, "s2").exists() for disk in dom.disks)
    listed = json.loads(run_vshx("snapshot-list", dom.name, "--json").stdout)["snapshots"]
    assert all(m["moment"] != "unknown" for s in listed for m in s["disks"].values()), listed
    assert run_vshx("snapshot-delete", dom.name, "s3", "--dry-run").returncode == 0


def kill_during_vda_commit(dom: Dom) -> None:
    """vshx deleting s2, killed while vda's throttled commit runs (vdb's not started)."""
    proc = throttled_delete(dom)
    wait_for(lambda: "Block Commit" in block_job(dom.name, "vda"), "vda's block commit")
    proc.kill()
    proc.communicate()


def test_interrupted_two_disk_delete_is_rolled_forward_by_recover(tmp_path: Path) -> None:
    """vshx killed while vda's commit runs (vdb not merged yet): the journal says so, other
    commands refuse, and recover finishes the delete on every disk."""
    dom = build(tmp_path, 2, True, "recover", big=2)
    try:
        kill_during_vda_commit(dom)
        virsh("blockjob", dom.name, "vda", "--bandwidth", "0")
        wait_for(lambda: "Block Commit" not in block_job(dom.name, "vda"), "vda's commit to end")
        refused = run_vshx("snapshot-delete", dom.name, "s3")
        assert refused.returncode == 1 and "did not finish" in refused.stderr, refused.stderr
        assert "recover" in refused.stderr
        recovered = run_vshx("recover", dom.name, "vda")
        assert recovered.returncode == 0, recovered.stderr
        # named one disk, it says it acts on the whole plan (atk11 F6)
        assert "spans the domain's disks, not vda alone" in recovered.stdout, recovered.stdout
        assert "no interrupted vshx operations" in run_vshx("jobs", dom.name).stdout
        rolled_forward(dom, tmp_path)  # and recorded: s3 stays deletable
    finally:
        destroy(dom)


def test_ctrl_c_during_a_live_delete_keeps_the_journal_and_recover_finishes_it(
    tmp_path: Path,
) -> None:
    """Ctrl-C while vda's commit runs: vshx aborts the job, which had copied part of s2.qcow2
    into s1.qcow2 already (s2's moment there is partly overwritten): vshx says so, keeps its
    journal (the merge cannot be undone), and recover finishes the delete with every other
    moment intact and deletable (an outside attack found the journal cleared and s3 left
    unknown, undeletable)."""
    import re
    import signal

    dom = build(tmp_path, 1, True, "ctrlc", big=2)
    try:
        proc = throttled_delete(dom)

        def copied() -> bool:
            found = re.search(r"\[\s*([0-9.]+) %\]", block_job(dom.name, "vda"))
            return found is not None and float(found.group(1)) > 0

        wait_for(copied, "vda's block commit to copy something")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate()
        assert proc.returncode == 1 and "copied data into its base" in err, err
        assert f"vshx recover {dom.name}" in err and "Traceback" not in err
        assert "interrupted vshx" in run_vshx("jobs", dom.name).stdout
        recovered = run_vshx("recover", dom.name)
        assert recovered.returncode == 0, recovered.stderr
        rolled_forward(dom, tmp_path)
    finally:
        destroy(dom)


def test_a_snapshot_deleted_by_someone_else_meanwhile_is_not_brought_back(
    tmp_path: Path,
) -> None:
    """While vshx deletes s2 (vda's commit held at 1 MiB/s), someone forgets s3 with virsh:
    the plan's step that re-points s3 does not define it again (it says so), s2 is deleted,
    the data is intact."""
    dom = build(tmp_path, 1, True, "race", big=2)
    try:
        proc = throttled_delete(dom)
        wait_for(lambda: "Block Commit" in block_job(dom.name, "vda"), "vda's block commit")
        virsh("snapshot-delete", dom.name, "s3", "--metadata")
        virsh("blockjob", dom.name, "vda", "--bandwidth", "0")
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "snapshot s3 was deleted by someone else while vshx ran" in err
        assert tree(dom.name) == {"s1": ""}
        assert not dom.file("vda", "s2").exists()
        flush(dom)
        assert view(sources(dom.name)["vda"], tmp_path) == dom.views["vda"]
    finally:
        destroy(dom)


def test_recover_abort_of_an_interrupted_delete_stops_the_job_and_keeps_the_journal(
    tmp_path: Path,
) -> None:
    """--abort stops vda's running commit but cannot undo what it merged: the journal stays,
    a second --abort refuses with the reason, and only rolling forward ends the operation,
    also after the parent snapshot was deleted meanwhile."""
    dom = build(tmp_path, 2, True, "abort", big=2)
    try:
        kill_during_vda_commit(dom)
        # while vda's commit runs, no moment in vda's chain is shown intact; vdb's are
        listed = json.loads(run_vshx("snapshot-list", dom.name, "--json").stdout)["snapshots"]
        states = {d: {s["disks"][d]["moment"] for s in listed} for d in dom.disks}
        assert "intact" not in states["vda"] and "unknown" in states["vda"], states
        assert "intact" in states["vdb"], states
        aborted = run_vshx("recover", dom.name, "--abort")
        assert aborted.returncode == 0, aborted.stderr
        assert "Block Commit" not in block_job(dom.name, "vda")
        assert "cannot be undone" in aborted.stdout + aborted.stderr
        refused = run_vshx("snapshot-delete", dom.name, "s3")
        assert refused.returncode == 1 and "did not finish" in refused.stderr, refused.stderr
        again = run_vshx("recover", dom.name, "--abort")
        assert again.returncode == 1 and "cannot be undone" in again.stderr, again.stderr
        assert "hint: finish it: vshx recover" in again.stderr
        # meanwhile someone deletes the parent's metadata: libvirt makes s2 a root, and the
        # roll-forward re-parents s3 as libvirt would (it must not name the deleted s1)
        virsh("snapshot-delete", dom.name, "s1", "--metadata")
        recovered = run_vshx("recover", dom.name)
        assert recovered.returncode == 0, recovered.stderr
        assert tree(dom.name) == {"s3": ""}
        check_after(dom, tmp_path)
    finally:
        destroy(dom)


def run_vshx_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "vshx", "-c", URI]


def test_checkpoints_still_give_the_right_incremental_backup(tmp_path: Path) -> None:
    """A checkpoint taken before two snapshots are deleted (the current one, then a middle
    one): its incremental backup holds exactly what the guest wrote since, no more."""
    dom = build(tmp_path, 1, True, "checkpoint")
    try:
        virsh("checkpoint-create-as", dom.name, "cp1")
        write(dom, "vda", 0x55, 2 * 1048576)
        virsh(
            "snapshot-create-as", dom.name, "s4", "--disk-only", "--atomic",
            "--diskspec", f"vda,file={dom.file('vda', 's4')}",
        )  # fmt: skip
        write(dom, "vda", 0x56, 3 * 1048576)
        for words in (["--current"], ["s2"]):
            proc = run_vshx("snapshot-delete", dom.name, *words)
            assert proc.returncode == 0, proc.stderr
        assert virsh("checkpoint-list", dom.name, "--name").stdout.split() == ["cp1"]
        target = tmp_path / "incremental.qcow2"
        backup = (
            "<domainbackup mode='push'><incremental>cp1</incremental><disks>"
            f"<disk name='vda' type='file'><target file='{target}'/><driver type='qcow2'/>"
            "</disk></disks></domainbackup>"
        )
        virsh("backup-begin", dom.name, "/dev/stdin", stdin=backup)
        wait_for(lambda: "Backup" in virsh("domjobinfo", dom.name, "--completed").stdout, "it")
        out = subprocess.run(
            ["qemu-img", "map", "-U", "--output=json", str(target)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        own = [e["start"] for e in json.loads(out) if e["data"] and e["depth"] == 0]
        assert own == [2 * 1048576, 3 * 1048576]
        for pattern, offset in ((0x55, "2M"), (0x56, "3M")):
            read = subprocess.run(
                ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} {offset} 64k",
                 str(target)],
                capture_output=True,
                text=True,
            )  # fmt: skip
            assert "verification failed" not in read.stdout + read.stderr, read.stdout
    finally:
        destroy(dom)


def memory_snapshot(dom: Dom, tmp: Path) -> Path:
    """Snapshot m4 of the running ``dom`` with its RAM in m4.mem, then a guest write above it;
    the memory file's path."""
    memory = dom.dir / "m4.mem"
    virsh(
        "snapshot-create-as", dom.name, "m4", "--atomic",
        "--memspec", f"file={memory},snapshot=external",
        "--diskspec", f"vda,file={dom.file('vda', 'm4')}",
    )  # fmt: skip
    write(dom, "vda", 0x66, 4 * 1048576)
    flush(dom)
    dom.views["vda"] = view(sources(dom.name)["vda"], tmp)
    return memory


def test_memory_snapshot_deleted_with_its_ram_and_never_reverted(tmp_path: Path) -> None:
    """A snapshot with memory state: revert refuses (running, then shut off), delete removes
    its disk moment and its memory file, the other snapshots keep theirs."""
    dom = build(tmp_path, 1, True, "memory")
    try:
        memory = memory_snapshot(dom, tmp_path)
        refused = run_vshx("snapshot-revert", dom.name, "m4")
        assert refused.returncode == 1 and "running" in refused.stderr
        virsh("destroy", dom.name)
        dom.running = False
        refused = run_vshx("snapshot-revert", dom.name, "m4")
        assert refused.returncode == 1 and "memory state" in refused.stderr
        proc = run_vshx("snapshot-delete", dom.name, "m4")
        assert proc.returncode == 0, proc.stderr
        assert not memory.exists()
        assert set(tree(dom.name)) == {"s1", "s2", "s3"}
        check_after(dom, tmp_path)
    finally:
        destroy(dom)


@pytest.mark.parametrize("pair", [KINDS[0]], ids=[IDS[0]], indirect=True)
def test_a_memory_snapshots_moment_moves_as_native(pair: tuple[Dom, Dom], tmp_path: Path) -> None:
    """Deleting the snapshot below a memory snapshot moves that snapshot's disk moment whole
    into the file below: libvirt re-points its metadata there, and its RAM finds the same disk
    contents.  A differential run against virsh: vshx refused ("holds memory state taken on
    s3.qcow2"); it now deletes as libvirt does, the memory file kept."""
    memories = []
    for dom in pair:
        moment = sources(dom.name)["vda"]  # the file m4's RAM goes with, frozen by m4
        memories.append(memory_snapshot(dom, tmp_path))
        dom.moments[("m4", "vda")] = view(moment, tmp_path)
    differential(pair, tmp_path, "s3")
    native, ours = pair
    names = [{d: Path(p).name for d, p in snapshot_files(d.name, "m4").items()} for d in pair]
    assert names[0] == names[1]
    assert all(memory.exists() for memory in memories)
    check_after(ours, tmp_path)
    check_after(native, tmp_path)


@pytest.mark.parametrize("pair", [KINDS[0]], ids=[IDS[0]], indirect=True)
def test_deleting_a_memory_snapshot_as_native_but_its_ram_file(
    pair: tuple[Dom, Dom], tmp_path: Path
) -> None:
    """Deleting the memory snapshot itself: libvirt 9.0 merges its disk and drops its metadata
    as vshx does, but leaves its memory file on disk (a differential run found it); vshx
    removes it, and its --teach line says that this is where the two differ."""
    memories = []
    for dom in pair:
        moment = sources(dom.name)["vda"]
        memories.append(memory_snapshot(dom, tmp_path))
        dom.moments[("m4", "vda")] = view(moment, tmp_path)
    native, ours = pair
    taught = run_vshx("snapshot-delete", ours.name, "m4", "--dry-run", "--teach")
    assert taught.returncode == 0, taught.stderr
    said = [line for line in taught.stdout.splitlines() if "native:" in line]
    assert said and f"leaves the memory file {memories[1]} on disk" in said[0], taught.stdout
    for dom in pair:
        del dom.moments[("m4", "vda")]
    differential(pair, tmp_path, "m4")
    assert memories[0].exists() and not memories[1].exists()


def test_failed_offline_two_disk_delete_is_rolled_forward_by_recover(tmp_path: Path) -> None:
    """Shut off, two disks: vdb's commit fails (its base made immutable) after vda's merge is
    done. The journal stays, other commands refuse, and recover finishes every disk."""
    dom = build(tmp_path, 2, False, "offline-recover")
    stuck = dom.file("vdb", "s1")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        proc = run_vshx("snapshot-delete", dom.name, "s2")
        assert proc.returncode == 1, proc.stderr
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
        assert "vdb-s1" in proc.stderr  # vdb failed after vda's merge: half done
        merged = qemu_img_chain(dom.file("vda", "s3"))[0]["backing-filename"]
        assert merged == str(dom.file("vda", "s1"))
        refused = run_vshx("snapshot-delete", dom.name, "s3")
        assert refused.returncode == 1 and "did not finish" in refused.stderr, refused.stderr
        recovered = run_vshx("recover", dom.name)
        assert recovered.returncode == 0, recovered.stderr
        assert tree(dom.name) == {"s1": "", "s3": "s1"}
        assert current(dom.name) == "s3"
        check_after(dom, tmp_path)
        assert not any(dom.file(disk, "s2").exists() for disk in dom.disks)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
        destroy(dom)


@pytest.mark.parametrize("pair", [KINDS[1]], ids=[IDS[1]], indirect=True)
def test_dry_run_script_reaches_the_same_end_state(pair: tuple[Dom, Dom], tmp_path: Path) -> None:
    """The printed plan run by sh -e (READY on both disks, then the pivots) leaves what the
    real run leaves."""
    scripted, ours = pair
    words = ("--current", "--route", "commit")
    script = run_vshx("snapshot-delete", scripted.name, *words, "--dry-run")
    assert script.returncode == 0, script.stderr
    ran = subprocess.run(["sh", "-e"], input=script.stdout, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    proc = run_vshx("snapshot-delete", ours.name, *words)
    assert proc.returncode == 0, proc.stderr
    assert tree(ours.name) == tree(scripted.name) == {"s1": "", "s2": "s1"}
    assert current(ours.name) == current(scripted.name) == "s2"
    assert files(ours) == files(scripted)
    check_after(ours, tmp_path)
    check_after(scripted, tmp_path)


def test_killed_with_active_commits_pending_pivots_on_recover(tmp_path: Path) -> None:
    """Deleting the current snapshot of two disks, vshx killed during vda's active commit:
    recover pivots vda once READY, commits and pivots vdb, and finishes the metadata."""
    dom = build(tmp_path, 2, True, "pivot", big=3)
    try:
        proc = subprocess.Popen(
            [*run_vshx_argv(), "snapshot-delete", dom.name, "--current", "--route", "commit"]
            + ["--bandwidth", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: "Active Block Commit" in block_job(dom.name, "vda"), "vda's job")
        proc.kill()
        proc.communicate()
        virsh("blockjob", dom.name, "vda", "--bandwidth", "0")
        wait_for(lambda: '"ready": true' in run_vshx("jobs", dom.name, "--json").stdout, "READY")
        recovered = run_vshx("recover", dom.name)
        assert recovered.returncode == 0, recovered.stderr
        assert "pivot vda: pivoted" in recovered.stderr  # the READY job, not a new commit
        assert "pivot vdb: pivoted" in recovered.stderr
        assert tree(dom.name) == {"s1": "", "s2": "s1"}
        assert current(dom.name) == "s2"
        assert sources(dom.name) == {d: str(dom.file(d, "s2")) for d in dom.disks}
        check_after(dom, tmp_path)
        assert "no block jobs and no interrupted" in run_vshx("jobs", dom.name).stdout
    finally:
        destroy(dom)


def test_a_deleted_snapshots_moment_file_out_of_the_chain_is_named(tmp_path: Path) -> None:
    """An outside tester: after a safe rebase took sn2.qcow2 out of the chain (it still holds
    sn3's moment), `snapshot-delete sn2 --children` deleted sn3 too and said nothing of
    sn2.qcow2, which no snapshot named afterwards.  The plan now names it, with the line that
    removes it once vshx checked nothing uses it; it keeps the file (not a layer it merges)."""
    lab = make_lab(tmp_path, running=False)
    try:
        moved = run_vshx("rebase", "--domain", lab.name, "--disk", "vda", "--top", "sn3.qcow2",
                         "--backing", "sn1")  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        plan = run_vshx("snapshot-delete", lab.name, "sn2", "--children", "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "# sn2.qcow2 (out of the chain) holds snapshot sn3's moment on vda" in plan.stdout
        assert f"vshx rm -f -- {lab.dir / 'sn2.qcow2'}" in plan.stdout
        done = run_vshx("snapshot-delete", lab.name, "sn2", "--children")
        assert done.returncode == 0, done.stderr
        assert (lab.dir / "sn2.qcow2").exists()  # kept: vshx deletes what it merged away
        removed = run_vshx("rm", "-f", "--", str(lab.dir / "sn2.qcow2"))
        assert removed.returncode == 0, removed.stderr
        assert not (lab.dir / "sn2.qcow2").exists()
    finally:
        destroy_lab(lab)


def test_a_file_a_kept_snapshot_names_is_not_offered_for_removal(tmp_path: Path) -> None:
    """nu15 #2: after a pull left sn2.qcow2 and sn3.qcow2 out of the chain, `snapshot-delete
    sn3 --children` offered `vshx rm` of sn2.qcow2, which the kept snapshot sn2 names (its
    overlay): vshx rm refused it for good.  Only files no remaining snapshot names are offered,
    and each line offered works."""
    lab = make_lab(tmp_path, running=False)
    try:
        pulled = run_vshx("pull", lab.name, "vda", "--base", "sn1")
        assert pulled.returncode == 0, pulled.stderr
        plan = run_vshx("snapshot-delete", lab.name, "sn3", "--children", "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert f"vshx rm -f -- {lab.dir / 'sn2.qcow2'}" not in plan.stdout
        offered = [line.split("need it: ", 1)[1].split(" (vshx checks")[0]
                   for line in plan.stdout.splitlines() if "remove it when" in line]  # fmt: skip
        assert offered == [f"vshx rm -f -- {lab.dir / 'sn3.qcow2'}"]
        assert "forget snapshot sn4: the snapshot this command deletes" in plan.stdout
        done = run_vshx("snapshot-delete", lab.name, "sn3", "--children")
        assert done.returncode == 0, done.stderr
        removed = run_vshx("rm", "-f", "--", str(lab.dir / "sn3.qcow2"))
        assert removed.returncode == 0, removed.stderr
        assert not (lab.dir / "sn3.qcow2").exists() and (lab.dir / "sn2.qcow2").exists()
    finally:
        destroy_lab(lab)


def test_two_disks_merging_into_one_file_system_need_their_bytes_summed(tmp_path: Path) -> None:
    """nu13 #9: each disk's room check asked only for its own bytes, though both merges write
    into the same file system: the second check asks for both, and says so."""
    dom = build(tmp_path, 2, False, "space")
    try:
        planned = run_vshx("snapshot-delete", dom.name, "s2", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        lines = planned.stdout.splitlines()
        needs = [int(line.split(">= ")[1].split(" ")[0]) for line in lines if "$1 >= " in line]
        checks = [line for line in lines if line.startswith("# step") and " free beside " in line]
        assert len(needs) == 2 and len(checks) == 2, planned.stdout
        assert needs[1] > needs[0] and "merged beside it before" in checks[1], planned.stdout
        ran = subprocess.run(["sh", "-e"], input=planned.stdout, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
    finally:
        destroy(dom)
