"""qemu-img processes at work on image files: one that outlived the vshx that started it.

A ``kill -9`` of vshx leaves its ``qemu-img`` child running (reparented to init), still writing
the chain. It is found by what it is doing, not by a remembered pid that may have been reused:
a process that is qemu-img (``/proc/PID/cmdline``) and names one of the files by identity
(``st_dev``, ``st_ino``: any path, link or mount). vshx starts its children with
``VSHX_PARENT=<its pid>`` in their environment, which tells which vshx started one.
This module reads this machine's /proc; vshx.storage.host asks the image host (a remote one
through vshx.storage.remote_procs).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import NamedTuple

TOOLS = frozenset({"qemu-img", "qemu-io"})
PARENT_ENV = "VSHX_PARENT"


class Worker(NamedTuple):
    """A qemu-img process at work on a file of interest."""

    pid: int
    argv: list[str]
    started: float  # seconds since the epoch
    parent: int | None  # the vshx that started it (its environment says), if it says
    host: str = ""  # "" for this machine, else the remote host it runs on (user@host:port)


def argv_of(cmdline: bytes) -> list[str]:
    """The words of a ``/proc/PID/cmdline``: each ends with a NUL, and an empty one (``-b ''``)
    is a word too (dropping it would show, and paste, another command)."""
    words = cmdline.split(b"\0")
    if words and words[-1] == b"":
        words.pop()  # the last word's terminator
    return [os.fsdecode(w) for w in words]


def child_env() -> dict[str, str]:
    """The environment for a child of this vshx: ours, plus who started it."""
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def identities(paths: Iterable[str]) -> set[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _boot_time() -> float:
    with open("/proc/stat", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on; the name in () before it may hold spaces."""
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def _started(pid: int, boot: float) -> float:
    """Start time from field 22 of /proc/PID/stat (clock ticks after boot)."""
    return boot + int(_stat_fields(pid)[19]) / os.sysconf("SC_CLK_TCK")


def still_running(worker: Worker) -> bool:
    """True while that very process runs: the same pid, started at the same time, not a
    zombie (an orphan's new parent may be slow to reap it)."""
    try:
        fields = _stat_fields(worker.pid)
        return fields[0] != "Z" and _started(worker.pid, _boot_time()) == worker.started
    except (OSError, ValueError, IndexError):
        return False


@functools.cache
def this_machine() -> tuple[str, str, str]:
    """(machine id, boot id, host name): which machine a process ran on, and in which boot
    (a pid means something only there, and only until that machine restarts)."""
    found = []
    for path in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                found.append(handle.read().strip())
        except OSError:
            found.append("")
    return found[0], found[1], os.uname().nodename  # gethostname(), without loading socket


def started_at(pid: int) -> float | None:
    """When process ``pid`` of this machine started (seconds since the epoch); None when no
    such process runs (or it is a zombie)."""
    try:
        if _stat_fields(pid)[0] == "Z":
            return None
        return _started(pid, _boot_time())
    except (OSError, ValueError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return None  # another user's process: its environment is not ours to read
    prefix = PARENT_ENV.encode() + b"="
    for item in environ:
        if item.startswith(prefix) and item[len(prefix) :].isdigit():
            return int(item[len(prefix) :])
    return None


def _names_one_of(pid: int, argv: list[str], wanted: set[tuple[int, int]]) -> bool:
    """True when a word of ``argv`` is one of the files: absolute paths first, then relative
    ones from the process's directory (when it may be read: another user's may not)."""
    words = [w for w in argv[1:] if w and not w.startswith("-")]
    if identities(w for w in words if w.startswith("/")) & wanted:
        return True
    relative = [w for w in words if not w.startswith("/")]
    if not relative:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return bool(identities(os.path.join(cwd, w) for w in relative) & wanted)


def at_work_on(paths: Iterable[str]) -> list[Worker]:
    """Every qemu-img (or qemu-io) process whose command line names one of ``paths``."""
    wanted = identities(paths)
    if not wanted:
        return []
    boot = _boot_time()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = argv_of(handle.read())
            if not argv or os.path.basename(argv[0]) not in TOOLS:
                continue
            if _names_one_of(pid, argv, wanted):
                found.append(Worker(pid, argv, _started(pid, boot), _parent(pid)))
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked, or is not ours to read
    return sorted(found)
