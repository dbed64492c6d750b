"""Flatten: the cheapest safe route against what virsh / qemu-img users do today.

A lab whose base holds 1 GiB of data under 4 overlays of 16 MiB each.  Users flatten with
`virsh blockpull --wait` (live) or `qemu-img rebase -b ""` (offline), which copy the whole
base up into the active layer; vshx `flatten --route commit` (the admin gives the lab's
snapshots up: without `--route`, vshx keeps their moments and pulls too) sees that nothing else
uses the base and commits the overlays down into it instead (target: >= 10x faster).  With
the base shared, vshx must pick the pull too (target: within 1.05x).  Bytes moved: vshx's
plan (qemu-img map) and the allocation each side actually wrote.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import URI, VSHX, drop_lab, make_lab, write_section

BASE_MIB = 1024
FILL_MIB = 16
RUNS = 2


def lab(tmp: Path, running: bool) -> tuple[str, Path]:
    return make_lab(tmp, running, "--fill", str(FILL_MIB), "--base-fill", str(BASE_MIB))


drop = drop_lab


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout


def planned_bytes(name: str, route: list[str]) -> str:
    plan = subprocess.run(
        [*VSHX, "-c", URI, "flatten", name, "vda", *route, "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line for line in plan.splitlines() if line.startswith("# moves")).split(":")[0][2:]


def allocated(path: Path) -> str:
    return f"{path.stat().st_blocks * 512 / 1048576:.0f} MiB"


def one(tmp: Path, running: bool, shared: bool) -> dict[str, object]:
    """vshx flatten on one lab, the users' way on an identical one; seconds and bytes."""
    mine, mine_dir = lab(tmp, running)
    theirs, their_dir = lab(tmp, running)
    try:
        if shared:  # another overlay on each base: the commit route is unsafe
            for d in (mine_dir, their_dir):
                subprocess.run(
                    [
                        "qemu-img",
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-F",
                        "qcow2",
                        "-b",
                        str(d / "base.qcow2"),
                        str(d / "other.qcow2"),
                    ],
                    check=True,
                )
        route = [] if shared else ["--route", "commit"]  # shared: the planner's own choice
        plan = planned_bytes(mine, route)
        vshx_s, _ = timed([*VSHX, "-c", URI, "flatten", mine, "vda", *route])
        if running:
            their_argv = ["virsh", "-c", URI, "blockpull", theirs, "vda", "--wait"]
        else:
            their_argv = [
                "qemu-img",
                "rebase",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "",
                str(their_dir / "sn4.qcow2"),
            ]
        their_s, _ = timed(their_argv)
        return {
            "vshx": vshx_s,
            "theirs": their_s,
            "plan": plan,
            "their_alloc": allocated(their_dir / "sn4.qcow2"),
        }
    finally:
        drop(mine, mine_dir)
        drop(theirs, their_dir)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vshx-bench-", dir="/var/tmp") as tmp:
        for running, shared, who, target in (
            (True, False, "`virsh blockpull --wait`", ">= 10x"),
            (False, False, '`qemu-img rebase -b ""`', ">= 10x"),
            (True, True, "`virsh blockpull --wait`", "within 1.05x"),
            (False, True, '`qemu-img rebase -b ""`', "within 1.05x"),
        ):
            runs = [one(Path(tmp), running, shared) for _ in range(RUNS)]
            vshx_s = statistics.median(r["vshx"] for r in runs)
            their_s = statistics.median(r["theirs"] for r in runs)
            ratio = their_s / vshx_s
            rows.append(
                f"| {'live' if running else 'offline'}, base {'shared' if shared else 'private'} "
                f"| {vshx_s:.2f} s (plan: {runs[0]['plan']}) | {who}: {their_s:.2f} s "
                f"(wrote {runs[0]['their_alloc']}) | **{ratio:.1f}x** faster (target {target}) |"
            )
    body = "\n".join(
        [
            "## Flatten (bench/flatten.py)",
            "",
            f"A lab whose base holds {BASE_MIB} MiB of data under 4 overlays of {FILL_MIB} MiB",
            f"each; median of {RUNS} runs, each side on its own fresh identical lab.",
            "",
            "| case | vshx flatten | what users run | ratio |",
            "|---|---|---|---|",
            *rows,
            "",
            "With a private base `flatten --route commit` commits the overlays down (MiB) instead",
            "of pulling the base up (GiB; without `--route` vshx pulls too: the commit would end",
            "the lab's snapshots' moments); with a shared base the planner takes the pull that",
            "virsh/qemu-img make.",
        ]
    )
    write_section("flatten", body)


if __name__ == "__main__":
    main()
