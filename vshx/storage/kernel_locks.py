"""Who holds a ``flock`` on a file, as the kernel says: ``/proc/locks`` and ``/proc/PID/fdinfo``.

vshx's chain lock files are world-writable (vshx.plans.lock), so the note a holder writes
into one proves nothing: any local user can write a note naming any pid.  The kernel's lock
table cannot be written by anyone.  ``/proc/locks`` lists every lock with the pid that took
it and the file as ``MAJOR:MINOR:INODE`` (hex device numbers of the file's super block, as
``/proc/self/mountinfo`` shows them; on btrfs these differ from ``stat``'s ``st_dev``).
A flock belongs to an open file description, not to a process, so that pid is only the
taker's: a taker that passed the file on and ended (the ``flock`` command of a shell that
holds fd 9, or a fork) leaves its pid there, and the pid may be reused.  A process's
``fdinfo`` shows a ``lock:`` line for each lock held through that open file: that is who
holds it now, readable by the process's own user and root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

KernelFile = tuple[int, int, int]
"""(major, minor, inode) of a file, as the kernel's lock tables name it."""

_FILE = re.compile(r"^([0-9a-f]+):([0-9a-f]+):([0-9]+)$")


def _flocks(table: str) -> Iterator[tuple[int, KernelFile]]:
    """(pid, file) of each flock granted in ``table`` (waiters, ``->``, left out)."""
    for line in table.splitlines():
        words = line.split()
        if words[:1] == ["lock:"]:
            words = words[1:]
        if len(words) < 4 or "->" in words or words[1] != "FLOCK":
            continue
        for at in range(3, len(words)):
            found = _FILE.match(words[at])
            if found is not None:
                pid = words[at - 1]
                number = int(pid) if pid.lstrip("-").isdigit() else 0
                yield number, (int(found[1], 16), int(found[2], 16), int(found[3]))
                break


def flock_pids(table: str, file: KernelFile) -> list[int]:
    """The pids that ``table`` (the text of ``/proc/locks``) shows holding a flock on
    ``file``, leaving out a pid the kernel cannot name here (0: one in another pid namespace;
    -1: an OFD lock)."""
    pids: list[int] = []
    for pid, locked in _flocks(table):
        if locked == file and pid > 0 and pid not in pids:
            pids.append(pid)
    return pids


def locks_on(fdinfo: str, file: KernelFile) -> bool:
    """Whether ``fdinfo`` (the text of ``/proc/PID/fdinfo/FD``) shows a flock on ``file``
    held through that open file (whatever pid took it)."""
    return any(locked == file for _pid, locked in _flocks(fdinfo))


def mount_device(mountinfo: str, mount_id: int) -> tuple[int, int] | None:
    """The device (major, minor) of mount ``mount_id`` in ``mountinfo`` (the text of
    ``/proc/PID/mountinfo``); None when it is not listed."""
    for line in mountinfo.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == str(mount_id):
            major, _, minor = words[2].partition(":")
            if major.isdigit() and minor.isdigit():
                return int(major), int(minor)
    return None


def fdinfo_field(fdinfo: str, name: str) -> str | None:
    """The value of ``name:`` in ``fdinfo`` (the text of ``/proc/PID/fdinfo/FD``)."""
    for line in fdinfo.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as text:
        return text.read()


def kernel_file(fd: int) -> KernelFile:
    """How the kernel's lock tables name the file open on ``fd`` (its mount's device, from
    this process's fdinfo and mountinfo; ``fstat``'s where ``/proc`` says nothing)."""
    stat = os.fstat(fd)
    device, inode = (os.major(stat.st_dev), os.minor(stat.st_dev)), stat.st_ino
    try:
        info = _read(f"/proc/self/fdinfo/{fd}")
        inode = int(fdinfo_field(info, "ino") or inode)
        mount = fdinfo_field(info, "mnt_id")
        if mount is not None:
            device = mount_device(_read("/proc/self/mountinfo"), int(mount)) or device
    except (OSError, ValueError):
        pass
    return (*device, inode)


def lock_table() -> str | None:
    """The text of ``/proc/locks``; None when it cannot be read."""
    try:
        return _read("/proc/locks")
    except OSError:
        return None


def holds_flock(pid: int, file: KernelFile) -> bool | None:
    """Whether process ``pid`` holds a flock on ``file`` now (an open file of its own whose
    fdinfo shows the lock); None when its open files cannot be read (another user's process,
    unless this one is root)."""
    if pid <= 0:
        return False
    directory = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(directory)
    except FileNotFoundError:
        return False  # no such process
    except OSError:
        return None
    for fd in fds:
        try:
            if locks_on(_read(f"{directory}/{fd}"), file):
                return True
        except FileNotFoundError:
            continue  # closed meanwhile
        except OSError:
            return None
    return False
