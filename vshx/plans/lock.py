"""One writer at a time: a lock per chain that every vshx on this host sees, whoever runs it.

A changing command locks the chain it changes before it plans: ``flock(LOCK_EX | LOCK_NB)``
on a lock file beside the images, in the directory of the chain's active layer (or bare
image; symlinks resolved), named by that file's identity (``.vshx-DEV-INO.lock``), and then
the same lock of every file below it (``take_layers``: its layers and data files, each in
its own directory).  Every name of a file (a symlink, a bind mount, ``..``) meets the same
lock; two commits with different ``--base`` on one chain exclude each other, and so do a
command on a domain's disk and a bare command on any layer of that disk's chain (a bare
vshx names one file of a chain, which may be a middle layer).  Two chains that share a base
(linked clones) share its lock too: one at a time changes either.  The lock goes with the
process: a killed vshx holds nothing.  The loser is refused with the holder's pid, user and command,
which the holder writes into the file (its note).

That note is only a claim: the file is writable by every user (below), so anyone can write a
note naming any process.  The loser believes it only as far as the kernel confirms it
(vshx.storage.kernel_locks): a note's pid is named as the holder where that process holds the
flock now (its open files show the lock: it is this user's, or this user is root), and only
then does the hint say ``kill`` it; where only ``/proc/locks`` lists that pid as the taker
(another user's process, whose open files this one cannot read), it is named without a
``kill``.  Otherwise the refusal names the pid the kernel reports, if any, and says the note
is not to be trusted.

Safety of the file itself: opened with ``O_NOFOLLOW`` (a planted symlink is refused, never
followed), refused unless it is a small regular file with one link (a planted hard link to
another file is never truncated), made mode 0666 when vshx creates it so that a vshx of
another user (root and a user, a run over ssh) can open, lock and sign it.

The file is removed when the holder lets go (unlink, then unlock): a dot-file per image
would otherwise be left in every image directory.  Removing a lock file races unless every
taker checks, once it holds the lock, that the path still names the file it locked, and
takes it again if not; every taker here does, so at any moment at most one vshx holds the
lock that the path names.  A vshx killed while holding it leaves the file behind; the next
taker locks and reuses it.

Where the lock file cannot be made (a directory this user cannot write), the command is
refused: a lock kept anywhere else (``/run/lock``, ``$XDG_RUNTIME_DIR``) would be seen only
by the vshx that chose that place, and two writers would pass each other.  A device (LVM,
iSCSI) as active layer keeps its lock in ``/run/lock``, where every vshx that can open a
device (root) looks.

On a ``qemu+ssh://`` URI the lock is the same file on that host, locked the same way by a shell
there (vshx.storage.ssh_host ``hold_lock``) for as long as this vshx runs: a vshx on that host
and one over ssh exclude each other.  Refused there, that shell reports what the host's
kernel says of the holder, checked as above (``remote_kernel``; never a ``kill`` hint).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import threading
import time
from stat import S_ISBLK, S_ISREG
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.plans import overlap
from vshx.spec.render import printable
from vshx.storage import host as files
from vshx.storage import kernel_locks
from vshx.storage.identity import FileKey, identity

if TYPE_CHECKING:
    import subprocess

DEVICE_LOCK_DIR = "/run/lock"
MAX_SIZE = 65536  # a holder's note is a few hundred bytes: anything bigger is not ours


class Held:
    """A lock this process holds, and how often it was taken (a second load re-enters)."""

    __slots__ = ("path", "fd", "count", "remote", "owner")

    def __init__(self, path: str, fd: int, remote: subprocess.Popen[bytes] | None = None) -> None:
        self.path = path
        self.fd = fd  # -1 for a lock held on a remote host by ``remote``
        self.count = 1
        self.remote = remote
        self.owner = threading.get_ident()  # the thread (a batch line) it serves


_held: dict[FileKey, Held] = {}  # this process's locks: a second load of one chain re-enters


def lock_path(image: str) -> tuple[str, FileKey]:
    """Where the lock of the chain whose active layer (or bare image) is ``image`` lives."""
    key = identity(image)
    if isinstance(key, str):
        raise VshxError(f"cannot lock {image}: it does not exist", "check the path")
    real = files.realpath(image)
    device = S_ISBLK(files.stat(real).st_mode)
    directory = DEVICE_LOCK_DIR if device else os.path.dirname(real)
    prefix = "dev" if key[0] == -1 else str(key[0])
    return os.path.join(directory, f".vshx-{prefix}-{key[1]}.lock"), key


@functools.cache  # one passwd lookup per process, not one per layer locked (~0.5 ms each)
def user_name() -> str:
    """This process's user, by name (its uid where the name is unknown)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _note(command: str) -> bytes:
    note = {"pid": os.getpid(), "user": user_name(), "command": command, "time": int(time.time())}
    return (json.dumps(note) + "\n").encode()


class Note(NamedTuple):
    """What a holder wrote into the lock file: a claim only, since any user can write it."""

    pid: int
    user: str
    command: str


def parse_note(text: str) -> Note | None:
    """The note in ``text``; None when it is not one."""
    try:
        note = json.loads(text)
        return Note(int(note["pid"]), str(note["user"]), str(note["command"]))
    except (ValueError, KeyError, TypeError, OverflowError):
        return None


def _read_note(fd: int) -> Note | None:
    """The note in the lock file, read again for a moment while there is none (its holder
    may be between its lock and its note)."""
    for _ in range(100):
        try:
            note = parse_note(os.pread(fd, MAX_SIZE, 0).decode("utf-8", "replace"))
        except OSError:
            note = None
        if note is not None:
            return note
        time.sleep(0.01)
    return None


class Kernel(NamedTuple):
    """What the kernel says of a lock held by another process (vshx.storage.kernel_locks).

    ``pids``: the pids that ``/proc/locks`` shows holding it (None: it cannot be read);
    ``owns``: whether the note's pid holds it now, by its fdinfo (None: its files cannot be
    read); ``ended``: those of ``pids`` that no longer run (they handed the file on)."""

    pids: list[int] | None
    owns: bool | None
    ended: tuple[int, ...] = ()


def _kernel(fd: int, note: Note | None) -> Kernel:
    """What the kernel says of the lock on the file open on ``fd``."""
    file = kernel_locks.kernel_file(fd)
    table = kernel_locks.lock_table()
    pids = None if table is None else kernel_locks.flock_pids(table, file)
    owns = False if note is None else kernel_locks.holds_flock(note.pid, file)
    return Kernel(pids, owns, tuple(pid for pid in pids or [] if not _runs(pid)))


def remote_kernel(report: str, note: Note | None) -> Kernel:
    """What a remote host's kernel says of the lock, from the lines that ssh_host ``LOCK``
    prints after ``busy``; the note's pid is looked at only where those lines name it."""
    tagged: dict[str, list[str]] = {}
    for line in report.splitlines():
        tag, _, rest = line.partition(" ")
        tagged.setdefault(tag, []).append(rest)
    mine = "\n".join(tagged.get("self", []))
    mount, inode = kernel_locks.fdinfo_field(mine, "mnt_id"), kernel_locks.fdinfo_field(mine, "ino")
    if mount is None or inode is None or not (mount + inode).isdigit():
        return Kernel(None, None)
    device = kernel_locks.mount_device("\n".join(tagged.get("mount", [])), int(mount))
    if device is None:
        return Kernel(None, None)
    file = (*device, int(inode))
    table = "\n".join(tagged.get("locks", []))
    pids = kernel_locks.flock_pids(table, file) if "table" in tagged else None
    owns: bool | None = None
    if note is not None and tagged.get("holder") == [str(note.pid)]:
        owns = kernel_locks.locks_on("\n".join(tagged.get("fdlock", [])), file)
    elif note is not None and tagged.get("gone") == [str(note.pid)]:
        owns = False
    return Kernel(pids, owns)


def _refused(fd: int, image: str) -> VshxError:
    """The refusal of the lock on the file open on ``fd``, which another process holds."""
    note = _read_note(fd)
    return refusal(image, note, _kernel(fd, note))


def _runs(pid: int) -> bool:
    if pid <= 0:
        return False  # kill(0) and kill(-1) would mean process groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # another user's: it runs
    return True


def refusal(image: str, note: Note | None, kernel: Kernel, host: str | None = None) -> VshxError:
    """The refusal of a lock held by another process, naming it as far as the kernel confirms
    it (never a pid from the note alone, and a ``kill`` only for a pid whose open files show
    the lock: where it is this user's or this user is root).  ``host``: the lock is on that
    host (a remote lock: ssh_host ``LOCK``)."""
    there = f" on {host}" if host else ""
    held = f"holds the lock on this chain ({image})"
    listed = note is not None and kernel.owns is None and note.pid in (kernel.pids or [])
    if note is not None and (kernel.owns or listed):
        stop = f" (or stop it: kill {note.pid}; then vshx recover)"
        return VshxError(
            f"another vshx (pid {note.pid}{there}) is running: {printable(note.command)} "
            f"(user {printable(note.user)}); it {held}",
            f"wait until it has finished{stop if kernel.owns and not host else ''}, then run "
            "the command again (see: vshx jobs)",
        )
    return _unverified(held, note, kernel, there)


def _unverified(held: str, note: Note | None, kernel: Kernel, there: str) -> VshxError:
    """``refusal`` where the note is missing or not confirmed: the kernel's pids, no ``kill``."""
    wait = "wait until it has finished, then run the command again (see: vshx jobs)"
    if note is None:
        claim = "it wrote no note"
    else:
        doubt = "does not hold it" if kernel.pids else "cannot be verified"
        claim = (
            f"the note in its lock file names pid {note.pid}, which {doubt}: that note is not "
            "to be trusted (any user can write the file)"
        )
    if kernel.pids is None:
        who = f"another process{there} {held}, and which one cannot be verified"
        return VshxError(f"{who} (/proc/locks cannot be read); {claim}", wait)
    if not kernel.pids:
        who = f"another process{there} {held}, and the kernel names no pid for it"
        why = "it has just let go, or runs in another pid namespace"
        return VshxError(f"{who} ({why}); {claim}", wait)
    pids = ", ".join(str(pid) for pid in kernel.pids)
    ended = ""
    if kernel.ended:
        gone = ", ".join(str(pid) for pid in kernel.ended)
        ended = f"; {gone} no longer running: it handed its open lock file on"
    look = "ps -o pid,user,args -p " + ",".join(str(pid) for pid in kernel.pids) + there
    return VshxError(
        f"another process (pid {pids}{there}, as the kernel reports it{ended}) {held}; {claim}",
        f"{wait}; before stopping anything, look at what it is: {look}",
    )


def _open(path: str) -> tuple[int, bool]:
    """Open (or make) the lock file without following a symlink; (fd, writable)."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        os.fchmod(fd, 0o666)  # the umask would keep other users out
        return fd, True
    except FileExistsError:
        pass
    try:
        return os.open(path, flags | os.O_RDWR), True
    except PermissionError:
        return os.open(path, flags | os.O_RDONLY), False  # still lockable; no note then


def _refuse_open(path: str, exc: OSError) -> VshxError:
    if exc.errno == errno.ELOOP:
        return VshxError(
            f"refusing to use the lock file {path}: it is a symbolic link",
            "someone planted it; remove it (vshx never follows a link there)",
        )
    return VshxError(
        f"cannot take vshx's lock {path}: {exc.strerror}",
        "vshx keeps its lock beside the images so that every vshx sees it; run vshx as a "
        f"user who can write {os.path.dirname(path)} (root, or the owner of the images)",
    )


def take(image: str, command: str) -> FileKey:
    """Lock the chain whose active layer is ``image`` for this process, or refuse (exit 1)
    naming the vshx that holds it.  Returns the identity that was locked."""
    key = _take(image, command, None)
    assert key is not None  # only a lower layer is ever passed over
    return key


def take_layers(active: str, paths: list[str], command: str) -> bool:
    """Lock every file below ``active`` that its chain's data is in (``paths``: the chain's
    files top down, as vshx.storage.qcow2 ``chain_files`` lists them), as ``take`` locks the
    active layer; True when any of them was not held by this process before (the caller
    reads the chain again, under these locks).

    Why every layer: a vshx changing a chain names one file of it (the active layer of a
    domain's disk, or a bare image that may be any layer), so a lock on the named file alone
    lets a ``pull``/``rebase``/``commit`` of a middle layer run beside a command on the whole
    disk.  Every file locked by identity means two vshx that change files of one chain need
    one lock.  The locks are tried (never waited for), so two vshx cannot deadlock; taken top
    down, two chains that meet at a file are decided at the first file they share.

    A lower file whose lock cannot be made where this user may not write the file either is
    passed over: this vshx cannot change it, and a refusal would stop every user of a
    read-only base (a vshx that can write it can make its lock; that one, of another user,
    is not kept out by this one)."""
    new = False
    for path in paths:
        if path == active or not files.exists(path):
            continue
        before = len(_held)
        key = _take(path, command, active)
        new = new or (key is not None and len(_held) > before)
    return new


def take_domain(disks: list[tuple[str, str]], domain: str, command: str) -> None:
    """Lock the active layer of every disk of ``domain`` (``disks``: (target, file)), in the
    order of their targets: one vshx at a time changes a domain, whichever disk it names, for
    the domain has one journal and one record of moments, which two vshx on vda and vdb at
    once would each rewrite (atk9 F5); taken in one order, two such vshx are decided at the
    domain's first disk.  A lock this user cannot make is passed over, as for a lower layer
    (``take_layers``)."""
    for target, image in sorted(disks):
        if files.exists(image):
            _take(image, command, f"{domain} disk {target}")


def _take(image: str, command: str, layer_of: str | None) -> FileKey | None:
    """``take``; ``layer_of``: ``image`` is a lower file of the chain whose active layer is
    ``layer_of`` (``take_layers``), None where its lock is passed over."""
    path, key = lock_path(image)
    if key in _held and _held[key].owner != threading.get_ident():
        overlap.wait_for_earlier()  # an earlier line of this batch holds it: let it finish
    if key in _held:
        _held[key].count += 1
        return key
    where = image if layer_of is None else f"{image}, a layer of {layer_of}"
    try:
        if not files.current().local:
            return _take_remote(where, path, key, command)
        return _take_local(where, path, key, command)
    except _CannotOpen as exc:
        if layer_of is not None and exc.unwritable and not files.access(image, os.W_OK):
            return None
        raise exc.error from None


class _CannotOpen(Exception):
    """The lock file could not be made or opened; ``unwritable``: for want of permission (or a
    read-only file system), which a lower layer this vshx cannot write is let off."""

    def __init__(self, error: VshxError, unwritable: bool) -> None:
        super().__init__(error.message)
        self.error, self.unwritable = error, unwritable


_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _cannot_open(path: str, exc: OSError) -> _CannotOpen:
    return _CannotOpen(_refuse_open(path, exc), exc.errno in _UNWRITABLE)


def _take_local(image: str, path: str, key: FileKey, command: str) -> FileKey:
    for _ in range(50):  # each turn: the file was removed between our open and our lock
        try:
            fd, writable = _open(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _cannot_open(path, exc) from exc
        try:
            _lock_or_refuse(fd, image)
        except VshxError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise _cannot_open(path, exc) from exc
        mine = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)  # we locked a file its holder had just removed: take the new one
            continue
        if not S_ISREG(mine.st_mode) or mine.st_nlink != 1 or mine.st_size > MAX_SIZE:
            os.close(fd)
            raise VshxError(
                f"refusing to use the lock file {path}: it is not a small regular file of "
                "its own (a device, a hard link or a large file)",
                "someone put it there; remove it and run the command again",
            )
        if writable:  # truncated after the write: a truncation to 0 makes ext4 flush the
            note = _note(command)  # file at close (auto_da_alloc), ~1 ms per layer's lock
            os.pwrite(fd, note, 0)
            if mine.st_size > len(note):  # a killed vshx's longer note
                os.ftruncate(fd, len(note))
        _held[key] = Held(path, fd)
        return key
    raise VshxError(f"cannot take vshx's lock {path}: it keeps being replaced", "try again")


def _lock_or_refuse(fd: int, image: str) -> None:
    """Lock the file open on ``fd``, or raise the refusal that names its holder.  Tried once
    more after the holder is looked up: one that let go meanwhile (the kernel then shows no
    holder) is no reason to refuse."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        error = _refused(fd, image)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise error from None


def _take_remote(image: str, path: str, key: FileKey, command: str) -> FileKey:
    """``take`` on the host of a qemu+ssh:// URI (see the module docstring)."""
    from vshx.storage.ssh_host import SshHost, hold_lock

    host = files.current()
    if not isinstance(host, SshHost):
        raise VshxError(f"cannot take vshx's lock {path}: the host is not reachable over ssh")
    for _ in range(50):
        answer, proc = hold_lock(host, path, user_name(), command, int(time.time()))
        answer, _, report = answer.partition("\n")
        word, _, rest = answer.partition(" ")
        if proc is not None:
            _held[key] = Held(path, -1, remote=proc)
            return key
        if word == "again":
            continue
        if word == "busy":
            note = parse_note(rest)
            raise refusal(image, note, remote_kernel(report, note), host.name)
        if word == "link":
            raise _refuse_open(path, OSError(errno.ELOOP, os.strerror(errno.ELOOP)))
        if word == "notours":
            raise VshxError(
                f"refusing to use the lock file {path}: it is not a small regular file of "
                "its own (a device, a hard link or a large file)",
                "someone put it there; remove it and run the command again",
            )
        unwritable = any(word in rest for word in ("denied", "not permitted", "Read-only"))
        error = _refuse_open(path, OSError(errno.EACCES, rest or answer))
        raise _CannotOpen(error, unwritable)
    raise VshxError(f"cannot take vshx's lock {path}: it keeps being replaced", "try again")


def holds(image: str) -> bool:
    """True when this process holds the lock of the chain whose active layer is ``image``."""
    try:
        return identity(image) in _held
    except VshxError:
        return False


def release_all() -> None:
    """Let go of every lock this thread holds (in a batch whose jobs overlap, each line runs
    on a thread of its own): remove each file while still holding it."""
    me = threading.get_ident()
    for key in [key for key, held in _held.items() if held.owner == me]:
        held = _held.pop(key)
        if held.remote is not None:
            _let_go_remote(held.remote)
            continue
        try:
            if _still_names(held.path, held.fd):
                os.unlink(held.path)
        except OSError:
            pass  # gone already, or a sticky directory where it is not ours to remove
        os.close(held.fd)


def sweep(directory: str) -> list[str]:
    """Remove the lock files in ``directory`` that no vshx holds now: a vshx that was killed
    (-9) left its file (the kernel let go of the lock itself).  Each is locked first, and
    removed only while it is still the file locked, as a holder removes its own
    (``release_all``); one held now is kept.  Returns the names removed; on this machine's
    files only (a remote host's are left as they are)."""
    if not files.current().local:
        return []
    removed = []
    for name in os.listdir(directory):
        if not (name.startswith(".vshx-") and name.endswith(".lock")):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: OSError, kept
            mine = os.fstat(fd)
            ours = S_ISREG(mine.st_mode) and mine.st_nlink == 1 and mine.st_size <= MAX_SIZE
            if ours and _still_names(path, fd):
                os.unlink(path)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _still_names(path: str, fd: int) -> bool:
    """``path`` still names the file open on ``fd`` (not one made there since)."""
    mine, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _let_go_remote(proc: subprocess.Popen[bytes]) -> None:
    """End the shell that holds a remote lock: it removes the file and lets go."""
    import subprocess  # a remote host's lock only: a local merge never loads it

    try:
        proc.communicate(timeout=60)  # closes its stdin (which ends the shell's `read`) first
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()  # its ssh session ends, and with it the shell's lock
        proc.wait()
