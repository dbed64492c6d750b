"""The one-writer lock covers the whole chain, not only the file named on the command line.

A tester's race: a vshx changing a domain's disk locked only the disk's active layer, and a
bare vshx naming a middle layer of that chain (``pull``, ``rebase``, ``commit``) locked only
that file, so both changed one chain at once.  Here the first vshx runs with a ``qemu-img``
that stops before it changes anything (``commit``, ``rebase``, ``convert``) until the test
lets it go: while it waits, holding its locks, the second vshx must be refused naming it,
and change nothing; then the first finishes as if alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    chain_files,
    define_domain,
    file_state,
    qemu_check,
    release_remote,
    run_vshx,
    virsh,
)
from sshd import Sshd
from test_one_writer import User, second_user, start

__all__ = ["second_user"]  # a fixture: imported for the tests that make a second user

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI (the domain cases) and QEMU

GATE = r"""#!/bin/sh
case "$1" in
  commit|rebase|convert)
    : > "$VSHX_TEST_GATE.reached"
    while [ ! -e "$VSHX_TEST_GATE.open" ]; do sleep 0.05; done ;;
esac
exec {real} "$@"
"""


def build(directory: Path, names: list[str]) -> None:
    """base <- names[0] <- names[1] ..., each layer with data of its own."""
    directory.mkdir(exist_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "base.qcow2"), "16M"],
        check=True,
    )
    below = "base"
    for number, name in enumerate(names):
        path = directory / f"{name}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
            + ["-b", f"{below}.qcow2", str(path)],
            check=True,
        )
        write = f"write -P 0x{number + 1:x}{number + 1:x} {number}M 1M"
        subprocess.run(["qemu-io", "-c", write, str(path)], check=True, capture_output=True)
        below = name


class Held:
    """A vshx stopped right before its first qemu-img change, holding its locks."""

    def __init__(self, tmp: Path, words: list[str]) -> None:
        bin_dir = tmp / "gate-bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "qemu-img"
        real = shutil.which("qemu-img")
        assert real is not None
        wrapper.write_text(GATE.format(real=real))
        wrapper.chmod(0o755)
        self.gate = tmp / "gate"
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
        env["VSHX_TEST_GATE"] = str(self.gate)
        self.words = words
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, *words],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        reached = Path(f"{self.gate}.reached")
        deadline = time.monotonic() + 120
        while not reached.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = self.proc.communicate(timeout=60)
                raise AssertionError(f"the first vshx never reached its change: {out}{err}")
            time.sleep(0.05)

    def finish(self) -> str:
        Path(f"{self.gate}.open").touch()
        out, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, out + err
        return out


def refused_by(held: Held, words: list[str], *directories: Path) -> str:
    """Run the second vshx while ``held`` waits: refused with error:/hint: naming the first's
    pid, and nothing in ``directories`` changed."""
    before = [file_state(directory) for directory in directories]
    second = run_vshx(*words)
    err = second.stderr
    assert second.returncode == 1, second.stdout + err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert f"another vshx (pid {held.proc.pid}) is running: vshx {' '.join(held.words)}" in err
    assert "it holds the lock on this chain" in err, err
    assert f"\nhint: wait until it has finished (or stop it: kill {held.proc.pid};" in err, err
    assert [file_state(directory) for directory in directories] == before
    return err


def no_lock_files(*directories: Path) -> None:
    for directory in directories:
        left = [p.name for p in directory.iterdir() if p.name.startswith(".vshx-")]
        assert left == [], left


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(["commit", "{d}/mid.qcow2"], id="commit-middle"),
        pytest.param(["pull", "{d}/mid.qcow2"], id="pull-middle"),
        pytest.param(["rebase", "{d}/mid.qcow2", "--backing", ""], id="rebase-middle"),
        pytest.param(["commit", "{d}/top.qcow2", "--base", "{d}/base.qcow2"], id="commit-top"),
    ],
)
def test_two_bare_commands_on_layers_of_one_chain(tmp_path: Path, second: list[str]) -> None:
    directory = tmp_path / "chain-lock"
    build(directory, ["mid", "top"])
    held = Held(tmp_path, ["commit", str(directory / "top.qcow2")])
    try:
        refused_by(held, [word.format(d=directory) for word in second], directory)
    finally:
        held.finish()
    assert chain_files(directory / "top.qcow2") == ["top.qcow2", "mid.qcow2", "base.qcow2"]
    for name in ("top", "mid", "base"):
        qemu_check(directory / f"{name}.qcow2")
    no_lock_files(directory)


def test_the_middle_first_keeps_a_command_on_the_top_out(tmp_path: Path) -> None:
    """Locked the other way round: the bare vshx on the middle layer holds the files below
    it too, and a vshx naming the top layer needs them."""
    directory = tmp_path / "chain-lock"
    build(directory, ["mid", "top"])
    held = Held(tmp_path, ["pull", str(directory / "mid.qcow2")])
    try:
        err = refused_by(held, ["commit", str(directory / "top.qcow2")], directory)
        assert f"({directory / 'mid.qcow2'}, a layer of {directory / 'top.qcow2'})" in err
    finally:
        held.finish()
    no_lock_files(directory)


def test_another_chain_in_the_same_directory_is_not_held(tmp_path: Path) -> None:
    directory = tmp_path / "chain-lock"
    build(directory, ["mid", "top"])
    other = tmp_path / "other-lock"
    build(other, ["one"])
    held = Held(tmp_path, ["commit", str(directory / "top.qcow2")])
    try:
        ran = run_vshx("pull", str(other / "one.qcow2"))
        assert ran.returncode == 0, ran.stderr
    finally:
        held.finish()
    no_lock_files(directory, other)


@pytest.fixture
def shut_off_domain(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A shut-off domain, vda on base <- a1 <- a2 <- a3, vdb on a chain of its own."""
    directory = tmp_path / "domain-lock"
    build(directory, ["a1", "a2", "a3"])
    build(directory / "b", ["b1"])
    name = f"{LAB_PREFIX}lock-{os.getpid()}"
    define_domain(name, {"vda": directory / "a3.qcow2", "vdb": directory / "b/b1.qcow2"})
    yield name, directory
    subprocess.run(
        ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
    )


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(["pull", "{d}/a2.qcow2"], id="pull-middle"),
        pytest.param(["rebase", "{d}/a2.qcow2", "--backing", "{d}/base.qcow2"], id="rebase-middle"),
        pytest.param(["commit", "{d}/a1.qcow2"], id="commit-lower"),
    ],
)
def test_a_domain_command_keeps_bare_commands_on_its_layers_out(
    shut_off_domain: tuple[str, Path], tmp_path: Path, second: list[str]
) -> None:
    name, directory = shut_off_domain
    held = Held(tmp_path, ["commit", name, "vda", "--base", "a1", "--top", "a2"])
    try:
        refused_by(held, [word.format(d=directory) for word in second], directory)
    finally:
        held.finish()
    assert chain_files(directory / "a3.qcow2") == ["a3.qcow2", "a1.qcow2", "base.qcow2"]
    no_lock_files(directory)
    assert "nothing to do" in run_vshx("recover", name, "vda").stdout


def test_a_bare_command_on_a_middle_layer_keeps_the_domain_command_out(
    shut_off_domain: tuple[str, Path], tmp_path: Path
) -> None:
    name, directory = shut_off_domain
    held = Held(tmp_path, ["rebase", str(directory / "a2.qcow2"), "--backing", ""])
    try:
        err = refused_by(held, ["commit", name, "vda", "--base", "a1", "--top", "a2"], directory)
        # the bare rebase of a shut-off domain's layer is that domain's rebase (it locks the
        # disk's chain from its active layer): whichever file the second meets first, it waits
        assert "vshx rebase" in err, err
    finally:
        held.finish()
    assert chain_files(directory / "a3.qcow2") == ["a3.qcow2", "a2.qcow2"]
    no_lock_files(directory)


@pytest.mark.root  # makes a second user
def test_a_read_only_base_of_another_user_is_passed_over(second_user: User) -> None:
    """A user's overlays on a base it may read but not write, in a directory it may not
    write (a golden image of root's): the base's lock cannot be made there, and this vshx
    cannot change the base either, so the user's commit of its own layers still runs."""
    golden = second_user.home / "golden-lock"  # root's, in a directory the user can reach
    golden.mkdir()
    golden.chmod(0o755)
    build(golden, [])
    (golden / "base.qcow2").chmod(0o644)
    mine = second_user.home / "overlays-lock"
    mine.mkdir()
    below = str(golden / "base.qcow2")
    for name in ("mid", "top"):
        path = mine / f"{name}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", below, str(path)],
            check=True,
        )
        below = str(path)
    for path in [mine, *mine.iterdir()]:
        os.chown(path, second_user.uid, second_user.gid)
    golden_before = file_state(golden)
    racer = start(["commit", str(mine / "top.qcow2")], "test:///default", second_user)
    out, err = racer.proc.communicate()
    assert racer.proc.returncode == 0, out + err
    assert chain_files(mine / "top.qcow2") == ["top.qcow2", "mid.qcow2", "base.qcow2"]
    assert file_state(golden) == golden_before
    no_lock_files(golden, mine)


@pytest.mark.root  # the run's loopback sshd, as tests/test_remote.py uses it
def test_a_vshx_over_ssh_holds_every_layer_of_the_chain(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over ssh the lock of every layer is the file a vshx on that host takes: a vshx there
    naming the middle layer is refused while the remote one holds the top's chain."""
    from vshx.plans import lock
    from vshx.storage import host
    from vshx.storage.qcow2 import chain_files as header_chain

    directory = tmp_path / "chain-lock"
    build(directory, ["mid", "top"])
    top = str(directory / "top.qcow2")
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    remote = host.select(sshd.uri())
    try:
        lock.take(top, "vshx commit over ssh")
        assert lock.take_layers(top, header_chain(top), "vshx commit over ssh")
        held = [p for p in os.listdir(directory) if p.startswith(".vshx-")]
        assert len(held) == 3, held
        before = file_state(directory)
        there = run_vshx("pull", str(directory / "mid.qcow2"))
        assert there.returncode == 1 and "it holds the lock on this chain" in there.stderr
        assert "vshx commit over ssh" in there.stderr, there.stderr
        assert file_state(directory) == before
    finally:
        release_remote(remote)
    no_lock_files(directory)
    assert run_vshx("pull", str(directory / "mid.qcow2")).returncode == 0


@pytest.fixture
def snapshotted_domain(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The tester's domain: shut off, two disks, three disk-only snapshots s1..s3 (vda's
    files a1..a3 over base.qcow2, vdb's b1..b3 over b/base.qcow2), data in each."""
    directory = tmp_path / "snapshot-lock"
    (directory / "b").mkdir(parents=True)
    for base in (directory / "base.qcow2", directory / "b/base.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    name = f"{LAB_PREFIX}lock-snap-{os.getpid()}"
    define_domain(name, {"vda": directory / "base.qcow2", "vdb": directory / "b/base.qcow2"})
    try:
        for number in (1, 2, 3):
            virsh(
                "snapshot-create-as",
                name,
                f"s{number}",
                "--disk-only",
                "--diskspec",
                f"vda,snapshot=external,file={directory}/a{number}.qcow2",
                "--diskspec",
                f"vdb,snapshot=external,file={directory}/b/b{number}.qcow2",
            )
            write = f"write -P 0x{number}{number} {number}M 1M"
            layer = directory / f"a{number}.qcow2"
            subprocess.run(["qemu-io", "-c", write, str(layer)], check=True, capture_output=True)
        yield name, directory
    finally:
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(["commit", "{d}/a2.qcow2", "--base", "{d}/base.qcow2"], id="commit-a2"),
        pytest.param(["pull", "{d}/a2.qcow2"], id="pull-a2"),
        pytest.param(["rebase", "{d}/a1.qcow2", "--backing", ""], id="rebase-a1"),
    ],
)
def test_snapshot_delete_keeps_bare_commands_on_its_chain_out(
    snapshotted_domain: tuple[str, Path], tmp_path: Path, second: list[str]
) -> None:
    """The tester's repro: snapshot-delete of s2 held before its qemu-img step, a bare
    command on a layer of vda's chain refused meanwhile; s1's state in base.qcow2 kept."""
    name, directory = snapshotted_domain
    held = Held(tmp_path, ["snapshot-delete", name, "s2"])
    try:
        refused_by(held, [word.format(d=directory) for word in second], directory)
    finally:
        held.finish()
    no_lock_files(directory, directory / "b")
    assert "s2" not in virsh("snapshot-list", name, "--name").stdout.split()
    # s1's moment is base.qcow2 as it was: no data of a later layer in it
    probe = subprocess.run(
        ["qemu-io", "-c", "read -P 0 1M 3M", str(directory / "base.qcow2")],
        capture_output=True,
        text=True,
    )
    assert "Pattern verification failed" not in probe.stdout + probe.stderr, probe.stdout


def test_two_chains_on_one_base_share_its_lock(tmp_path: Path) -> None:
    """Linked clones: a commit down into x1 of base <- x1 <- x2 and one of y1 over the same
    base share base.qcow2's lock, one change at a time (the second may be a commit into the
    base, which changes what every chain on it shows)."""
    directory = tmp_path / "shared-lock"
    build(directory, ["x1", "x2"])
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
        + ["-b", "base.qcow2", str(directory / "y1.qcow2")],
        check=True,
    )
    held = Held(tmp_path, ["commit", str(directory / "x2.qcow2")])
    try:
        err = refused_by(held, ["commit", str(directory / "y1.qcow2")], directory)
        assert f"({directory / 'base.qcow2'}, a layer of {directory / 'y1.qcow2'})" in err
    finally:
        held.finish()
    no_lock_files(directory)
