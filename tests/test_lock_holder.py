"""The chain lock's refusal names its holder only as far as the kernel confirms it.

The lock files are world-writable (root and users must exclude each other through one file),
so the holder's note in one is a claim anyone can forge: a user wrote a note naming an
innocent process, and the refused vshx told the admin to ``kill`` it.  The pid is now checked
against ``/proc/locks`` and the claimed process's open files (vshx.storage.kernel_locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import lock_holder, release_remote, run_vshx
from sshd import Sshd
from test_one_writer import User, second_user

from vshx.errors import VshxError
from vshx.plans import lock
from vshx.plans.lock import Kernel, Note, parse_note, refusal
from vshx.storage import kernel_locks
from vshx.storage.kernel_locks import flock_pids, locks_on, mount_device

__all__ = ["second_user"]  # a fixture: imported for the test that makes a second user

FILE = (0xFD, 0x01, 5678)

LOCKS = """\
1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
1: -> FLOCK  ADVISORY  WRITE 1299 fd:01:5678 0 EOF
2: POSIX  ADVISORY  WRITE 2222 fd:01:5678 0 EOF
3: OFDLCK ADVISORY  WRITE -1 fd:01:5678 0 EOF
4: FLOCK  ADVISORY  WRITE 3333 fd:02:5678 0 EOF
5: FLOCK  ADVISORY  READ  4444 fd:01:56789 0 EOF
6: FLOCK  ADVISORY  READ  0 fd:01:5678 0 EOF
7: FLOCK  ADVISORY  READ  5555 103:1a:5678 0 EOF
8: LEASE  ACTIVE    READ  6666 fd:01:5678 0 EOF
garbage
"""


def test_proc_locks_lists_the_flock_holders_of_that_file_only():
    """Waiters, other lock kinds, other files and pids the kernel cannot name are left out;
    the device numbers are hex."""
    assert flock_pids(LOCKS, FILE) == [1234]
    assert flock_pids(LOCKS, (0x103, 0x1A, 5678)) == [5555]
    assert flock_pids(LOCKS, (0xFD, 0x01, 56789)) == [4444]
    assert flock_pids(LOCKS, (253, 1, 1)) == [] and flock_pids("", FILE) == []
    shared = "1: FLOCK ADVISORY READ 7 08:01:9 0 EOF\n2: FLOCK ADVISORY READ 8 08:01:9 0 EOF\n"
    assert flock_pids(shared, (8, 1, 9)) == [7, 8]


def test_fdinfo_lock_lines_and_the_mount_device():
    fdinfo = "pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t5678\n"
    held = fdinfo + "lock:\t1: FLOCK  ADVISORY  WRITE 14445 fd:01:5678 0 EOF\n"
    assert locks_on(held, FILE) and not locks_on(fdinfo, FILE)
    assert not locks_on(held, (0xFD, 0x01, 1))
    assert locks_on(held.replace("14445", "0"), FILE)  # whoever took it: this file holds it
    assert kernel_locks.fdinfo_field(fdinfo, "mnt_id") == "27"
    mountinfo = (
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "27 22 0:45 /@ /srv rw shared:2 - btrfs /dev/vdb rw\n"
    )
    assert mount_device(mountinfo, 27) == (0, 45) and mount_device(mountinfo, 9) is None


def test_a_lock_of_this_process_is_found_where_the_kernel_lists_it(tmp_path: Path):
    """kernel_file names a file as /proc/locks and fdinfo do, on this machine's file system."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        file = kernel_locks.kernel_file(fd)
        table = kernel_locks.lock_table()
        assert table is not None and os.getpid() not in flock_pids(table, file)
        assert kernel_locks.holds_flock(os.getpid(), file) is False
        fcntl.flock(fd, fcntl.LOCK_EX)
        table = kernel_locks.lock_table()
        assert table is not None and flock_pids(table, file) == [os.getpid()]
        assert kernel_locks.holds_flock(os.getpid(), file) is True
    finally:
        os.close(fd)


def test_notes_that_are_not_notes():
    assert parse_note('{"pid": 12, "user": "u", "command": "c", "time": 1}') == Note(12, "u", "c")
    for text in ("", "{", "[1]", '{"pid": "x", "user": "u", "command": "c"}', '{"pid": 1}'):
        assert parse_note(text) is None


FORGED = Note(4242, "root", "vshx commit innocent")


@pytest.mark.parametrize(
    ("kernel", "named", "kill"),
    [
        (Kernel([4242], True), "another vshx (pid 4242) is running", True),
        (Kernel([1111], True), "another vshx (pid 4242) is running", True),  # a shell's fd 9
        (Kernel([4242], None), "another vshx (pid 4242) is running", False),  # another user's
        (Kernel([1111], False), "another process (pid 1111, as the kernel reports it)", False),
        (Kernel([4242], False), "another process (pid 4242, as the kernel reports it)", False),
        (Kernel([1111], None), "another process (pid 1111, as the kernel reports it)", False),
        (Kernel([], False), "the kernel names no pid for it", False),
        (Kernel(None, None), "which one cannot be verified (/proc/locks cannot be read)", False),
    ],
)
def test_refusal_names_a_pid_only_as_far_as_the_kernel_confirms_it(
    kernel: Kernel, named: str, kill: bool
):
    error = refusal("/i/top.qcow2", FORGED, kernel)
    text = f"{error.message}\nhint: {error.hint}"
    assert named in error.message and "holds the lock on this chain (/i/top.qcow2)" in text
    assert ("kill 4242" in text) is kill and ("kill" in text) is kill
    verified = named.startswith("another vshx")
    assert ("vshx commit innocent" in text) is verified  # an unverified note's words not shown
    if not verified:
        assert "the note in its lock file names pid 4242" in error.message
        assert "not to be trusted" in error.message


def test_refusal_without_a_note_and_of_a_holder_that_handed_its_file_on():
    error = refusal("/i/top.qcow2", None, Kernel([77, 78], False, (77,)))
    assert error.message.startswith("another process (pid 77, 78, as the kernel reports it")
    assert "77 no longer running" in error.message and "it wrote no note" in error.message
    assert error.hint is not None and error.hint.endswith("ps -o pid,user,args -p 77,78")
    remote = refusal("/i/top.qcow2", FORGED, Kernel([4242], True), host="h1")
    assert "another vshx (pid 4242 on h1) is running" in remote.message
    assert remote.hint is not None and "kill" not in remote.hint


def test_control_characters_of_a_note_are_shown_escaped():
    note = Note(5, "u\x1b[2J", "vshx commit\nhint: kill 1")
    error = refusal("/i/top.qcow2", note, Kernel([5], True))
    assert "\x1b" not in error.message and "\n" not in error.message


# real processes: a holder, a forger, and the refused vshx


FORGE = (  # path pid: a forged note, written as any user can
    "import json, os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NOFOLLOW);"
    " note = json.dumps({'pid': int(sys.argv[2]), 'user': 'root',"
    " 'command': 'vshx commit innocent'}).encode() + b'\\n';"
    " os.pwrite(fd, note, 0); os.ftruncate(fd, len(note))"
)


def chain(directory: Path) -> Path:
    base, top = directory / "base.qcow2", directory / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        check=True,
    )
    return top


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A vshx-like process holding the lock of a chain's top (lock.take, as a commit does)."""
    top = chain(tmp_path)
    proc = lock_holder(top)
    yield proc, top
    proc.communicate("")


@pytest.fixture
def innocent() -> Iterator[int]:
    """A process that has nothing to do with vshx, to be named in a forged note."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def forge(top: Path, pid: int) -> None:
    """Write a note naming ``pid`` into the lock file of ``top``'s chain, as any user can."""
    path, _key = lock.lock_path(str(top))
    subprocess.run([sys.executable, "-c", FORGE, path, str(pid)], check=True)


def refused(top: Path) -> str:
    """A vshx that changes ``top``'s chain: refused by the lock; its stderr."""
    before = top.read_bytes()
    done = run_vshx("rebase", str(top), "--backing", "")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert top.read_bytes() == before
    return done.stderr


def test_a_holder_that_lets_go_while_it_is_looked_up_is_no_reason_to_refuse(
    holder: tuple[subprocess.Popen[str], Path], monkeypatch: pytest.MonkeyPatch
):
    """The kernel is asked after the note is read: a holder gone by then has let the lock go
    (the race of two vshx, the winner done at once), and the lock is tried once more."""
    proc, top = holder
    looked_up = lock._refused

    def holder_ends_meanwhile(fd: int, image: str) -> VshxError:
        error = looked_up(fd, image)
        proc.communicate("")
        return error

    monkeypatch.setattr(lock, "_refused", holder_ends_meanwhile)
    try:
        assert lock.take(str(top), "vshx after it") == lock.lock_path(str(top))[1]
        note = parse_note(Path(lock.lock_path(str(top))[0]).read_text())
        assert note is not None and note.pid == os.getpid()
    finally:
        lock.release_all()


@pytest.mark.libvirt
def test_the_real_holder_is_named_with_its_hint(holder: tuple[subprocess.Popen[str], Path]):
    proc, top = holder
    err = refused(top)
    assert f"error: another vshx (pid {proc.pid}) is running: vshx commit held" in err, err
    assert f"it holds the lock on this chain ({top})" in err
    assert f"\nhint: wait until it has finished (or stop it: kill {proc.pid};" in err, err


@pytest.mark.libvirt
def test_a_forged_note_is_not_believed(holder: tuple[subprocess.Popen[str], Path], innocent: int):
    """The note names an innocent process: the refusal names the real holder, as the kernel
    reports it, says the note is not to be trusted, and tells no one to kill anything."""
    proc, top = holder
    forge(top, innocent)
    err = refused(top)
    assert f"error: another process (pid {proc.pid}, as the kernel reports it) holds" in err, err
    assert f"names pid {innocent}, which does not hold it" in err, err
    assert "not to be trusted" in err and "vshx commit innocent" not in err
    assert f"kill {innocent}" not in err and "kill" not in err, err
    assert f"ps -o pid,user,args -p {proc.pid}" in err


@pytest.mark.libvirt
def test_a_note_left_by_a_holder_that_ended_is_not_believed(tmp_path: Path, innocent: int):
    """A process takes the flock and hands the open file to a child before it ends:
    /proc/locks still shows the ended taker's pid (which the system may give to another
    process), so that pid in the note is not enough; the child's open file holds it."""
    top = chain(tmp_path)
    taker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from vshx.plans import lock; lock.take(sys.argv[1], 'vshx x');"
            " fd = next(iter(lock._held.values())).fd; os.set_inheritable(fd, True);"
            " child = os.fork()\n"
            "if child == 0:\n"
            "    os.execvp('sleep', ['sleep', '600'])\n"
            "print(child, flush=True); os._exit(0)",
            str(top),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert taker.stdout is not None
    child = int(taker.stdout.readline())
    taker.wait()
    try:
        err = refused(top)
        assert f"another process (pid {taker.pid}, as the kernel reports it; {taker.pid} no" in err
        assert f"names pid {taker.pid}, which does not hold it" in err
        assert "kill" not in err, err
    finally:
        os.kill(child, 9)


@pytest.mark.libvirt
def test_a_remote_vshxs_holder_shell_on_this_host_is_named(tmp_path: Path):
    """The shell that holds a lock for a vshx over ssh (ssh_host.LOCK) holds it through fd 9,
    taken by a `flock` process that has ended: it is confirmed by its open files."""
    from vshx.storage.ssh_host import LOCK

    top = chain(tmp_path)
    path, _key = lock.lock_path(str(top))
    argv = ["sh", "-c", LOCK, "sh", path, '"them"', '"vshx commit over ssh"', "0"]
    shell = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert shell.stdout is not None and shell.stdout.readline().startswith(b"locked")
    try:
        err = refused(top)
        named = f"another vshx (pid {shell.pid}) is running: vshx commit over ssh (user them)"
        assert named in err, err
        assert f"kill {shell.pid};" in err
    finally:
        shell.communicate(b"")


@pytest.mark.libvirt
@pytest.mark.root  # makes a second user
def test_a_note_forged_by_another_user_is_not_believed(second_user: User, innocent: int):
    """An unprivileged user writes into root's lock file (mode 0666, as it must be): neither
    root's vshx nor that user's own is told to kill the process the note names."""
    directory = second_user.home / "images"
    directory.mkdir()
    top = chain(directory)
    for path in [directory, *directory.iterdir()]:
        os.chown(path, second_user.uid, second_user.gid)
    proc = lock_holder(top)
    try:
        path, _key = lock.lock_path(str(top))
        forger = [sys.executable, "-c", FORGE, path, str(innocent)]
        written = subprocess.run(second_user.wrap(forger), cwd="/")
        assert written.returncode == 0 and str(innocent) in Path(path).read_text()
        err = refused(top)
        assert f"another process (pid {proc.pid}, as the kernel reports it)" in err, err
        assert "kill" not in err, err
        argv = [sys.executable, "-m", "vshx", "-c", "test:///default", "rebase", str(top)]
        theirs = subprocess.run(
            second_user.wrap([*argv, "--backing", ""]), capture_output=True, text=True, cwd="/"
        )
        assert theirs.returncode == 1 and theirs.stderr.startswith("error: "), theirs.stderr
        assert f"another process (pid {proc.pid}, as the kernel reports it)" in theirs.stderr
        assert "kill" not in theirs.stderr, theirs.stderr
        # the real holder's own note, met by that user: named (its open files are root's, so
        # only /proc/locks confirms it), and no kill, which only root could do
        Path(path).write_text(json.dumps({"pid": proc.pid, "user": "root", "command": "c"}))
        theirs = subprocess.run(
            second_user.wrap([*argv, "--backing", ""]), capture_output=True, text=True, cwd="/"
        )
        assert f"another vshx (pid {proc.pid}) is running: c (user root)" in theirs.stderr
        assert "kill" not in theirs.stderr, theirs.stderr
    finally:
        proc.communicate("")


# the lock on a remote host: the shell there (ssh_host.LOCK) reports what its kernel says


def lock_shell(path: str, command: str = "vshx commit over ssh") -> subprocess.Popen[bytes]:
    """ssh_host.LOCK run here, without ssh, as the shell of a vshx over ssh runs it there."""
    from vshx.storage.ssh_host import LOCK

    argv = ["sh", "-c", LOCK, "sh", path, '"them"', json.dumps(command), "0"]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def busy_answer(path: str) -> tuple[Note | None, str]:
    """What a second holder shell answers: (the note, the kernel's report)."""
    second = lock_shell(path, "second")
    out, err = second.communicate(b"")
    first, _, report = out.decode().partition("\n")
    assert first.startswith("busy "), out + err
    return parse_note(first[len("busy ") :]), report


def test_a_remote_hosts_kernel_report_confirms_the_real_holder_only(tmp_path: Path, innocent: int):
    top = chain(tmp_path)
    path, _key = lock.lock_path(str(top))
    holder = lock_shell(path)
    assert holder.stdout is not None and holder.stdout.readline().startswith(b"locked")
    try:
        note, report = busy_answer(path)
        assert note == Note(holder.pid, "them", "vshx commit over ssh")
        kernel = lock.remote_kernel(report, note)
        assert kernel.owns is True and kernel.pids, report  # the pid of its ended `flock`
        error = refusal(str(top), note, kernel, "h1")
        assert f"another vshx (pid {holder.pid} on h1) is running: vshx commit over ssh" in (
            error.message
        )
        forge(top, innocent)
        note, report = busy_answer(path)
        assert note is not None and note.pid == innocent
        kernel = lock.remote_kernel(report, note)
        assert kernel.owns is False and innocent not in (kernel.pids or []), report
        error = refusal(str(top), note, kernel, "h1")
        text = f"{error.message}\nhint: {error.hint}"
        assert error.message.startswith(f"another process (pid {kernel.pids[0]} on h1, as the")
        assert f"names pid {innocent}, which does not hold it" in text and "kill" not in text
    finally:
        holder.communicate(b"")


def test_a_remote_report_that_says_nothing_verifies_nothing():
    note = Note(9, "u", "c")
    assert lock.remote_kernel("", note) == Kernel(None, None)
    report = "self mnt_id:\t27\nself ino:\t5678\nmount 27 1 253:1 / / rw - ext4 /dev/x rw\n"
    assert lock.remote_kernel(report, note) == Kernel(None, None)  # no table: unreadable
    listed = report + "table\nlocks 1: FLOCK  ADVISORY  WRITE 9 fd:01:5678 0 EOF\n"
    assert lock.remote_kernel(listed, note) == Kernel([9], None)
    held = listed + "holder 8\nfdlock lock:\t1: FLOCK  ADVISORY  WRITE 9 fd:01:5678 0 EOF\n"
    assert lock.remote_kernel(held, note) == Kernel([9], None)  # another pid's files
    held = held.replace("holder 8", "holder 9")
    assert lock.remote_kernel(held, note) == Kernel([9], True)
    assert lock.remote_kernel(listed + "gone 9\n", note) == Kernel([9], False)


@pytest.mark.libvirt
@pytest.mark.root  # the run's loopback sshd, as tests/test_remote.py uses it
def test_a_vshx_over_ssh_does_not_believe_a_forged_note_there(
    sshd: Sshd,
    holder: tuple[subprocess.Popen[str], Path],
    innocent: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vshx.errors import VshxError
    from vshx.storage import host

    proc, top = holder
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    remote = host.select(sshd.uri())
    try:
        with pytest.raises(VshxError) as real:
            lock.take(str(top), "vshx commit over ssh")
        assert f"another vshx (pid {proc.pid} on " in real.value.message
        assert "vshx commit held" in real.value.message
        forge(top, innocent)
        with pytest.raises(VshxError) as forged:
            lock.take(str(top), "vshx commit over ssh")
        text = f"{forged.value.message}\nhint: {forged.value.hint}"
        assert f"another process (pid {proc.pid} on " in text and "as the kernel reports" in text
        assert f"names pid {innocent}, which does not hold it" in text and "kill" not in text
    finally:
        release_remote(remote)
