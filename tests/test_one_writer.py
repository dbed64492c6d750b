"""One writer at a time: two vshx started together on one chain, exactly one changes it.

The issue's race: ``commit --base sn1 --top sn3 --delete`` against ``commit --top sn3
--shallow --delete`` (different bases, one chain).  Without a lock both passed the journal
check and the winner deleted a file the loser's result still named.  Most runs use chains
made with qemu-img under a defined, shut-off domain (fast); two use real labs; a last set
races root against a second user on a bare image both can write.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    chain_files,
    define_domain,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    make_overlay,
    qemu_check,
    run_vshx,
    virsh,
    wait_for_block_job,
)
from test_real_host_definition import qemu_files, vshx_chain

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU

RUNS_ON_IMAGES = 48  # with the runs on real labs below: at least 50
LAYERS = ("base", "sn1", "sn2", "sn3", "sn4")


def build_chain(directory: Path) -> None:
    """base <- sn1 <- sn2 <- sn3 <- sn4, each layer with 1 MiB of its own data."""
    for old in directory.iterdir():
        old.unlink()
    below = None
    for number, name in enumerate(LAYERS):
        path = directory / f"{name}.qcow2"
        argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
        argv += ["-F", "qcow2", "-b", f"{below}.qcow2", str(path)] if below else [str(path), "16M"]
        subprocess.run(argv, check=True)
        write = f"write -P 0x{number + 1:x}{number + 1:x} {number * 2}M 1M"
        subprocess.run(["qemu-io", "-c", write, str(path)], check=True, capture_output=True)
        below = name


@dataclass
class Racer:
    words: list[str]
    proc: subprocess.Popen[str]
    user: str
    out: str = ""
    err: str = ""

    @property
    def command(self) -> str:
        return "vshx " + " ".join(self.words)


def start(words: list[str], uri: str = URI, user: User | None = None) -> Racer:
    argv = [sys.executable, "-m", "vshx", "-c", uri, *words]
    if user is None:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return Racer(words, proc, pwd.getpwuid(os.geteuid()).pw_name)
    proc = subprocess.Popen(  # setpriv execs: its pid is vshx's pid
        user.wrap(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    )
    return Racer(words, proc, user.name)


def race(first: Racer, second: Racer) -> tuple[Racer, Racer, bool]:
    """(winner, loser, whether the loser met the lock) after both ended."""
    for racer in (first, second):
        racer.out, racer.err = racer.proc.communicate()
    codes = sorted([first.proc.returncode, second.proc.returncode])
    assert codes == [0, 1], (first.err, second.err)
    winner, loser = (first, second) if first.proc.returncode == 0 else (second, first)
    assert loser.err.startswith("error: ") and "Traceback" not in loser.err, loser.err
    if "it holds the lock on this chain" in loser.err:
        named = (
            f"another vshx (pid {winner.proc.pid}) is running: {winner.command} "
            f"(user {winner.user})"
        )
        assert named in loser.err, (named, loser.err)
        assert "hint: wait until it has finished" in loser.err
        return winner, loser, True
    # it started only after the winner had finished: the chain it asked for is gone
    assert "is not a layer of this chain" in loser.err, loser.err
    return winner, loser, False


DEEP = ["--base", "sn1", "--top", "sn3"]  # sn2 and sn3 into sn1
SHALLOW = ["--top", "sn3", "--shallow"]  # sn3 into sn2


def expected(winner: Racer) -> list[str]:
    if "--shallow" in winner.words:
        return ["sn4.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    return ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]


def check_after(directory: Path, winner: Racer, seen: str, tmp: Path, deleted: bool) -> None:
    """The winner's chain, consistent and clean, same guest bytes, no lock file left."""
    chain = expected(winner)
    assert chain_files(directory / "sn4.qcow2") == chain
    for name in chain:
        qemu_check(directory / name)
    assert guest_hash(directory / "sn4.qcow2", tmp) == seen
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted(chain if deleted else [f"{n}.qcow2" for n in LAYERS]), left


@pytest.fixture
def image_domain(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A shut-off domain on a qemu-img chain in a directory of its own."""
    directory = tmp_path / "chain"
    directory.mkdir()
    name = f"{LAB_PREFIX}race-{os.getpid()}"
    define_domain(name, {"vda": directory / "sn4.qcow2"})
    yield name, directory
    subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)


def test_two_commits_with_different_bases_on_one_disk(
    image_domain: tuple[str, Path], tmp_path: Path
):
    name, directory = image_domain
    met = 0
    for run in range(RUNS_ON_IMAGES):
        build_chain(directory)
        seen = guest_hash(directory / "sn4.qcow2", tmp_path)
        deep = ["commit", name, "vda", *DEEP, "--delete"]
        shallow = ["commit", name, "vda", *SHALLOW, "--delete"]
        pair = (deep, shallow) if run % 2 else (shallow, deep)
        winner, _loser, locked = race(start(pair[0]), start(pair[1]))
        met += locked
        check_after(directory, winner, seen, tmp_path, deleted=True)
        assert run_vshx("chain", name, "vda").returncode == 0
    print(f"{met} of {RUNS_ON_IMAGES} losers met the winner's lock; the rest came after it")
    assert met >= RUNS_ON_IMAGES // 2  # two vshx started together do overlap


def test_two_commits_with_different_bases_on_a_real_lab(tmp_path: Path):
    for run in range(2):
        lab = make_lab(tmp_path, running=False, dirname=f"lab{run}")
        try:
            seen = guest_hash(lab.active, tmp_path)
            deep = ["commit", lab.name, "vda", *DEEP, "--delete"]
            shallow = ["commit", lab.name, "vda", *SHALLOW, "--delete"]
            winner, _loser, _locked = race(start(deep), start(shallow))
            assert chain_files(lab.active) == expected(winner)
            for layer in expected(winner):
                qemu_check(lab.dir / layer)
            assert guest_hash(lab.active, tmp_path) == seen
            recover = run_vshx("recover", lab.name, "vda")
            assert recover.returncode == 0 and "nothing to do" in recover.stdout, recover.stderr
            # the domain starts, and QEMU runs on the chain vshx reports, showing the same bytes
            assert vshx_chain(lab.name) == expected(winner)
            virsh("start", lab.name)
            lab.running = True
            assert qemu_files(lab.name) == expected(winner)
            assert lab.guest_hash(tmp_path) == seen
        finally:
            destroy_lab(lab)


class User:
    """A second, unprivileged user who runs vshx on images it owns."""

    def __init__(self, name: str, home: Path) -> None:
        self.name, self.home = name, home
        entry = pwd.getpwnam(name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def wrap(self, argv: list[str]) -> list[str]:
        env = [
            f"HOME={self.home}",
            f"XDG_STATE_HOME={self.home}/state",
            f"XDG_CACHE_HOME={self.home}/cache",
            "PATH=/usr/bin:/bin",
            f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}",
        ]
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--",
            "env",
            "-i",
            *env,
            *argv,
        ]


@pytest.fixture
def second_user() -> Iterator[User]:
    name = f"{LAB_PREFIX}u"[:32]
    made = subprocess.run(["id", name], capture_output=True).returncode != 0
    if made:
        subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    home = Path(tempfile.mkdtemp(prefix=f"{LAB_PREFIX}home-"))
    user = User(name, home)
    os.chmod(home, 0o755)
    os.chown(home, user.uid, user.gid)
    yield user
    shutil.rmtree(home, ignore_errors=True)
    if made:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.mark.root  # makes a second user
def test_root_and_a_second_user_race_on_one_image(second_user: User, tmp_path: Path):
    directory = second_user.home / "images"
    directory.mkdir()
    met = 0
    runs = 10
    for run in range(runs):
        build_chain(directory)
        for path in [directory, *directory.iterdir()]:
            os.chown(path, second_user.uid, second_user.gid)
        seen = guest_hash(directory / "sn4.qcow2", tmp_path)
        image = str(directory / "sn4.qcow2")
        as_root = start(["commit", image, *(DEEP if run % 2 else SHALLOW)])
        # the user's vshx needs no daemon of its own: its URI only lists (no) other domains
        as_user = start(
            ["commit", image, *(SHALLOW if run % 2 else DEEP)], "test:///default", second_user
        )
        winner, _loser, locked = race(as_root, as_user)
        met += locked
        check_after(directory, winner, seen, tmp_path, deleted=False)
    print(f"{met} of {runs} losers met the winner's lock; the rest came after it")
    assert met >= runs // 2


def test_rm_looks_again_right_before_unlinking(tmp_path: Path):
    """A user of a merged-away file that appears after planning (here: an overlay made on
    sn3 while the commit's block job runs) keeps that file: the rm step asks again."""
    lab = make_lab(tmp_path, fill=16)
    try:
        before = lab.guest_hash(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, "commit", lab.name, "vda", *DEEP]
            + ["--delete", "--bandwidth", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_block_job(lab, "Block Commit", proc)
        late = lab.dir / "late user.qcow2"
        make_overlay(late, "sn3.qcow2")
        virsh("blockjob", lab.name, "vda", "--bandwidth", "0")
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        assert (
            f"not deleting {lab.layer('sn3')}" in err or f"not deleting {lab.layer('sn2')}" in err
        )
        assert f"still used by image {late}" in err and "Traceback" not in err
        assert lab.layer("sn2").exists() and lab.layer("sn3").exists()
        assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
        assert chain_files(late) == ["late user.qcow2", "sn3.qcow2", "sn2.qcow2", "sn1.qcow2"] + [
            "base.qcow2"
        ]
        qemu_check(late)
        recover = run_vshx("recover", lab.name, "vda")
        assert recover.returncode == 0 and "nothing to do" in recover.stdout, recover.stderr
    finally:
        destroy_lab(lab)


@pytest.mark.root  # makes a second user
def test_no_lock_no_change_where_the_lock_file_cannot_be_made(second_user: User):
    """Images the user may write in a directory it may not: vshx refuses (fail closed)."""
    directory = second_user.home / "root-owned"
    directory.mkdir()
    build_chain(directory)
    for path in directory.iterdir():
        os.chown(path, second_user.uid, second_user.gid)
    before = file_state(directory)
    racer = start(["commit", str(directory / "sn4.qcow2"), *DEEP], "test:///default", second_user)
    _out, err = racer.proc.communicate()
    assert racer.proc.returncode == 1, err
    assert err.startswith("error: cannot take vshx's lock") and "Permission denied" in err
    assert "hint: vshx keeps its lock beside the images" in err
    assert file_state(directory) == before


def test_rebase_takes_the_chain_lock_too(tmp_path: Path):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        check=True,
    )
    holder = subprocess.Popen(  # another vshx holding the chain's lock, as a commit would
        [
            sys.executable,
            "-c",
            "import sys; from vshx.plans import lock; lock.take(sys.argv[1], 'vshx commit held');"
            " print('held', flush=True); sys.stdin.read()",
            str(top),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        before = file_state(tmp_path)
        refused = run_vshx("rebase", str(top), "--backing", "")
        assert refused.returncode == 1, refused.stderr
        assert f"another vshx (pid {holder.pid})" in refused.stderr
        assert "vshx commit held" in refused.stderr and "Traceback" not in refused.stderr
        assert file_state(tmp_path) == before
    finally:
        holder.communicate("")
    ran = run_vshx("rebase", str(top), "--backing", "")
    assert ran.returncode == 0, ran.stderr
