"""Remote hosts: the offline commands over ``qemu+ssh://`` reach the same end state as locally.

The host is this machine reached through the run's own loopback sshd (tests/sshd.py); vshx
runs where the lab's directory is an empty tmpfs (``hidden``), so a local read of a remote
path finds nothing and only what vshx asks over ssh can work.  Each command runs on three
identical shut-off labs: locally, remotely, and remotely as its ``--dry-run`` script under
``sh -e``; the three must leave the same chain, guest data, definition and snapshot metadata.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    Lab,
    chain_files,
    define_domain,
    destroy_lab,
    file_state,
    make_lab,
    make_overlay,
    qemu_check,
    qemu_img_chain,
    release_remote,
    run_vshx,
    snapshot_names,
    snapshot_sources,
    virsh,
)
from sshd import Sshd, hidden

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # hidden() mounts; qemu:///system

COMMANDS = {
    "commit": ["commit", "{dom}", "vda", "--top", "sn3", "--base", "sn1"],
    "pull": ["pull", "{dom}", "vda", "--base", "sn1"],
    "flatten": ["flatten", "{dom}", "vda"],
    "snapshot-delete": ["snapshot-delete", "{dom}", "sn2"],
    "snapshot-revert": ["snapshot-revert", "{dom}", "sn2"],  # its new file's name too
}
SHOWS_AFTER = {"snapshot-revert": "sn2"}  # the guest then sees that snapshot's moment


def remote_vshx(sshd: Sshd, hide: list[Path], *words: str) -> subprocess.CompletedProcess[str]:
    """vshx on the sshd URI, where the directories ``hide`` are empty."""
    argv = hidden(hide, [sys.executable, "-m", "vshx", "-c", sshd.uri(), *words])
    return subprocess.run(argv, capture_output=True, text=True, env=sshd.env(), timeout=900)


def snapshot_file_names(lab: Lab) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Each snapshot's moment files and overlays per disk, by file name."""
    found = {}
    for snap in snapshot_names(lab.name):
        moment, made = snapshot_sources(lab.name, snap)
        found[snap] = (
            {d: os.path.basename(p) for d, p in moment.items()},
            {d: os.path.basename(p) for d, p in made.items()},
        )
    return found


def end_state(lab: Lab, tmp: Path) -> dict[str, object]:
    """What a command leaves, by file names (labs live in different directories): the chain
    as qemu-img reads it, the persistent definition's chain, each snapshot's files, the
    files in the directory, and what the guest sees."""
    names = chain_files(lab.active)
    root = ET.fromstring(virsh("dumpxml", "--inactive", lab.name).stdout)
    defined = [
        os.path.basename(node.get("file", ""))
        for node in root.iter("source")
        if node.get("file", "").startswith(str(lab.dir))
    ]
    snapshots = snapshot_file_names(lab)
    return {
        "chain": names,
        "definition": defined,
        "snapshots": snapshots,
        "files": sorted(p for p in file_state(lab.dir) if not p.startswith(".vshx-lab")),
        "guest": lab.guest_hash(tmp),
    }


def check_images(lab: Lab) -> None:
    for entry in qemu_img_chain(lab.active):
        qemu_check(entry["filename"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_offline_command_over_ssh_is_the_local_one(
    command: str, sshd: Sshd, tmp_path: Path
) -> None:
    labs = {
        where: make_lab(tmp_path, running=False, dirname=where)
        for where in ("local", "remote", "script")
    }
    try:
        before = {where: lab.guest_hash(tmp_path) for where, lab in labs.items()}
        if command in SHOWS_AFTER:
            before = {
                where: lab.record_moments(tmp_path)[SHOWS_AFTER[command]]["vda"]
                for where, lab in labs.items()
            }
        words = {
            where: [w.format(dom=lab.name) for w in COMMANDS[command]]
            for where, lab in labs.items()
        }

        done = run_vshx(*words["local"])
        assert done.returncode == 0, done.stderr

        done = remote_vshx(sshd, [labs["remote"].dir], *words["remote"])
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr

        printed = remote_vshx(sshd, [labs["script"].dir], *words["script"], "--dry-run")
        assert printed.returncode == 0, printed.stderr
        script = printed.stdout
        assert "\nssh " in script and "qemu-img " in script, script
        assert "'qemu+ssh://" in script or "virsh" not in script
        untouched = end_state(labs["script"], tmp_path)  # a dry run changes nothing
        assert untouched["chain"] == [
            "sn4.qcow2",
            "sn3.qcow2",
            "sn2.qcow2",
            "sn1.qcow2",
            "base.qcow2",
        ]
        ran = subprocess.run(
            hidden([labs["script"].dir], ["sh", "-e"]),
            input=script,
            capture_output=True,
            text=True,
            env=sshd.env(),
            timeout=900,
        )
        assert ran.returncode == 0, ran.stderr + script

        states = {where: end_state(lab, tmp_path) for where, lab in labs.items()}
        for where, state in states.items():
            assert state["guest"] == before[where], f"{where}: the guest sees other data"
            check_images(labs[where])
        local = states["local"]
        assert states["remote"] == {**local, "guest": states["remote"]["guest"]}
        assert states["script"] == {**local, "guest": states["script"]["guest"]}
    finally:
        for lab in labs.values():
            destroy_lab(lab)


def test_remote_domain_starts_on_the_chain_vshx_reports(sshd: Sshd, tmp_path: Path) -> None:
    """After a remote commit the domain starts, and QEMU runs on the chain vshx shows; the
    lock beside the images is gone again, and jobs and recover answer on the remote URI."""
    lab = make_lab(tmp_path, running=False)
    try:
        done = remote_vshx(
            sshd, [lab.dir], "commit", lab.name, "vda", "--top", "sn2", "--base", "base"
        )
        assert done.returncode == 0, done.stderr
        assert not [
            p for p in os.listdir(lab.dir) if p.startswith(".vshx-") and p.endswith(".lock")
        ]
        shown = remote_vshx(sshd, [lab.dir], "chain", lab.name, "vda")
        assert shown.returncode == 0, shown.stderr
        assert "base.qcow2 <- sn3.qcow2 <- sn4.qcow2 (active)" in shown.stdout
        for words in (["jobs"], ["recover", lab.name, "vda"]):
            answer = remote_vshx(sshd, [lab.dir], *words)
            assert answer.returncode == 0 and "Traceback" not in answer.stderr, answer.stderr
        virsh("start", lab.name)
        live = ET.fromstring(virsh("dumpxml", lab.name).stdout)
        files = [n.get("file") for n in live.iter("source") if n.get("file")]
        assert [os.path.basename(f or "") for f in files] == [
            "sn4.qcow2",
            "sn3.qcow2",
            "base.qcow2",
        ]
        virsh("destroy", lab.name)
    finally:
        destroy_lab(lab)


def define_other(name: str, image: Path) -> None:
    define_domain(name, {"vda": image})


def test_another_domain_on_the_remote_host_holds_the_commit_back(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Another domain uses the base, once through a hard link of it and once through an
    overlay naming it: both are found on the remote host (device and inode read there)."""
    lab = make_lab(tmp_path, running=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "golden.qcow2"
    os.link(lab.layer("base"), link)
    overlay = elsewhere / "child.qcow2"
    make_overlay(overlay, str(lab.layer("base")))
    linked, child = (f"{LAB_PREFIX}other-{uuid.uuid4().hex[:8]}" for _ in range(2))
    define_other(linked, link)
    define_other(child, overlay)
    try:
        watched = [file_state(lab.dir), file_state(elsewhere)]
        hide = [lab.dir, elsewhere]
        done = remote_vshx(sshd, hide, "commit", lab.name, "vda", "--top", "sn2", "--base", "base")
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.startswith("error: refusing: committing into"), done.stderr
        assert f"domain {linked} disk vda ({link})" in done.stderr
        assert f"domain {child} disk vda ({overlay})" in done.stderr
        assert "hint:" in done.stderr and "Traceback" not in done.stderr
        # the chain's lock file on the host is gone when vshx has exited (its holder shell
        # removes it and exits before vshx goes on: tests/test_remote_units.py)
        assert [file_state(lab.dir), file_state(elsewhere)] == watched
        printed = remote_vshx(
            sshd, hide, "commit", lab.name, "vda", "--top", "sn2", "--base", "base", "--dry-run"
        )
        assert printed.returncode == 1 and "refusing" in printed.stderr, printed.stderr
    finally:
        for name in (linked, child):
            subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)
        destroy_lab(lab)


def test_the_lock_beside_the_remote_images_is_the_one_a_vshx_there_takes(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vshx over ssh holds the chain's lock on the remote host (the same file, flock and
    note as a vshx running there): one there is refused meanwhile; letting go removes it."""
    from vshx.plans import lock
    from vshx.storage import host

    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    make_overlay(top, str(base))
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    remote = host.select(sshd.uri())
    try:
        lock.take(str(top), "vshx commit over ssh")
        held = [p for p in os.listdir(tmp_path) if p.startswith(".vshx-") and p.endswith(".lock")]
        assert len(held) == 1, os.listdir(tmp_path)
        note = (tmp_path / held[0]).read_text()
        assert '"command": "vshx commit over ssh"' in note, note
        busy = subprocess.run(["flock", "-n", str(tmp_path / held[0]), "true"])
        assert busy.returncode == 1  # the remote shell holds the flock
        there = run_vshx("commit", str(top))
        assert there.returncode == 1 and "it holds the lock on this chain" in there.stderr
        assert "vshx commit over ssh" in there.stderr, there.stderr
    finally:
        release_remote(remote)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".lock")]
    assert run_vshx("commit", str(top)).returncode == 0


HOSTILE_NAMES = [
    "a b.qcow2",
    "new\nline.qcow2",
    "$(touch pwned)`touch pwned`'\".qcow2",
    "-leading.qcow2",
    os.fsdecode(b"non-utf8-\xff.qcow2"),
    ".hidden.qcow2",
]


def test_remote_reads_are_the_local_ones_for_hostile_names(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine over ssh: what the host reads of each file (listing, stat, lstat, the
    resolved path, bytes) is exactly what os reads locally, whatever the name holds."""
    from vshx.storage import host

    directory = tmp_path / "odd dir $(x)"
    directory.mkdir()
    for name in HOSTILE_NAMES:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "--", str(directory / name), "1M"],
            check=True,
        )
    os.symlink(directory / HOSTILE_NAMES[0], directory / "link.qcow2")
    os.symlink(directory / "missing", directory / "dangling")
    os.link(directory / HOSTILE_NAMES[1], directory / "hard.qcow2")
    os.mkfifo(directory / "fifo")
    (directory / "sub").mkdir()
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    remote = host.select(sshd.uri())
    try:
        assert sorted(host.listdir(str(directory))) == sorted(os.listdir(directory))
        for name in os.listdir(directory):
            path = str(directory / name)
            for follow in (True, False):
                try:
                    mine = os.stat(path, follow_symlinks=follow)
                except FileNotFoundError:
                    with pytest.raises(FileNotFoundError):
                        host.stat(path, follow)
                    continue
                theirs = host.stat(path, follow)
                fields = ("st_dev", "st_ino", "st_mode", "st_nlink", "st_size", "st_mtime_ns")
                assert [getattr(theirs, f) for f in fields] == [getattr(mine, f) for f in fields]
            assert host.realpath(path) == os.path.realpath(path)
            for mode in (os.F_OK, os.R_OK, os.R_OK | os.W_OK, os.X_OK):
                assert host.access(path, mode) == os.access(path, mode), (name, mode)
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    assert host.read(path, 72) == handle.read(72)
                    assert host.read(path, 100, 5000) == os.pread(handle.fileno(), 100, 5000)
        assert not (directory / "pwned").exists() and not Path("pwned").exists()
        with pytest.raises(FileNotFoundError):
            host.stat(str(directory / "nothing here"))
        assert abs(host.free_bytes(str(directory)) - shutil.disk_usage(directory).free) < 1 << 28
        host.unlink(str(directory / HOSTILE_NAMES[2]))
        assert not (directory / HOSTILE_NAMES[2]).exists()
    finally:
        host.select("qemu:///system")
        close = getattr(remote, "close", None)
        if close is not None:
            close()


def test_a_remote_new_file_is_made_only_where_no_file_is(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_new`` over ssh (a revert's new overlay): a name taken by a file or a dangling
    link is FileExistsError with nothing written; a free one becomes an empty file."""
    from vshx.storage import host

    directory = tmp_path / "odd dir $(x)"
    directory.mkdir()
    taken = directory / HOSTILE_NAMES[2]
    taken.write_bytes(b"a user's file")
    os.symlink(directory / "missing", directory / "dangling")
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    remote = host.select(sshd.uri())
    try:
        for name in (HOSTILE_NAMES[2], "dangling"):
            with pytest.raises(FileExistsError):
                host.create_new(str(directory / name))
        assert taken.read_bytes() == b"a user's file"
        assert not (directory / "missing").exists()
        for name in HOSTILE_NAMES[:2] + HOSTILE_NAMES[3:]:
            host.create_new(str(directory / name))
            assert (directory / name).is_file() and (directory / name).read_bytes() == b""
        assert not (directory / "pwned").exists() and not Path("pwned").exists()
    finally:
        host.select("qemu:///system")
        close = getattr(remote, "close", None)
        if close is not None:
            close()


def test_an_interrupted_remote_plan_is_listed_and_recovered_over_ssh(
    sshd: Sshd, tmp_path: Path
) -> None:
    """A remote commit's qemu-img steps ran (its printed ssh lines), then vshx died before the
    definition's step: jobs lists it, a new merge is refused, recover finishes it over ssh."""
    lab = make_lab(tmp_path, running=False)
    try:
        before = lab.guest_hash(tmp_path)
        words = ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3"]
        plan = remote_vshx(sshd, [lab.dir], *words, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        head = plan.stdout[: plan.stdout.index("# step 9:")]  # the virsh checks run here
        assert head.count("\nssh -n ") == 4, head  # the find and df checks, commit, rebase
        ran = subprocess.run(
            hidden([lab.dir], ["sh", "-e"]), input=head, capture_output=True, text=True,
            env=sshd.env(), timeout=600,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        entry = (
            f"<journal plan='commit' step='7' steps='8' what='point sn4.qcow2 at sn1.qcow2' "
            f"disk='vda' image='{lab.layer('sn4')}' pivot='no' pid='999999' time='0'/>"
        )
        virsh(
            "metadata", lab.name, "--uri", "https://vshx.invalid/journal", "--key", "vshx",
            "--set", entry, "--config",
        )  # fmt: skip
        listed = remote_vshx(sshd, [lab.dir], "jobs")
        assert listed.returncode == 0 and lab.name in listed.stdout, listed.stdout + listed.stderr
        refused = remote_vshx(sshd, [lab.dir], "pull", lab.name, "vda", "--base", "base")
        assert refused.returncode == 1 and "did not finish" in refused.stderr, refused.stderr
        done = remote_vshx(sshd, [lab.dir], "recover", lab.name, "vda")
        assert done.returncode == 0, done.stdout + done.stderr
        root = ET.fromstring(virsh("dumpxml", "--inactive", lab.name).stdout)
        defined = [os.path.basename(n.get("file", "")) for n in root.iter("source")]
        assert defined == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"], defined
        assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
        check_images(lab)
    finally:
        destroy_lab(lab)


def test_a_libssh2_uri_reaches_the_files_with_ssh_as_its_user_host_port_key_and_known_hosts(
    sshd: Sshd, tmp_path: Path
) -> None:
    """libvirt talks to the host through libssh2; vshx reaches the same host's files with ssh
    as the same user, port and key, checking the host key against the URI's known_hosts: an
    offline commit ends as over qemu+ssh://, its script says how it ran."""
    lab = make_lab(tmp_path, running=False)
    known = sshd.directory / "known_hosts"
    uri = (
        f"qemu+libssh2://{sshd.user}@127.0.0.1:{sshd.port}/system?keyfile={sshd.key}"
        f"&known_hosts={known}&sshauth=privkey"
    )
    words = ["commit", lab.name, "vda", "--top", "sn3", "--base", "sn1"]
    try:
        before = lab.guest_hash(tmp_path)
        vshx = [sys.executable, "-m", "vshx", "-c", uri]
        printed = subprocess.run(
            hidden([lab.dir], [*vshx, *words, "--dry-run"]),
            capture_output=True, text=True, env=sshd.env(), timeout=900,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        assert (
            f"\nssh -n -p {sshd.port} -i {sshd.key} -o UserKnownHostsFile={known} -o BatchMode=yes "
            f"{sshd.user}@127.0.0.1 'qemu-img commit" in printed.stdout
        ), printed.stdout
        done = subprocess.run(
            hidden([lab.dir], [*vshx, *words]),
            capture_output=True, text=True, env=sshd.env(), timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        committed_sn3_into_sn1(lab, tmp_path, before)
    finally:
        destroy_lab(lab)


def committed_sn3_into_sn1(lab: Lab, tmp: Path, before: str) -> None:
    """The end of an offline `commit --top sn3 --base sn1`, as the local command leaves it:
    the chain and the persistent definition sn4 <- sn1 <- base, the guest's data, clean
    images."""
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    root = ET.fromstring(virsh("dumpxml", "--inactive", lab.name).stdout)
    defined = [os.path.basename(n.get("file", "")) for n in root.iter("source")]
    assert defined == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"], defined
    assert lab.guest_hash(tmp) == before
    check_images(lab)


def test_a_remote_script_pasted_back_into_vshx_runs_its_ssh_lines_on_the_host(
    sshd: Sshd, tmp_path: Path
) -> None:
    """vshx runs its own printed scripts (-f, the REPL): a remote plan's `ssh ... 'qemu-img
    ...'` lines run on the host as printed, and a bare qemu-img line on a qemu+ssh:// URI
    runs there too, never on this machine's file of the same name."""
    lab = make_lab(tmp_path, running=False)
    try:
        before = lab.guest_hash(tmp_path)
        words = ["commit", lab.name, "vda", "--top", "sn3", "--base", "sn1"]
        printed = remote_vshx(sshd, [lab.dir], *words, "--dry-run")
        assert printed.returncode == 0 and "\nssh -n " in printed.stdout, printed.stderr
        argv = [sys.executable, "-m", "vshx", "-c", sshd.uri(), "-f", "-"]
        ran = subprocess.run(
            hidden([lab.dir], argv), input=printed.stdout, capture_output=True, text=True,
            env=sshd.env(), timeout=900,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr + printed.stdout
        committed_sn3_into_sn1(lab, tmp_path, before)
        info = remote_vshx(sshd, [lab.dir], "qemu-img", "info", str(lab.layer("sn4")))
        assert info.returncode == 0, info.stderr
        assert f"backing file: {lab.layer('sn1')}" in info.stdout, info.stdout
        other = remote_vshx(sshd, [lab.dir], "ssh", "-n", "elsewhere.invalid", "qemu-img info x")
        assert other.returncode == 1 and "vshx runs only the ssh lines it prints" in other.stderr
    finally:
        destroy_lab(lab)
