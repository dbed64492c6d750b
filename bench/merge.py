"""Merge cost: vshx against virsh / qemu-img on identical fresh practice labs, in one run.

* Small live merge end to end (process start to exit): `vshx commit` waits on libvirt's
  BLOCK_JOB_2 event; `virsh blockcommit --wait` polls every 500 ms (target: vshx >= 5x faster).
* 1 GiB moved, live: vshx against `virsh blockcommit --wait` (target: within 5 %).
* 1 GiB moved, offline: vshx against raw `qemu-img commit` (target: within 5 %).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import URI, VSHX, drop_lab, make_lab, write_section

SMALL_RUNS = 5
LARGE_RUNS = 2


def lab(tmp: Path, running: bool, fill: int = 0, layers: int = 4) -> tuple[str, Path]:
    return make_lab(tmp, running, "--layers", str(layers), "--fill", str(fill))


drop = drop_lab


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def pair(
    tmp: Path, running: bool, fill: int, layers: int, top: str, base: str, other: str
) -> tuple[float, float]:
    """Time vshx and the reference tool on two identical fresh labs."""
    results = []
    for tool in ("vshx", other):
        name, d = lab(tmp, running, fill, layers)
        try:
            if tool == "vshx":
                argv = [*VSHX, "-c", URI, "-q", "commit", name, "vda", "--base", base, "--top", top]
            elif tool == "virsh":
                argv = [
                    "virsh",
                    "-c",
                    URI,
                    "blockcommit",
                    name,
                    "vda",
                    "--base",
                    str(d / f"{base}.qcow2"),
                    "--top",
                    str(d / f"{top}.qcow2"),
                    "--wait",
                ]
            else:
                argv = [
                    "qemu-img",
                    "commit",
                    "-q",
                    "-f",
                    "qcow2",
                    "-b",
                    str(d / f"{base}.qcow2"),
                    str(d / f"{top}.qcow2"),
                ]
            results.append(timed(argv))
        finally:
            drop(name, d)
    return results[0], results[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vshx-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        small = [pair(tmp, True, 0, 4, "sn3", "sn1", "virsh") for _ in range(SMALL_RUNS)]
        live = [pair(tmp, True, 1024, 3, "sn2", "sn1", "virsh") for _ in range(LARGE_RUNS)]
        offline = [pair(tmp, False, 1024, 3, "sn2", "sn1", "qemu-img") for _ in range(LARGE_RUNS)]

    def med(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    body = f"""## Merges (bench/merge.py)

Each row: the same merge on two identical fresh labs, one per tool, timed from process start
to exit (lab creation not timed); medians.

| merge | vshx | reference | ratio |
|---|---|---|---|
| small live commit (sn3,sn2 into sn1), {SMALL_RUNS} runs | {med(small, 0) * 1000:.0f} ms | \
`virsh blockcommit --wait`: {med(small, 1) * 1000:.0f} ms | virsh / vshx = \
**{med(small, 1) / med(small, 0):.1f}x** (target >= 5x) |
| 1 GiB live commit (sn2 into sn1), {LARGE_RUNS} runs | {med(live, 0):.2f} s | \
`virsh blockcommit --wait`: {med(live, 1):.2f} s | vshx / virsh = \
**{med(live, 0) / med(live, 1):.3f}** (target <= 1.05) |
| 1 GiB offline commit (sn2 into sn1), {LARGE_RUNS} runs | {med(offline, 0):.2f} s | \
`qemu-img commit`: {med(offline, 1):.2f} s | vshx / qemu-img = \
**{med(offline, 0) / med(offline, 1):.3f}** (target <= 1.05) |

Labs: base <- sn1 <- sn2 <- sn3 (active), 1 GiB written into each snapshot layer. vshx's
offline run is `qemu-img commit` plus the pointer-only `qemu-img rebase -u` of sn3, and its
pre-flight checks (chain, other users, free space) are inside the measured time.
"""
    write_section("merge", body)


if __name__ == "__main__":
    sys.exit(main())
