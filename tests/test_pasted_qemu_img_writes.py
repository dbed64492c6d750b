"""A changing qemu-img line typed or pasted into vshx gets vshx's own checks on what it writes
(an outside attack: `vshx qemu-img commit o2.qcow2` ran unchecked and changed what o1.qcow2,
another overlay of the same base, showed; `vshx commit o2.qcow2` refused it)."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI, Lab, file_state, guest_hash, qemu_check, run_vshx

from vshx.shell.readonly import qemu_img_writes


def two_overlays(where: Path) -> tuple[Path, Path, Path]:
    """b.qcow2 <- o1.qcow2 and b.qcow2 <- o2.qcow2, o2 holding data of its own."""
    where.mkdir()
    base, o1, o2 = where / "b.qcow2", where / "o1.qcow2", where / "o2.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -q -P 0x11 0 1M", str(base)], check=True)
    for overlay in (o1, o2):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base)]
            + [str(overlay)],
            check=True,
        )
    subprocess.run(["qemu-io", "-c", "write -q -P 0x22 0 1M", str(o2)], check=True)
    return base, o1, o2


def digest(directory: Path) -> str:
    return hashlib.sha256(repr(sorted(file_state(directory).items())).encode()).hexdigest()


@pytest.mark.libvirt
def test_a_pasted_commit_into_a_shared_base_is_refused_in_every_mode(tmp_path: Path):
    base, o1, o2 = two_overlays(tmp_path / "imgs")
    seen = guest_hash(o1, tmp_path)
    before = digest(base.parent)
    own = run_vshx("commit", str(o2))
    assert own.returncode == 1 and str(o1) in own.stderr  # vshx's own commit refuses
    line = f"qemu-img commit {o2}"
    for how in (
        run_vshx(*shlex.split(line)),  # one-shot
        run_vshx("-f", "-", stdin=line + "\n"),  # a batch, a pasted script
        run_vshx(*shlex.split(f"qemu-img commit -b {base} {o2}")),
        run_vshx(*shlex.split(f"qemu-img commit -q -f qcow2 -d {o2}")),
        # a relative -b names the base from o2's directory, as QEMU looks for it (the review:
        # it was taken from vshx's own directory, and the checks skipped the real base)
        run_vshx(*shlex.split(f"qemu-img commit -b {base.name} {o2}"), cwd="/"),
    ):
        assert how.returncode == 1, how.stderr
        assert "error: refusing: committing into" in how.stderr and str(o1) in how.stderr
        assert "hint: nothing was changed" in how.stderr and "Traceback" not in how.stderr
    dry = run_vshx("--dry-run", *shlex.split(line))
    # refused before it is printed: `vshx --dry-run ... | sh -e` stops where vshx refuses
    assert dry.returncode == 1 and line not in dry.stdout and str(o1) in dry.stderr
    assert digest(base.parent) == before and guest_hash(o1, tmp_path) == seen
    qemu_check(base)


@pytest.mark.libvirt
def test_pasted_lines_that_change_what_a_shared_file_shows_are_refused(tmp_path: Path):
    base, o1, _o2 = two_overlays(tmp_path / "imgs")
    subprocess.run(["qemu-img", "snapshot", "-c", "s", str(base)], check=True)
    other = tmp_path / "other.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(other), "4M"], check=True)
    before = digest(base.parent)
    for line in (
        f"qemu-img snapshot -a s {base}",
        f"qemu-img create -f qcow2 {base} 4M",
        f"qemu-img convert -n -O qcow2 {other} {base}",
        f"qemu-img dd -O qcow2 if={other} of={base}",
        f"qemu-img resize --shrink {base} 1M",
        f"qemu-img resize {base} 1G",  # an outside tester: a snapshot's moment grew unchecked
        f"qemu-img amend -o size=1M {base}",
        f"qemu-img bench -w -c 1 {base}",
    ):
        refused = run_vshx("-f", "-", stdin=line + "\n")
        assert refused.returncode == 1 and str(o1) in refused.stderr, (line, refused.stderr)
    unread = run_vshx(*shlex.split(f"qemu-img commit --image-opts driver=qcow2,file.filename={o1}"))
    assert unread.returncode == 1 and "cannot tell which files" in unread.stderr
    assert digest(base.parent) == before


@pytest.mark.libvirt
def test_reads_and_unshared_writes_still_run(tmp_path: Path):
    base, o1, o2 = two_overlays(tmp_path / "imgs")
    for line in (f"qemu-img info {o2}", f"qemu-img check {o2}", f"qemu-img map {o2}"):
        done = run_vshx(*shlex.split(line))
        assert done.returncode == 0, (line, done.stderr)
    o1.unlink()  # o2 alone uses b.qcow2 now: its commit is the user's to make
    shown = guest_hash(o2, tmp_path)
    done = run_vshx("-f", "-", stdin=f"qemu-img commit {o2}\n")
    assert done.returncode == 0, done.stderr
    assert guest_hash(base, tmp_path) == shown
    made = tmp_path / "imgs" / "new.qcow2"
    created = run_vshx(*shlex.split(f"qemu-img create -q -f qcow2 -F qcow2 -b {base} {made}"))
    assert created.returncode == 0 and made.exists(), created.stderr
    grown = run_vshx(*shlex.split(f"qemu-img resize {made} 8M"))  # a top: nothing reads it
    assert grown.returncode == 0, grown.stderr


@pytest.mark.libvirt
def test_a_pasted_line_on_a_running_domains_chain_names_the_domain_form(lab: Lab, tmp_path: Path):
    before = lab.guest_hash(tmp_path)
    files = digest(lab.dir)
    for line, form in (
        (f"qemu-img commit {lab.layer('sn3')}", f"vshx commit {lab.name} vda"),
        (f"qemu-img rebase -u -F qcow2 -b {lab.layer('sn1')} {lab.layer('sn3')}", "--domain"),
        (f"qemu-img bitmap --add {lab.layer('sn2')} b0", "shut"),
    ):
        refused = run_vshx("-f", "-", stdin=line + "\n")
        assert refused.returncode == 1, (line, refused.stderr)
        assert f"running domain {lab.name} vda" in refused.stderr and form in refused.stderr
    dry = run_vshx("--dry-run", "-f", "-", stdin=f"qemu-img commit {lab.layer('sn3')}\n")
    assert dry.returncode == 1 and f"running domain {lab.name}" in dry.stderr
    assert digest(lab.dir) == files and lab.guest_hash(tmp_path) == before


@pytest.mark.parametrize(
    ("line", "files", "views"),
    [
        ("commit o.qcow2", ("o.qcow2",), ()),  # the base: read from o.qcow2's header
        ("commit -b b o", ("o", "b"), (("b", "o"),)),
        ("commit -qbb o", ("o", "b"), (("b", "o"),)),  # -q -b b, as getopt reads it
        ("rebase -u -F qcow2 -b a o", ("o",), ()),
        ("snapshot -l o", (), ()),
        ("snapshot -c s o", ("o",), ()),
        ("snapshot -a s o", ("o",), (("o", None),)),
        ("check o", (), ()),
        ("check -r all o", ("o",), ()),
        ("resize o 8M", ("o",), (("o", None),)),  # a grown moment: a revert boots that size
        ("resize --shrink o -1M", ("o",), (("o", None),)),
        ("amend -o compat=1.1 o", ("o",), ()),
        ("amend -o backing_file=x o", ("o",), (("o", None),)),
        ("create -f qcow2 new 1M", (), ()),
        ("create -f qcow2 old 1M", ("old",), (("old", None),)),
        ("convert -O qcow2 a new", (), ()),
        ("convert -n -O qcow2 a old", ("old",), (("old", None),)),
        ("dd of=old if=a bs=1M", ("old",), (("old", None),)),
        ("bench o", (), ()),
    ],
)
def test_what_a_changing_line_writes(line: str, files: tuple, views: tuple):
    found = qemu_img_writes(shlex.split(line), lambda path: path != "new")
    assert found is not None and found.files == files and found.views == views


@pytest.mark.parametrize(
    "line",
    [
        "--trace x commit o",  # an option before the subcommand
        "comit o",  # no subcommand vshx knows
        "commit --image-opts driver=qcow2,file.filename=o",
        "commit json:{}",
        "rebase -b b nbd:localhost:10809",
        "commit --no-such-option o",
        "convert -O qcow2 --target-image-opts a driver=raw,file.filename=o",
    ],
)
def test_a_line_vshx_cannot_read_is_none(line: str):
    assert qemu_img_writes(shlex.split(line), lambda path: True) is None


@pytest.mark.parametrize(
    "line", ["info --backing-chain 'json:{}'", "check 'json:{}'", "map -f vmdk o", "measure o"]
)
def test_reads_are_kept_as_they_are(line: str):
    found = qemu_img_writes(shlex.split(line), lambda path: True)
    assert found is not None and found.files == ()


@pytest.mark.libvirt
def test_a_pasted_commit_is_refused_while_a_vshx_holds_the_lock(
    tmp_path: Path,
):
    from vshx.plans import lock

    base, o1, o2 = two_overlays(tmp_path / "imgs")
    o1.unlink()  # o2 alone uses b.qcow2: only the lock holds the commit back
    lock.take(str(base), "vshx commit elsewhere")  # as a vshx working on that chain holds it
    try:
        before = digest(base.parent)
        held = run_vshx(*shlex.split(f"qemu-img commit {o2}"))
        assert held.returncode == 1 and "holds the lock" in held.stderr, held.stderr
        assert digest(base.parent) == before
    finally:
        lock.release_all()
    done = run_vshx(*shlex.split(f"qemu-img commit {o2}"))
    assert done.returncode == 0, done.stderr
    assert not [p for p in base.parent.iterdir() if p.name.startswith(".vshx-")]  # let go


@pytest.mark.libvirt
def test_a_pasted_pointer_only_rebase_gets_vshx_rebase_u_proof(tmp_path: Path):
    """An outside attack: a typed or pasted `qemu-img rebase -u` that points an overlay past a
    layer, at no backing, or at its backing read as another format ran (a warning only), and
    the guest saw other data.  Now each is refused with the first differing offset, nothing
    changed; the one a printed plan holds (after its commit: the same data) still runs."""
    base, o1, o2 = two_overlays(tmp_path / "imgs")
    top = tmp_path / "imgs" / "top.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
    subprocess.run([*create, "-b", str(o2), str(top)], check=True)
    before, state = guest_hash(top, tmp_path), digest(tmp_path / "imgs")
    for words in (
        ["-F", "qcow2", "-b", str(base)],  # past o2, which holds data
        ["-b", ""],  # no backing at all
        ["-F", "raw", "-b", str(o2)],  # its own backing, read as raw
        ["-F", "qcow2", "-b", "missing.qcow2"],
    ):
        line = ["qemu-img", "rebase", "-u", "-f", "qcow2", *words, str(top)]
        refused = run_vshx(*line)
        assert refused.returncode == 1, (line, refused.stderr)
        assert refused.stderr.startswith("error: refusing qemu-img rebase -u"), refused.stderr
        assert "hint: nothing was changed" in refused.stderr
        assert digest(tmp_path / "imgs") == state
        if words[0] == "-F" and words[-1] == str(base):  # the hint names the safe rebase whole
            assert f"vshx rebase {top} --backing {base} --backing-format qcow2 does" in (
                refused.stderr
            ), refused.stderr
    subprocess.run(["qemu-img", "commit", "-q", str(o2)], check=True)  # o2's data into b
    fine = run_vshx(
        "qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)
    )
    assert fine.returncode == 0, fine.stderr
    assert guest_hash(top, tmp_path) == before
    qemu_check(top)


@pytest.mark.libvirt
def test_a_pasted_commit_says_which_snapshots_it_loses(offline_lab: Lab):
    """An outside attack: a typed `qemu-img commit` destroyed a snapshot's moment with no word
    of it (vshx's own commit prints `# loses:`).  It still runs as typed (the tutorial's own
    steps), and first says which snapshots lose their moment: those whose file shows what the
    written file holds without the commit's top above it."""
    lab = offline_lab
    proc = run_vshx("qemu-img", "commit", "-b", str(lab.layer("base")), str(lab.layer("sn2")))
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "their moments are lost" in line]
    assert len(warned) == 1, proc.stderr
    assert f"sn1 of {lab.name} (vda: {lab.layer('base')})" in warned[0]
    assert f"sn2 of {lab.name} (vda: {lab.layer('sn1')})" in warned[0]
    assert "sn3 of" not in warned[0] and "sn4 of" not in warned[0]


# vshx in a child process, counting its reads of every domain on the host made for the users of
# given files (preflight's; the shared-use check's usage scan reads the host apart, with pools)
COUNTING_VSHX = """
import sys
from vshx.frontends import cli
from vshx.storage import virt

real, scans = virt.domains_with_disks, []


def counted(conn, flags=0):
    if not flags and sys._getframe(1).f_globals["__name__"] == "vshx.merging.preflight":
        scans.append(flags)
    return real(conn, flags)


virt.domains_with_disks = counted
status = cli.main(sys.argv[1:])
print(f"domain scans: {len(scans)}", file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.libvirt
def test_a_pasted_commit_reads_the_users_of_what_it_writes_once(offline_lab: Lab):
    """The review: the saved-RAM check and the lost-moments warning each scanned every domain
    of the host for the users of the written files; the checks now share one scan, and the
    warning still names the snapshots."""
    lab = offline_lab
    line = ["qemu-img", "commit", "-b", str(lab.layer("base")), str(lab.layer("sn2"))]
    proc = subprocess.run(
        [sys.executable, "-c", COUNTING_VSHX, "-c", URI, *line],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "domain scans: 1" in proc.stderr.splitlines(), proc.stderr
    assert f"sn1 of {lab.name} (vda: {lab.layer('base')})" in proc.stderr
