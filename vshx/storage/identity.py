"""File identity: which file a path names, whatever way it is reached.

Two names are one file when they have the same ``(st_dev, st_ino)``: a hard link, a bind
mount, a symlink, ``..`` all come out the same.  A block device is keyed by the device it
opens (``st_rdev``), so two device nodes of one disk match; a loop device is the file it
reads (Linux: ``/sys/dev/block/MAJ:MIN/loop``), so ``losetup`` does not hide a user.  A
missing file keeps its resolved path as key, so a chain that names a file not there yet is
not lost.  A file that exists but cannot be looked at raises VshxError: vshx refuses what it
cannot check.
"""

from __future__ import annotations

import errno
import functools
import os
from stat import S_ISBLK, S_ISCHR
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.storage import host as files

if TYPE_CHECKING:
    from collections.abc import Callable

FileKey = tuple[int, int] | str
"""(st_dev, st_ino) of a file, (-1, st_rdev) of a device, the resolved path of a missing file."""

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG)


def identity(path: str) -> FileKey:
    """The identity of the file ``path`` names (see the module docstring)."""
    try:
        stat = files.stat(path)
    except OSError as exc:
        if exc.errno in _MISSING:
            return files.realpath(path)
        raise VshxError(
            f"cannot tell which file {path} is: {exc.strerror}",
            "vshx refuses what it cannot check; fix the permissions, or run vshx as a user "
            "who can read it",
        ) from exc
    if S_ISBLK(stat.st_mode) and not files.current().local:
        return (-1, stat.st_rdev)  # a remote host's loop devices are not looked into
    if S_ISBLK(stat.st_mode):
        return loop_backing(path, stat.st_rdev) or (-1, stat.st_rdev)
    if S_ISCHR(stat.st_mode):
        return (-1, stat.st_rdev)
    return (stat.st_dev, stat.st_ino)


def _sysfs(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8", errors="surrogateescape") as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def loop_backing(path: str, rdev: int) -> FileKey | None:
    """The identity of the file behind the loop device ``path`` (None: no loop device).

    From the kernel's ``backing_dev``/``backing_inode`` when it has them, else by looking at
    ``backing_file``; a backing file that cannot be known (deleted, unreadable) raises.
    """
    loop = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/loop"
    try:
        device, inode = _sysfs(loop, "backing_dev"), _sysfs(loop, "backing_inode")
        if device and inode:
            major, _, minor = device.partition(":")
            return (os.makedev(int(major), int(minor)), int(inode))
        backing = _sysfs(loop, "backing_file")
    except (OSError, ValueError) as exc:
        raise VshxError(
            f"cannot tell which file the loop device {path} reads: {exc}",
            "vshx refuses what it cannot check; run vshx as root, or detach it (losetup -d)",
        ) from exc
    if backing is None:
        return None
    if not os.path.isabs(backing) or backing.endswith(" (deleted)"):
        raise VshxError(
            f"cannot tell which file the loop device {path} reads ({backing})",
            "vshx refuses what it cannot check; detach it (losetup -d) if it is unused",
        )
    key = identity(backing)
    if isinstance(key, str):
        raise VshxError(
            f"the file behind the loop device {path} ({backing}) is not there",
            "vshx refuses what it cannot check; detach it (losetup -d) if it is unused",
        )
    return key


def same_file(first: str, second: str) -> bool:
    """True when both names reach one file (a missing file only matches its own path)."""
    return identity(first) == identity(second)


@functools.cache
def _statx() -> Callable[..., object] | None:
    """libc's statx, looked up once per process (snapshot-list asks for every snapshot's
    overlay); None where libc has none."""
    from vshx.storage import libc

    try:
        return libc.function("statx", libc.Int, (libc.Int, libc.Text, libc.Int, libc.Int))
    except (AttributeError, OSError):
        return None


def birth_ns(path: str, local: bool) -> int | None:
    """When the file was created (statx's birth time, ns), on this machine's files; None when
    the file system does not say, or the files are on another host (``local`` False).  An
    inode number alone is no identity: ext4 gives a freed one to the next file made in the
    directory, and no user can set a birth time back."""
    statx = _statx() if local else None
    if statx is None:
        return None
    from vshx.storage import libc

    buf = libc.buffer(256)  # struct statx
    at_fdcwd, nofollow, want_btime = -100, 0x100, 0x800
    if statx(at_fdcwd, os.fsencode(path), nofollow, want_btime, buf) != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & want_btime:
        return None
    sec = int.from_bytes(buf.raw[80:88], "little", signed=True)  # stx_btime.tv_sec
    nsec = int.from_bytes(buf.raw[88:92], "little")
    return sec * 10**9 + nsec
