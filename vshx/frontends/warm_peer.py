"""Whether a process that connects to a warm server stands where the server stands.

The socket's directory already keeps other users out, and the kernel's peer credentials name
the user; but a process of the same user may have less than the server: a mount namespace of
its own (other files at the same paths), dropped capabilities or ``no_new_privs`` (a systemd
unit's sandbox, ``setpriv``), other groups, a seccomp filter or another security label.  A
fork of the server would run its command with the server's standing instead, so the server
runs only commands of processes whose standing is its own, read from ``/proc`` for both; when
any of it cannot be read, the command runs in the client's own process.
"""

from __future__ import annotations

import os

# the namespaces a command's files, processes and network are seen through
NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup", "time")
# /proc/PID/status lines that say what a process may do
STANDING = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
            "NoNewPrivs", "Seccomp")  # fmt: skip


def standing(pid: int | str) -> tuple[str, ...] | None:
    """What a process may do and see, as /proc tells it; None when /proc will not say."""
    base = f"/proc/{pid}"
    try:
        spaces = tuple(_namespace(base, name) for name in NAMESPACES)
        with open(f"{base}/status", encoding="utf-8", errors="replace") as status:
            lines = tuple(line.rstrip("\n") for line in status if line.split(":", 1)[0] in STANDING)
        label = _label(base)
    except OSError:
        return None
    return (*spaces, *lines, label)


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
