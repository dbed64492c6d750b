"""qemu-img processes on a remote host: what ``/proc`` there says, read by one ``sh`` script.

The same questions vshx.storage.procs asks of this machine's ``/proc``, asked of the host of a
``qemu+ssh://`` URI (vshx.storage.ssh_host runs the scripts): which qemu-img (or qemu-io)
processes run there, with their pid, start time, state, command line, directory and the vshx
that started them; and whether one of them still runs.  A process is known by its pid AND
its start time (field 22 of ``/proc/PID/stat``), so a pid the kernel has given to another
process since is never taken for the worker.  The scripts need only ``sh``, ``getconf`` and
coreutils (base64, readlink, tr); the logic (which file a command line names) stays here.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from vshx.storage.procs import argv_of

# btime and clock ticks first, then one record per qemu-img/qemu-io process (prefiltered by
# its /proc/PID/comm, the executable's name): pid, stat, base64 cmdline, cwd, VSHX_PARENT,
# each field ended by NUL.  A process that ends while it is read is left out.
PS = r"""b=
while read -r k v _; do [ "$k" = btime ] && b=$v; done < /proc/stat
[ -n "$b" ] || { echo "no btime in /proc/stat" >&2; exit 3; }
t=$(getconf CLK_TCK 2>/dev/null) || t=100
printf '%s\0%s\0' "$b" "$t"
for d in /proc/[0-9]*; do
  { read -r c < "$d/comm"; } 2>/dev/null || continue
  case $c in qemu-img|qemu-io) ;; *) continue;; esac
  s=$(cat -- "$d/stat" 2>/dev/null) || continue
  a=$(base64 -w0 < "$d/cmdline" 2>/dev/null) || continue
  w=$(readlink -- "$d/cwd" 2>/dev/null) || w=
  e=$(tr '\0' '\n' < "$d/environ" 2>/dev/null | sed -n 's/^VSHX_PARENT=//p' | head -n 1)
  printf '%s\0%s\0%s\0%s\0%s\0' "${d#/proc/}" "$s" "$a" "$w" "$e"
done
"""
# one process: btime, clock ticks, then its stat line, or nothing when there is no such pid
ALIVE = r"""b=
while read -r k v _; do [ "$k" = btime ] && b=$v; done < /proc/stat
[ -n "$b" ] || { echo "no btime in /proc/stat" >&2; exit 3; }
t=$(getconf CLK_TCK 2>/dev/null) || t=100
printf '%s\0%s\0' "$b" "$t"
s=$(cat -- "/proc/$1/stat" 2>/dev/null) && printf '%s\0' "$s"
exit 0
"""
TOOLS = frozenset({"qemu-img", "qemu-io"})


@dataclass(frozen=True)
class Seen:
    """One qemu-img process as the remote /proc showed it."""

    pid: int
    argv: list[str]
    started: float  # seconds since the epoch, from the host's boot time and clock ticks
    state: str
    cwd: str
    parent: int | None


def stat_fields(line: str) -> list[str]:
    """A /proc/PID/stat line from field 3 (state) on; the name in () may hold anything."""
    return line[line.rindex(")") + 2 :].split()


def started(fields: list[str], boot: float, ticks: int) -> float:
    """Start time in seconds since the epoch (field 22: clock ticks after boot); computed the
    same way for every look, so one process always gives the same number."""
    return boot + int(fields[19]) / ticks


def _clock(fields: list[str]) -> tuple[float, int]:
    boot, ticks = float(fields[0]), int(fields[1])
    if ticks <= 0:
        raise ValueError(f"clock ticks {ticks}")
    return boot, ticks


def parse_ps(out: bytes) -> list[Seen]:
    """PS's output as records (ValueError when it is not PS's)."""
    fields = os.fsdecode(out).split("\0")
    boot, ticks = _clock(fields)
    found = []
    at = 2
    while at + 5 <= len(fields):
        pid, stat, cmdline, cwd, parent = fields[at : at + 5]
        at += 5
        try:
            argv = argv_of(base64.b64decode(cmdline))
            state = stat_fields(stat)
            if not argv or os.path.basename(argv[0]) not in TOOLS:
                continue  # comm says qemu-img, but its argv[0] is something else: as locally
            found.append(
                Seen(
                    int(pid),
                    argv,
                    started(state, boot, ticks),
                    state[0],
                    cwd,
                    int(parent) if parent.isdigit() else None,
                )
            )
        except (ValueError, IndexError):
            continue  # a record torn by a process that ended as it was read
    return found


def parse_alive(out: bytes) -> tuple[float, str] | None:
    """ALIVE's output: (the process's start time, its state), or None when no such pid."""
    fields = os.fsdecode(out).split("\0")
    boot, ticks = _clock(fields)
    if len(fields) < 4 or not fields[2]:
        return None
    state = stat_fields(fields[2])
    return started(state, boot, ticks), state[0]


def named_paths(seen: Seen) -> list[str]:
    """The files a command line may name: each word that is no option, absolute, or taken
    from the process's directory (when the host let us read it)."""
    words = [w for w in seen.argv[1:] if w and not w.startswith("-")]
    paths = [w for w in words if w.startswith("/")]
    if seen.cwd.startswith("/"):
        paths += [os.path.join(seen.cwd, w) for w in words if not w.startswith("/")]
    return paths
