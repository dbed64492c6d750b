"""File identity: which file a path names, whatever way it is reached.

Two names are one file when they have the same ``(st_dev, st_ino)``: a hard link, a bind
mount, a symlink, ``..`` all come out the same.  A block device is keyed by the device it
opens (``st_rdev``), so two device nodes of one disk match.  A missing file keeps its
resolved path as key, so a chain that names a file not there yet is not lost.  A file that
exists but cannot be looked at raises VshxError: vshx refuses what it cannot check.
"""

from __future__ import annotations

import errno
import os
from stat import S_ISBLK, S_ISCHR

from vshx.errors import VshxError

FileKey = tuple[int, int] | str
"""(st_dev, st_ino) of a file, (-1, st_rdev) of a device, the resolved path of a missing file."""

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG)


def identity(path: str) -> FileKey:
    """The identity of the file ``path`` names (see the module docstring)."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        if exc.errno in _MISSING:
            return os.path.realpath(path)
        raise VshxError(
            f"cannot tell which file {path} is: {exc.strerror}",
            "vshx refuses what it cannot check; fix the permissions, or run vshx as a user "
            "who can read it",
        ) from exc
    if S_ISBLK(stat.st_mode) or S_ISCHR(stat.st_mode):
        return (-1, stat.st_rdev)
    return (stat.st_dev, stat.st_ino)


def same_file(first: str, second: str) -> bool:
    """True when both names reach one file (a missing file only matches its own path)."""
    return identity(first) == identity(second)
