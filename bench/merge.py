"""Merge cost: vshx against virsh / qemu-img on identical fresh practice labs, in one run.

* Small live merge end to end (process start to exit): `vshx commit` waits on libvirt's
  BLOCK_JOB_2 event; `virsh blockcommit --wait` polls every 500 ms; and the floor:
  libvirt-python alone doing the same (target, issue 16: vshx within 1.3x of the floor),
  each vshx run once as a process of its own (`VSHX_WARM=off`) and once handed to a warm
  server started for these rows (`vshx --warm start`: frontends/warm_server.py).
* A batch file of 5 small commits on 5 domains against 5 virsh runs (target: >= 5x).
* 1 GiB moved, live: vshx against `virsh blockcommit --wait` (target: within 5 %).
* 4 GiB moved, offline: vshx against `qemu-img commit` + `qemu-img rebase -u` (within 5 %).

The tools of one row take turns going first from run to run (the host's load drifts).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import URI, VSHX, drop_lab, make_lab, settle, time_command, write_section

SMALL_RUNS = 9  # medians of 5 moved by 20 % between runs on this 2-core host
LARGE_RUNS = 2
HUGE_RUNS = 1
BATCH_RUNS = 3
BATCH_DOMAINS = 5


def lab(tmp: Path, running: bool, fill: int = 0, layers: int = 4) -> tuple[str, Path]:
    return make_lab(tmp, running, "--layers", str(layers), "--fill", str(fill))


drop = drop_lab


FLOOR = [sys.executable, str(Path(__file__).resolve().parent / "floor_commit.py")]


def commands(
    tool: str, name: str, d: Path, base: str, top: str, above: str | None
) -> list[list[str]]:
    """The command lines one tool runs for the same commit (in order, timed together)."""
    base_file, top_file = str(d / f"{base}.qcow2"), str(d / f"{top}.qcow2")
    if tool in ("vshx", "vshx-warm"):
        return [[*VSHX, "-c", URI, "-q", "commit", name, "vda", "--base", base, "--top", top]]
    if tool == "virsh":
        virsh = ["virsh", "-c", URI, "blockcommit", name, "vda", "--base", base_file]
        return [[*virsh, "--top", top_file, "--wait"]]
    if tool == "floor":
        return [[*FLOOR, URI, name, "vda", base_file, top_file]]
    argvs = [["qemu-img", "commit", "-q", "-f", "qcow2", "-b", base_file, top_file]]
    if above is not None:  # what vshx also does: point the layer above at the base
        rebase = ["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", base_file]
        argvs.append([*rebase, str(d / f"{above}.qcow2")])
    return argvs


HANG_SECONDS = 120  # a small merge that takes this long hung: it is killed and done again
HANGS: list[str] = []  # the tools whose run hung (and was done again on a fresh lab)


class Hung(Exception):
    """A command still ran after HANG_SECONDS (virsh --wait, seen here: its job had ended,
    libvirt listed none, and it kept polling for an event it never got)."""


# vshx without a warm server (every run loads its modules); "vshx-warm" runs use the server
COLD = {**os.environ, "VSHX_WARM": "off"}


def timed(argvs: list[list[str]], env: dict[str, str] | None = None) -> tuple[float, str, float]:
    """Wall seconds of the commands run one after the other, the last one's output, and the
    CPU seconds they used (user + system: what the tool itself costs, whatever it waits for;
    a warm run's fork is the server's child, so only its client counts there)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = ""
    for argv in argvs:
        try:
            run = subprocess.run(
                argv, check=True, capture_output=True, text=True, timeout=HANG_SECONDS, env=env,
                start_new_session=True,  # as a script runs them: no controlling terminal
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise Hung(argv[0]) from None
        out = run.stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, out, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def lab_reads_ms(tmp: Path, runs: int = 20) -> tuple[float, float]:
    """Median ms, in one process on a running 4-snapshot lab: of one read of its snapshots as
    a plan makes it (one listAllSnapshots, one getXMLDesc per snapshot, each XML parsed:
    Target.snapshots); and of one ``virDomainSetMetadata`` of a small element into the live
    and the persistent definition, as vshx writes its journal and its record (a commit makes
    three: the journal before the job, the record and the journal's removal after it)."""
    name, d = lab(tmp, True)
    code = (
        "import statistics, sys, time\n"
        "import libvirt\n"
        "from vshx.storage import virt\n"
        "from vshx.storage.moments import read_snapshots as read_all\n"
        "dom = virt.open_connection(sys.argv[1]).lookupByName(sys.argv[2])\n"
        "read_all(dom)\n"
        "reads, writes = [], []\n"
        "flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG\n"
        "ns, element = 'https://vshx.invalid/bench', libvirt.VIR_DOMAIN_METADATA_ELEMENT\n"
        "for i in range(int(sys.argv[3])):\n"
        "    start = time.perf_counter()\n"
        "    read_all(dom)\n"
        "    reads.append(time.perf_counter() - start)\n"
        "    xml = f'<run n=\"{i}\"/>' if i % 2 == 0 else None\n"
        "    start = time.perf_counter()\n"
        "    dom.setMetadata(element, xml, 'vb' if xml else None, ns, flags)\n"
        "    writes.append(time.perf_counter() - start)\n"
        "dom.setMetadata(element, None, None, ns, flags)\n"
        "print(statistics.median(reads) * 1000, statistics.median(writes) * 1000)\n"
    )
    try:
        python = str(Path(VSHX[0]).parent / "python")
        run = subprocess.run(
            [python, "-c", code, URI, name, str(runs)], check=True, capture_output=True, text=True
        )
        read_ms, write_ms = (float(x) for x in run.stdout.split())
        return read_ms, write_ms
    finally:
        drop(name, d)


# What a one-shot live commit imports (python -X importtime of one run, vshx's modules and the
# standard library's beyond the floor's): their load alone, as a process, against the floor's.
# in the program's order (vshx/frontends/launch.py): libvirt's libraries start loading on a
# thread first, vshx's modules load meanwhile, libvirt's Python part once the loader is done
ONE_SHOT_IMPORTS = (
    "from vshx.storage import preload; preload.load_libvirt_ahead(); "
    "import threading, vshx.frontends.cli, vshx.shell.session, vshx_plugins.commit, "
    "vshx.plans.runner, vshx.plans.lock, vshx.plans.ledger, vshx.storage.allocation; "
    "preload.wait_for_libvirt(); import libvirt, vshx.plans.blockjob"
)


def import_ms(runs: int = 15) -> tuple[float, float, float]:
    """Medians (ms) of `python -c pass`, `import libvirt, threading` (what the floor loads)
    and the imports of a one-shot vshx commit, each a whole process, taking turns."""
    python = str(Path(VSHX[0]).parent / "python")
    # vshx's program ends with os._exit (vshx/frontends/cli.py run): its imports are timed
    # ending the same way; the floor's as the floor ends
    codes = ("pass", "import libvirt, threading", f"{ONE_SHOT_IMPORTS}; import os; os._exit(0)")
    samples: list[list[float]] = [[], [], []]
    for _ in range(runs):
        for i, code in enumerate(codes):
            samples[i] += time_command([python, "-c", code], 1, warmup=0)
    first, second, third = (statistics.median(s) * 1000 for s in samples)
    return first, second, third


def compare(
    tmp: Path, running: bool, fill: int, layers: int, top: str, base: str, tools: tuple[str, ...]
) -> list[tuple[float, str, float]]:
    """Time each tool on its own identical fresh lab (lab creation not timed)."""
    above = f"sn{int(top[2:]) + 1}" if int(top[2:]) < layers else None
    global TURN
    TURN += 1
    results: dict[str, tuple[float, str, float]] = {}
    order = tools[TURN % len(tools) :] + tools[: TURN % len(tools)]
    for tool in order:
        for _attempt in range(3):
            name, d = lab(tmp, running, fill, layers)
            settle([name])
            try:
                if tool == "vshx" and fill == 0:
                    PROBES.append(timed([["virsh", "-c", URI, "list", "--all", "--name"]])[0])
                env = COLD if tool == "vshx" else None
                results[tool] = timed(commands(tool, name, d, base, top, above), env)
                break
            except Hung:
                HANGS.append(tool)
            finally:
                drop(name, d)
        else:
            raise SystemExit(f"{tool} hung three times running the same merge")
    return [results[tool] for tool in tools]


TURN = 0
LOADS: list[float] = []
PROBES: list[float] = []  # `virsh list --all` just before each small vshx run: lock waits


def batch(tmp: Path, domains: int) -> tuple[float, float, float]:
    """One `vshx -f` of N commits on N domains (one line each: their block jobs overlap), the
    same N commits on one line joined by `;` (one after the other), and N `virsh blockcommit
    --wait` runs; each side on its own N fresh labs, the others' torn down (same host load)."""
    times = {}
    tools = ("vshx", "vshx-serial", "virsh")
    turn = len(LOADS) % len(tools)
    LOADS.append(os.getloadavg()[0])
    for tool in tools[turn:] + tools[:turn]:
        for _attempt in range(3):
            labs = [lab(tmp, True) for _ in range(domains)]
            settle([name for name, _d in labs])
            try:
                if tool.startswith("vshx"):
                    script = tmp / "batch.vshx"
                    lines = [f"commit {name} vda --base sn1 --top sn3" for name, _d in labs]
                    joined = "\n".join(lines) if tool == "vshx" else " ; ".join(lines)
                    script.write_text(joined + "\n")
                    times[tool] = timed([[*VSHX, "-c", URI, "-q", "-f", str(script)]], COLD)[0]
                else:
                    argvs = [commands("virsh", n, d, "sn1", "sn3", "sn4")[0] for n, d in labs]
                    times[tool] = timed(argvs)[0]
                break
            except Hung:
                HANGS.append(tool)
            finally:
                for name, d in labs:
                    drop(name, d)
        else:
            raise SystemExit(f"{tool} hung three times running the same batch")
    return times["vshx"], times["virsh"], times["vshx-serial"]


def main() -> None:
    """Every row; ``merge.py small`` runs only the small and batch rows (the large rows keep
    their own section, written by a full run)."""
    only_small = sys.argv[1:] == ["small"]
    with tempfile.TemporaryDirectory(prefix="vshx-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        small = []
        subprocess.run([*VSHX, "--warm", "start", "--idle", "30"], check=True)
        try:
            for _ in range(SMALL_RUNS):
                LOADS.append(os.getloadavg()[0])
                tools = ("vshx", "virsh", "floor", "vshx-warm")
                small.append(compare(tmp, True, 0, 4, "sn3", "sn1", tools))
        finally:
            subprocess.run([*VSHX, "--warm", "stop"], check=True)
        many = [batch(tmp, BATCH_DOMAINS) for _ in range(BATCH_RUNS)]
        small_section(small, many, lab_reads_ms(tmp), import_ms())
        if only_small:
            return
        live = [
            compare(tmp, True, 1024, 3, "sn2", "sn1", ("vshx", "virsh")) for _ in range(LARGE_RUNS)
        ]
        offline = [
            compare(tmp, False, 4096, 2, "sn1", "base", ("vshx", "qemu-img"))
            for _ in range(HUGE_RUNS)
        ]
        large_section(live, offline)


Rows = list[list[tuple[float, str, float]]]


def med(rows: Rows, i: int, field: int = 0) -> float:
    """The median wall (field 0) or CPU (field 2) seconds of tool ``i`` over ``rows``."""
    return statistics.median(float(r[i][field]) for r in rows)


def small_section(
    small: Rows,
    many: list[tuple[float, float, float]],
    lab_reads: tuple[float, float],
    imports: tuple[float, float, float],
) -> None:
    snapshots_ms, metadata_ms = lab_reads
    job_ms = statistics.median(float(r[2][1]) for r in small)
    python_ms, libvirt_ms, vshx_imports_ms = imports
    vshx_ms, virsh_ms, floor_ms, warm_ms = (med(small, i) * 1000 for i in range(4))
    vshx_cpu, floor_cpu = (med(small, i, 2) * 1000 for i in (0, 2))
    batch_vshx = statistics.median(r[0] for r in many)
    batch_virsh = statistics.median(r[1] for r in many)
    batch_serial = statistics.median(r[2] for r in many)
    domains = subprocess.run(
        ["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True
    ).stdout.split()
    load = statistics.median(LOADS)
    probe_ms, probe_max_ms = statistics.median(PROBES) * 1000, max(PROBES) * 1000
    fast_vshx, fast_floor, fast_warm = (min(r[i][0] for r in small) * 1000 for i in (0, 2, 3))
    hangs = (
        f"Runs that hung (killed after {HANG_SECONDS} s and done again on fresh labs, not in "
        f"the medians): {', '.join(sorted(set(HANGS)))} ({len(HANGS)} in all)."
        + (
            " A hung `virsh blockcommit --wait`, looked at on 2026-12-02, had its job done "
            "(libvirt listed none, the chain was short) and kept polling every 500 ms for "
            "the completion event it never got."
            if "virsh" in HANGS
            else ""
        )
        if HANGS
        else ""
    )
    body = f"""## Merges (bench/merge.py)

Each row: the same merge on identical fresh labs, one per tool, timed from process start
to exit (lab creation not timed); medians; the tools of a row take turns going first. Each
tool starts once its labs' guests are idle (`settle` in bench/common.py): a freshly started
lab guest's firmware keeps a core busy for ~3 s, which is not the state of a domain whose chain
an admin shortens, and on 2 cores it slows vshx's checks far more than the floor's one call.

| merge | vshx | reference | ratio |
|---|---|---|---|
| small live commit (sn3,sn2 into sn1), {SMALL_RUNS} runs | {vshx_ms:.0f} ms | \
`virsh blockcommit --wait`: {virsh_ms:.0f} ms | virsh / vshx = **{virsh_ms / vshx_ms:.1f}x** |
| the same, floor: `floor_commit.py` (import libvirt, open, register the BLOCK_JOB_2 event, \
blockCommit, wait for the event; the job alone took {job_ms:.0f} ms of it) | {vshx_ms:.0f} ms | \
floor: {floor_ms:.0f} ms | vshx / floor = **{vshx_ms / floor_ms:.2f}x** (no warm server) |
| the same, warm: `vshx --warm start` once, then each run a fresh `vshx` process handing the \
command to the server's fork (same checks, same journal, own connection) | {warm_ms:.0f} ms | \
floor: {floor_ms:.0f} ms | vshx / floor = **{warm_ms / floor_ms:.2f}x** (target <= 1.3x) |
| the same, CPU time (user + system) of each process | {vshx_cpu:.0f} ms | \
floor: {floor_cpu:.0f} ms | vshx / floor = **{vshx_cpu / floor_cpu:.2f}x** |
| batch: {BATCH_DOMAINS} small commits on {BATCH_DOMAINS} domains, one `vshx -f`, \
{BATCH_RUNS} runs | {batch_vshx:.2f} s | {BATCH_DOMAINS} x `virsh blockcommit --wait`: \
{batch_virsh:.2f} s | virsh / vshx = **{batch_virsh / batch_vshx:.1f}x** (target >= 5x) |
| the same 5 commits on one line joined by `;` (one after the other: no overlap) | \
{batch_serial:.2f} s | 5 x `virsh blockcommit --wait`: {batch_virsh:.2f} s | virsh / vshx = \
**{batch_virsh / batch_serial:.1f}x** |

Host during these rows: 1-minute load average {load:.1f} (median) on {os.cpu_count()} cores,
{len(domains)} domains defined after the run (vshx's usage scan reads every one of them; the
floor and virsh read none). `virsh list --all`, run just before each small vshx run, took
{probe_ms:.0f} ms median, {probe_max_ms:.0f} ms at most: libvirt answers a list only when it
can lock every domain, so that is the wait a scan of every domain meets at that moment.
Fastest small vshx run: {fast_vshx:.0f} ms (warm: {fast_warm:.0f} ms); fastest floor run: \
{fast_floor:.0f} ms.
{hangs}

The warm row is the target's row: the same `vshx commit` command line, a fresh `vshx` process
each run, with a warm server started once before the rows (`vshx --warm start`,
frontends/warm_server.py). The process hands the command to the server, which forks; the fork
runs the same code as the cold row (every check, the journal before the job and the record
after it, its own libvirt connection, opened per command), only without loading Python's,
libvirt-python's and vshx's modules again. Its CPU time is not in the CPU row (the fork is
the server's child, not the benchmark's). Without a server (the cold row, `VSHX_WARM=off`)
each run loads them, and that row stays above 1.3x: what loading costs is below.

Where the cold row stands (same run, each a whole process, medians of 15): `python -c pass`
takes {python_ms:.0f} ms; loading what the floor loads (`import libvirt, threading`)
{libvirt_ms:.0f} ms; loading the modules a one-shot vshx commit loads, and nothing else
(no connection, no check, no job; in the program's order: libvirt's libraries loading on a
thread meanwhile; ended with `os._exit`, as the `vshx` program ends),
{vshx_imports_ms:.0f} ms: **{vshx_imports_ms - libvirt_ms:.0f} ms of imports** beyond the floor's,
against the {0.3 * floor_ms:.0f} ms that 1.3x of this
run's floor leaves for everything vshx adds (imports, checks, journal, record). The list is
`ONE_SHOT_IMPORTS` in bench/merge.py, taken from `python -X importtime` of one run.
One `virDomainSetMetadata` into the live and the persistent definition of a running lab
(median of 20, one process) takes {metadata_ms:.1f} ms: the journal before the job and the record
and the journal's removal after it, the writes that make a commit recoverable after a kill,
are {3 * metadata_ms:.0f} ms of libvirt's own work. With the imports that is
{vshx_imports_ms - libvirt_ms + 3 * metadata_ms:.0f} ms of the {0.3 * floor_ms:.0f} ms \
before any check reads anything.

A plan's read of the domain's snapshots (one `listAllSnapshots`, one `getXMLDesc` per
snapshot, each parsed) takes {snapshots_ms:.1f} ms on a lab with 4 snapshots (median of 20, in
one process). A plan makes it once (`Target.snapshots()`): the saved-state check, the usage
scan (the domain's own snapshot files are no users) and any other check of that plan answer
from it.

What vshx adds over the floor, and why it stays (`bench/trace_commit.py` lists each libvirt call
of one run with its wait): the usage scan lists every domain and reads each one's XML, every
pool and every image directory (issue 23: by file identity); libvirt answers each of those only
when it can lock that domain, so while other domains on the host start or change, vshx waits for
them and the floor does not. Those reads start on a thread as soon as the chain's lock is held,
so their wait overlaps the chain read, the definition check, the journal check, the allocation
map and the saved-state check. The journal is one `virDomainSetMetadata` before the job and one
after it, beside the record of moments after it (libvirt saves each to disk, the live state and
the persistent definition, with an fsync each: on this VM even /run/libvirt is on disk, so each
call took 2-15 ms here, the largest wait vshx adds); the definition check, the journal check and
the record of moments all read the one domain XML read under the chain's lock; the saved-state
check, the bitmaps check and the chain lock are a few more round trips; and vshx's own modules
load (the records of a commit's path are NamedTuples: `dataclasses`, with `inspect`, cost ~10 ms
of imports; pluggy is not loaded where no installed plugin has hooks beyond registering
commands). The connection opens on the thread that maps libvirt's libraries, once they are in
(a thread started while the dynamic loader works waits for it, glibc's loader lock, and so did
the main thread that started it: ~6 ms of a one-shot), and the background reads start their
threads without `threading`'s start handshake. The `vshx` program skips the interpreter's
teardown of the modules it loaded (`os._exit` after exit handlers and a flush: ~10 ms of a
one-shot here; the floor pays its own), and leaves its connection to the process's end (its
close was a round trip).
None of the checks is skipped for speed; in a batch every line pays them again (another tool may
act between lines, and libvirt offers no cheap proof that nothing changed: `virsh
snapshot-create-as --disk-only` gives a running domain a new disk file without any event, as
`virsh event --all` shows, and qcow2 files in the scanned directories change with no event at
all), so a batch reads everything again per line. What a batch saves is the start-up per line
and, as lines on other domains and files overlap their waits (vshx/plans/overlap.py: one line
runs vshx's code at a time; the next is checked while the last one waits for its usage scan's
libvirt reads or its job; none changes anything before every line above it has begun its
changes), the waits and the jobs but the last's. virsh `--wait` instead sleeps 500 ms between
`virDomainGetBlockJobInfo` polls (strace of one run here: it started the job, printed 0 %, slept
500 ms in one `clock_nanosleep`, polled again and found the job over; its event thread had woken
21 ms after the start), so each virsh run takes at least half a second whatever the job.
"""
    write_section("merge", body)


def large_section(live: Rows, offline: Rows) -> None:
    body = f"""## Large merges (bench/merge.py)

| merge | vshx | reference | ratio |
|---|---|---|---|
| 1 GiB live commit (sn2 into sn1), {LARGE_RUNS} runs | {med(live, 0):.2f} s | \
`virsh blockcommit --wait`: {med(live, 1):.2f} s | vshx / virsh = \
**{med(live, 0) / med(live, 1):.3f}** (target <= 1.05) |
| 4 GiB offline commit (sn1 into base), {HUGE_RUNS} run | {med(offline, 0):.2f} s | \
`qemu-img commit` + `qemu-img rebase -u`: {med(offline, 1):.2f} s | vshx / qemu-img = \
**{med(offline, 0) / med(offline, 1):.3f}** (target <= 1.05) |

Labs: base <- sn1 <- ... (active); these rows write 1 GiB (live) or 4 GiB (offline) into
each snapshot layer. vshx's offline run is `qemu-img commit` plus the pointer-only
`qemu-img rebase -u` of the layer above, as the reference's; vshx's pre-flight checks (chain,
other users, free space, the allocation map for the bytes it states) are inside its time.
The allocation map is read from the qcow2 L1/L2 tables (`vshx/storage/allocation.py`); a
`qemu-img map` process runs only where the tables cannot tell (raw base, encryption, an
external data file, subclusters).
"""
    write_section("merge-large", body)


if __name__ == "__main__":
    sys.exit(main())
