"""Whether a process that connects to a warm server stands where the server stands.

The socket's directory already keeps other users out, and the kernel's peer credentials name
the user; but a process of the same user may have less than the server: a mount namespace
of its own (other files at the same paths) or a root of its own (a chroot jail), dropped
capabilities or ``no_new_privs`` (a systemd unit's sandbox, ``setpriv``), other groups, a
seccomp filter or another security label, or other resource limits, scheduling (nice, I/O
class, CPUs) or OOM score.  A fork of the server would run its command with the server's
standing instead, so the server runs only commands of processes whose standing is its own,
read from ``/proc`` for both; when any of it cannot be read, the command runs in the client's
own process.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable

from vshx.storage import libc

# the namespaces a command's files, processes and network are seen through
NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup", "time")
# /proc/PID/status lines that say what a process may do
STANDING = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
            "NoNewPrivs", "Seccomp", "Cpus_allowed_list")  # fmt: skip
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}  # syscall numbers; elsewhere the I/O class is not read


def standing(pid: int | str) -> tuple[str, ...] | None:
    """What a process may do and see, as /proc tells it; None when /proc will not say."""
    base = f"/proc/{pid}"
    try:
        spaces = tuple(_namespace(base, name) for name in NAMESPACES)
        with open(f"{base}/status", encoding="utf-8", errors="replace") as status:
            lines = tuple(line.rstrip("\n") for line in status if line.split(":", 1)[0] in STANDING)
        label = _label(base)
        root = os.stat(f"{base}/root")  # its / : a chroot's is another directory
        with open(f"{base}/stat", encoding="utf-8", errors="replace") as stat:
            nice = stat.read().rsplit(")", 1)[1].split()[16]  # field 19, after the comm
        with open(f"{base}/oom_score_adj", encoding="utf-8") as oom:
            oom_adj = oom.read().strip()
        with open(f"{base}/limits", encoding="utf-8", errors="replace") as limits:
            limit_text = limits.read()
    except (OSError, IndexError):
        return None
    scheduling = (f"nice {nice}", f"io {_io_priority(pid)}", f"oom {oom_adj}")
    return (*spaces, *lines, label, f"root {root.st_dev}:{root.st_ino}", *scheduling, limit_text)


def _io_priority(pid: int | str) -> str:
    """The I/O scheduling class and level (``ionice``), as ioprio_get gives it."""
    number = IOPRIO_GET.get(platform.machine())
    if number is None:
        return "?"
    return str(_syscall()(number, 1, 0 if pid == "self" else int(pid)))  # IOPRIO_WHO_PROCESS


@functools.cache
def _syscall() -> Callable[..., object]:
    """libc's syscall(2), made once (asked twice for every command the server takes)."""
    return libc.function("syscall", libc.Int, (libc.Int, libc.Int, libc.Int))


def _namespace(base: str, name: str) -> str:
    """A namespace's identity; empty for a kind this kernel does not have (for both ends)."""
    try:
        return os.readlink(f"{base}/ns/{name}")
    except FileNotFoundError:
        return ""


def _label(base: str) -> str:
    """The process's security label (AppArmor, SELinux); empty where no LSM offers one."""
    try:
        with open(f"{base}/attr/current", encoding="utf-8", errors="replace") as current:
            return current.read().strip("\0\n")
    except OSError:
        return ""


def stands_here(pid: int) -> bool:
    """True when process ``pid`` has exactly this process's standing."""
    theirs = standing(pid)
    return theirs is not None and theirs == standing("self")
