"""Shared helpers for the benchmarks: timing, medians/percentiles, and the results file.

Each benchmark owns one section of docs/benchmarks.md, between markers, so benchmarks can be
run one at a time and the file keeps the others' latest results.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Measure what users get: bytecode cached, as after `make bootstrap` (which byte-compiles).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
subprocess.run(
    [
        sys.executable,
        "-m",
        "compileall",
        "-q",
        str(ROOT / "vshx"),
        str(ROOT / "plugins" / "vshx_plugins"),
    ],
    check=True,
    capture_output=True,
)
RESULTS = ROOT / "docs" / "benchmarks.md"
VSHX = [str(Path(sys.executable).parent / "vshx")]
URI = "qemu:///system"


def run_quiet(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, **kwargs)


def time_command(argv: Sequence[str], repeat: int, warmup: int = 2, **kwargs) -> list[float]:
    """Wall seconds of each of ``repeat`` runs of a command (after ``warmup`` unmeasured)."""
    for _ in range(warmup):
        run_quiet(argv, **kwargs)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run_quiet(argv, **kwargs)
        samples.append(time.perf_counter() - start)
    return samples


def time_call(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def p95_ms(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] * 1000


def machine() -> str:
    kvm = "KVM" if os.path.exists("/dev/kvm") else "TCG"
    return f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {kvm}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md."""
    RESULTS.parent.mkdir(exist_ok=True)
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else (
            "# Benchmarks\n\nWritten by the scripts in bench/ (`make bench`); medians unless said "
            "otherwise, every ratio measured in the same run. Never timed in tests.\n"
        )
    )
    begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = f"{begin}\n{body.rstrip()}\n\n_{stamp}, {machine()}_\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(body)


def make_lab(tmp: Path, running: bool, *options: str) -> tuple[str, Path]:
    """A fresh practice lab for one side of a comparison (lab-create OPTIONS...)."""
    import uuid

    # the tests' lab prefix when set (a shared host: each user's labs under their own name)
    name = f"{os.environ.get('VSHX_TEST_LAB_PREFIX', 'vshx-')}bench-{uuid.uuid4().hex[:8]}"
    directory = tmp / name
    argv = [*VSHX, "-c", URI, "lab-create", name, "--dir", str(directory), *options]
    if not running:
        argv.append("--shut-off")
    subprocess.run(argv, check=True, capture_output=True)
    return name, directory


def settle(names: Sequence[str], limit: float = 15.0) -> None:
    """Wait until the labs' guests are idle: a lab's guest has just started, and its firmware
    keeps a core busy for its first seconds (here, ~80 % of one for ~3 s), which is not the
    state of a domain whose chain an admin shortens; each tool of a row then meets the same
    quiet host.  Idle: its QEMU used under 10 % of a core over 200 ms (at most ``limit`` s)."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(name: str) -> float:
        try:
            pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            return 0.0  # shut off, or not ours to read: nothing to wait for

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [cpu(name) for name in names]
        time.sleep(0.2)
        if all(cpu(name) - was < 0.02 for name, was in zip(names, before, strict=True)):
            return


def drop_lab(name: str, directory: Path) -> None:
    subprocess.run(
        [*VSHX, "-c", URI, "lab-destroy", name, "--dir", str(directory)], capture_output=True
    )
