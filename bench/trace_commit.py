"""Where a one-shot live commit's time goes: every libvirt call with its start and length.

Builds a fresh practice lab (4 snapshot layers, running), runs `vshx -q commit LAB vda --base
sn1 --top sn3` in a child process whose libvirt-python classes are wrapped to time each call,
and prints the calls (start ms, length ms, thread), then the count per call and the process's
import time (``-X importtime``, second run).  Not a benchmark: the wrappers cost time
themselves; use it to see which reads a command makes, and which of them wait.

    python bench/trace_commit.py [--snapshots N]
"""

from __future__ import annotations

import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from common import URI, VSHX, drop_lab, make_lab

CHILD = r"""
import sys, threading, time
T0 = time.perf_counter()
import libvirt
CALLS = []

def wrap(cls):
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not callable(fn):
            continue
        def timed(*a, _fn=fn, _name=f"{cls.__name__}.{name}", **k):
            start = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                end = time.perf_counter()
                CALLS.append((start - T0, end - start, _name, threading.current_thread().name))
        setattr(cls, name, timed)

for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virStoragePool,
            libvirt.virStorageVol, libvirt.virDomainSnapshot):
    wrap(cls)
_open = libvirt.open
def opened(*a):
    start = time.perf_counter()
    conn = _open(*a)
    CALLS.append((start - T0, time.perf_counter() - start, "open", "MainThread"))
    return conn
libvirt.open = opened
from vshx.frontends.cli import main
sys.argv = ["vshx", *sys.argv[1:]]
try:
    status = main()
finally:
    end = time.perf_counter() - T0
    for start, length, name, thread in sorted(CALLS):
        print(f"CALL {start * 1000:8.1f} {length * 1000:7.2f} {name} [{thread}]", file=sys.stderr)
    print(f"END {end * 1000:.1f}", file=sys.stderr)
sys.exit(status)
"""


def main() -> None:
    layers = "4"
    if "--snapshots" in sys.argv:
        layers = sys.argv[sys.argv.index("--snapshots") + 1]
    python = str(Path(VSHX[0]).parent / "python")
    with tempfile.TemporaryDirectory(prefix="vshx-bench-", dir="/var/tmp") as tmp_name:
        name, directory = make_lab(Path(tmp_name), True, "--layers", layers)
        argv = ["-c", URI, "-q", "commit", name, "vda", "--base", "sn1", "--top", "sn3"]
        try:
            run = subprocess.run(
                [python, "-c", CHILD, *argv], capture_output=True, text=True, check=False
            )
        finally:
            drop_lab(name, directory)
        name, directory = make_lab(Path(tmp_name), True, "--layers", layers)
        try:
            imports = subprocess.run(
                [python, "-X", "importtime", "-m", "vshx", *argv],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            drop_lab(name, directory)
    counts: collections.Counter[str] = collections.Counter()
    waited: collections.Counter[str] = collections.Counter()
    for line in run.stderr.splitlines():
        if line.startswith("CALL "):
            print(line[5:])
            _start, length, call = line.split()[1:4]
            counts[call] += 1
            waited[call] += float(length)
        elif line.startswith("END "):
            print(f"process: {line[4:]} ms from its first line to the end of main()")
        else:
            print(line)
    print(f"\n{sum(counts.values())} libvirt calls, {sum(waited.values()):.1f} ms in them:")
    for call, count in counts.most_common():
        print(f"  {count:3d} x {call} ({waited[call]:.1f} ms)")
    own = [line for line in imports.stderr.splitlines() if line.startswith("import time:")]
    total = sum(int(line.split("|")[0].split(":")[1]) for line in own[1:])
    print(f"\nimports: {len(own) - 1} modules, {total / 1000:.1f} ms (self times, -X importtime)")


if __name__ == "__main__":
    sys.exit(main())
