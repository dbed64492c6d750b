"""Where a one-shot live commit's time goes, for vshx and for the floor, phase by phase.

The merge benchmark (bench/merge.py) gives one number per tool; this one splits both tools'
runs at the same libvirt calls, so the gap between vshx and ``floor_commit.py`` can be read
as what each phase adds: importing libvirt (both), vshx's own imports and plugin loading
(before the connection opens), its checks (connection open to ``blockCommit``), the job
(``blockCommit`` to the BLOCK_JOB_2 event: both wait for QEMU), and what follows the event
(vshx: the record of moments and the journal's removal).  Each run: a fresh lab per tool,
guests idle, the tools taking turns going first.  Times from the first line of the child's
code (the interpreter's own start, the same for both, is not in them).

    python bench/phases.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import URI, VSHX, drop_lab, make_lab, settle, write_section

# Runs in the child: wraps four libvirt entry points to note when they are reached, then runs
# the tool in-process (vshx's main, or floor_commit.py as a script).
CHILD = r"""
import runpy, sys, time
T0 = time.perf_counter()
MARKS = {}
import libvirt
MARKS["libvirt"] = time.perf_counter()

def mark(owner, name, before, after=None):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        MARKS.setdefault(before, time.perf_counter())
        try:
            return real(*args, **kwargs)
        finally:
            if after:
                MARKS.setdefault(after, time.perf_counter())
    setattr(owner, name, wrapped)

mark(libvirt, "open", "open", "opened")
mark(libvirt.virDomain, "blockCommit", "commit")
mark(libvirt.virConnect, "domainEventDeregisterAny", "event")
tool, *argv = sys.argv[1:]
try:
    if tool == "vshx":
        from vshx.frontends.cli import main
        sys.argv = ["vshx", *argv]
        main()
    else:
        sys.argv = [tool, *argv]
        runpy.run_path(tool, run_name="__main__")
finally:
    MARKS.setdefault("event", time.perf_counter())  # the floor deregisters nothing
    MARKS["end"] = time.perf_counter()
    print("MARKS " + " ".join(f"{k}={(v - T0) * 1000:.2f}" for k, v in MARKS.items()),
          file=sys.stderr)
"""

PHASES = (
    ("import libvirt", "", "libvirt"),
    ("vshx's imports, options and plugin (before the connection)", "libvirt", "open"),
    ("open the connection", "open", "opened"),
    ("checks, lock and journal (open to blockCommit)", "opened", "commit"),
    ("the job (blockCommit to its event)", "commit", "event"),
    ("after the event (record, journal removed, close)", "event", "end"),
    ("total (interpreter start not included)", "", "end"),
)
FLOOR = Path(__file__).resolve().parent / "floor_commit.py"


def one(tool: str, tmp: Path) -> dict[str, float]:
    """The marks (ms from the child's first line) of one run on a fresh, idle lab."""
    name, directory = make_lab(tmp, True, "--layers", "4", "--fill", "0")
    try:
        settle([name])
        if tool == "vshx":
            argv = ["vshx", "-c", URI, "-q", "commit", name, "vda", "--base", "sn1", "--top", "sn3"]
        else:
            base, top = str(directory / "sn1.qcow2"), str(directory / "sn3.qcow2")
            argv = [str(FLOOR), URI, name, "vda", base, top]
        python = str(Path(VSHX[0]).parent / "python")
        run = subprocess.run(
            [python, "-c", CHILD, *argv], capture_output=True, text=True, check=True
        )
    finally:
        drop_lab(name, directory)
    line = next(x for x in run.stderr.splitlines() if x.startswith("MARKS "))
    marks = {k: float(v) for k, v in (item.split("=") for item in line.split()[1:])}
    marks[""] = 0.0
    return marks


def span(marks: dict[str, float], start: str, end: str) -> float | None:
    if start not in marks or end not in marks:
        return None
    return marks[end] - marks[start]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    results: dict[str, list[dict[str, float]]] = {"vshx": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="vshx-bench-", dir="/var/tmp") as tmp_name:
        for i in range(runs):
            for tool in ("vshx", "floor") if i % 2 == 0 else ("floor", "vshx"):
                results[tool].append(one(tool, Path(tmp_name)))
    rows = []
    for label, start, end in PHASES:
        cells = []
        for tool in ("vshx", "floor"):
            values = [v for m in results[tool] if (v := span(m, start, end)) is not None]
            cells.append(f"{statistics.median(values):.1f} ms" if values else "-")
        rows.append(f"| {label} | {cells[0]} | {cells[1]} |")
    body = "\n".join(
        [
            "## Where a one-shot commit's time goes (bench/phases.py)",
            "",
            "The small live commit of the merge section (sn3, sn2 into sn1), split at the same",
            "libvirt calls in both tools; medians of "
            f"{runs} runs each, fresh idle labs, turns alternating.",
            "",
            "| phase | vshx | floor |",
            "|---|---|---|",
            *rows,
            "",
            "The floor's phases outside the job are Python's own start (not in the table, the",
            "same for both) and `import libvirt`; everything vshx adds is in the rows the floor",
            "leaves empty or near zero: importing its checks, running them under the chain's",
            "lock, and the crash journal and record of moments it keeps in the domain's",
            "metadata (each `setMetadata` rewrites and fsyncs the domain's status and config",
            "files).",
        ]
    )
    write_section("phases", body)


if __name__ == "__main__":
    main()
