"""tp-libvirt's blockcommit/blockpull/blockjob/blockcopy matrices, differential: every variant
that applies to local file-backed disks (tests/test_differential_matrix.py) runs on two identical
fresh labs, its lines by real virsh on one and pasted into vshx (``vshx -f -``, in the lab's
directory) on the other; then both labs must agree on: each line's success, the chain (qemu-img's
word), the guest's data, the files in the lab directory (name, format, backing name), the live
and the persistent domain XML (normalised: the lab directory, the domain's name, id and uuid, the
snapshot creation times), the block jobs (type, bandwidth) and the snapshot metadata.

Variants whose lines are the same on our lab (``with_ga`` and ``no_ga`` differ only by a guest
agent) share one lab pair.  Each runs in the domain state tp-libvirt's script uses (running;
blockcopy and blockjob: transient); the variants in IN_EVERY_STATE also run in the other two of
running, paused and transient; VSHX_DIFF_SLICE=0..5 adds a fixed sixth of the other runs (a
stable hash of the run's name picks it; none unless set;
``make test`` turns it with the day of the year).
``VSHX_DIFF_STATES=all`` (``make test-differential``) runs every variant in all three.  A script
that restarts the domain first (``virsh destroy``, ``virsh start``) does not run transient (a
transient domain is gone once destroyed), and runs paused by suspending it again before its
tested line.  Where vshx differs on purpose, KNOWN says which aspects may differ and
docs/virsh-differences.md gives the reason.

Run alone with ``pytest -m differential``.  No lab outlives the module (labs_removed checks
libvirt and the definition files libvirt 9.0 writes back for transient domains).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt
import pytest
from conftest import URI, Lab, destroy_lab, flush_guest, guest_hash, labs_left, make_lab
from test_differential_matrix import TESTED, Scenario, Variant, all_variants, matches

pytestmark = [pytest.mark.libvirt, pytest.mark.differential]

HUNG = -999  # a line that never returned
LEDGER_NS = "https://vshx.invalid/moments"  # vshx's record of snapshot moments (documented)
DOC = Path(__file__).resolve().parent.parent / "docs" / "virsh-differences.md"

# (tp-libvirt variant pattern, aspects that differ, the docs/virsh-differences.md row saying why)
NO_WAIT = "`blockcommit`/`blockpull` without `--wait`"
ACTIVE = "`--active` (or `--active --wait`) without `--pivot`/`--keep-overlay`"
OFFLINE = "`blockcommit`/`blockpull` on a shut-off domain"
TIMEOUT = "`--timeout N` on a job that ends near N seconds"
MIRROR = frozenset({"chain", "jobs", "live xml", "persistent xml", "files", "snapshots"})
KNOWN: list[tuple[str, frozenset[str], str]] = [
    # the pull runs at 1 MiB/s and virsh returns at once; vshx waits for its end, so the
    # snapshot taken next is refused on virsh's lab (a job runs) and made on vshx's
    ("virsh_blockpull.cfg.error_test.snap_in_mirror", MIRROR | {"status"}, NO_WAIT),
    # virsh leaves the active commit mirroring ("Now in synchronized phase"); vshx pivots
    ("virsh_blockcommit.cfg..top_active.without_pivot", MIRROR, ACTIVE),
    ("virsh_blockcommit.cfg.error_test.snap_in_mirror", MIRROR | {"status"}, ACTIVE),
    # virsh: "domain is not running"; vshx commits offline with qemu-img
    ("virsh_blockcommit.cfg.error_test.vm_shutoff", MIRROR | {"status"}, OFFLINE),
]  # fmt: skip


# every variant runs in the state tp-libvirt's script uses; by default these also run in the
# other two: one variant per kind of job and ending (commit, active commit pivot /
# keep-overlay, pull with and without a base, copy pivot / finish / shallow, blockjob pivot /
# abort); of the other (variant, state) runs a fixed sixth (SLICES) runs when
# VSHX_DIFF_SLICE=0..5 names one (`make test DIFF_SLICE=N`; none by default, which keeps
# `make test` within its 30 minutes on 2 cores);
# VSHX_DIFF_STATES=all runs every one
IN_EVERY_STATE = {
    "normal_test.single_chain.file_disk.local.with_ga.notimeout.base.top_inactive",
    "normal_test.single_chain.file_disk.local.with_ga.notimeout.shallow.top_active.with_pivot",
    "normal_test.single_chain.file_disk.local.with_ga.notimeout.base_as_middle.top_active.with_pivot",
    "normal_test.file_disk.local.notimeout.base_snap_one.no_bandwidth",
    "normal_test.file_disk.local.notimeout.nobase.async",
    "positive_test.pivot_option",
    "positive_test.abort_option",
    "positive_test.non_acl.local_disk.no_blockdev.no_shallow.pivot_option",
    "positive_test.non_acl.local_disk.no_blockdev.no_shallow.finish_option",
    "positive_test.non_acl.local_disk.no_blockdev.shallow.pivot_option",
}
STATES = ("running", "paused", "transient")
SLICES = 6


def slice_of(variant: Variant, state: str) -> int:
    """A run's slice: a stable hash of its name, the same on every machine and every worker."""
    digest = hashlib.sha256(f"{variant.cfg}.{variant.name}.{state}".encode()).digest()
    return digest[0] % SLICES


def scenarios(
    every: bool | None = None, chosen: int | None = None
) -> list[tuple[Scenario, str, list[Variant]]]:
    """One run per distinct (lines, shape, state), with every variant it stands for: the
    default tier, or every state of every variant (``every``, VSHX_DIFF_STATES=all)."""
    if every is None:
        every = os.environ.get("VSHX_DIFF_STATES") == "all"
    if chosen is None:
        chosen = int(os.environ.get("VSHX_DIFF_SLICE") or "-1")  # -1: no slice
    groups: dict[tuple[Scenario, str], list[Variant]] = {}
    for variant in all_variants():
        if variant.scenario is not None:
            home = variant.scenario.state
            for state in states_of(variant.scenario) if home in STATES else [home]:
                groups.setdefault((variant.scenario, state), []).append(variant)
    return [
        (s, state, vs)
        for (s, state), vs in groups.items()
        if every
        or state == s.state
        or any(v.name in IN_EVERY_STATE for v in vs)
        or slice_of(vs[0], state) == chosen
    ]


RESTART = "virsh start {d}"  # a script that restarts the domain first (virsh destroy, start)


def states_of(scenario: Scenario) -> list[str]:
    """The states a scenario runs in: all three, but a script that restarts the domain needs it
    persistent (a transient domain is gone once destroyed), as tp-libvirt's own script does."""
    return [s for s in STATES if s != "transient" or RESTART not in scenario.lines]


def lines_in(scenario: Scenario, state: str) -> list[str]:
    """The scenario's lines in ``state``: a paused domain the script restarts is paused again
    before the first tested line after that restart."""
    lines = list(scenario.lines)
    if state == "paused" and RESTART in lines:
        after = len(lines) - lines[::-1].index(RESTART)
        tested = next(i for i in range(after, len(lines)) if lines[i].split()[0] in TESTED)
        lines.insert(tested, "virsh suspend {d}")
    return lines


def run_id(scenario: Scenario, state: str, variants: list[Variant]) -> str:
    first = variants[0]
    more = f"+{len(variants) - 1}" if len(variants) > 1 else ""
    tail = "" if state == scenario.state else f"-{state}"
    return f"{first.cfg[6:-4]}:{first.name}{more}{tail}"


RUNS = scenarios()


# --- labs ------------------------------------------------------------------------------------

SHAPES = {"chain": 3, "deep": 6, "copy": 1, "reuse": 1}


def build(tmp: Path, shape: str, state: str) -> Lab:
    """A lab as tp-libvirt's script prepares its domain, in ``state``."""
    layers = SHAPES[shape]
    if shape == "deep":  # backing files named relatively (backing_file_relative_path)
        lab = make_lab(tmp, running=False, layers=layers)
        lab.relative_backing_names()
        sh(lab, "virsh start {d}")
        lab.running = True
    else:
        lab = make_lab(tmp, running=state != "shut off", layers=layers)
    MADE.append(lab.name)
    if shape == "reuse":  # create_reuse_external_snapshots: b/b.img <- c/c.img <- d/d.img
        below = "../sn1.qcow2"
        for sub in "bcd":
            (lab.dir / sub).mkdir()
            sh(lab, f"qemu-img create -q -f qcow2 -F qcow2 -b {below} {{dir}}/{sub}/{sub}.img")
            below = f"../{sub}/{sub}.img"
        for sub in "bcd":
            sh(lab, f"virsh snapshot-create-as {{d}} snap-{sub} --reuse-external --disk-only "
                    f"--no-metadata --diskspec vda,file={{dir}}/{sub}/{sub}.img")  # fmt: skip
    if state == "paused":
        sh(lab, "virsh suspend {d}")
    elif state == "transient":
        sh(lab, "virsh undefine {d} --snapshots-metadata")
    return lab


def fill(lab: Lab, line: str, marks: dict[str, str]) -> list[str]:
    names = {f"sn{i}": str(lab.layer(f"sn{i}")) for i in range(1, 7)}
    text = line.format(d=lab.name, dir=lab.dir, base=lab.layer("base"),
                       dest=lab.dir / "copy.img", **names, **marks)  # fmt: skip
    return shlex.split(text)


def sh(lab: Lab, line: str, marks: dict[str, str] | None = None) -> int:
    """A set-up or check line, the same on both labs: virsh, qemu-img or rm."""
    argv = fill(lab, line, marks or {})
    if argv[0] == "virsh":
        argv = ["virsh", "-c", URI, *argv[1:]]
    return subprocess.run(argv, capture_output=True, cwd=lab.dir).returncode


def domain(conn: libvirt.virConnect, lab: Lab) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(lab.name)
    except libvirt.libvirtError:
        return None


def action(conn: libvirt.virConnect, lab: Lab, line: str, marks: dict[str, str]) -> int:
    """The script's own steps: @settle, @index, @source FILE FMT [BACKING], @snapshot FILE."""
    words = fill(lab, line, marks)
    dom = domain(conn, lab)
    if words[0] == "@settle":
        settle(conn, lab)
    elif words[0] == "@index":  # the first backingStore's index, and the next ones
        disk = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk/backingStore")  # type: ignore[union-attr]
        first = int(disk.get("index", "1")) if disk is not None else 1
        marks.update({f"i{k}": str(first + k) for k in range(4)})
    elif words[0] == "@source":  # the inactive definition's vda on another file
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))  # type: ignore[union-attr]
        disk = root.find("./devices/disk")
        assert disk is not None
        disk.find("source").set("file", words[1])  # type: ignore[union-attr]
        disk.find("driver").set("type", words[2])  # type: ignore[union-attr]
        for store in disk.findall("backingStore"):
            disk.remove(store)
        if len(words) > 3:
            store = ET.SubElement(disk, "backingStore", type="file")
            ET.SubElement(store, "format", type="qcow2")
            ET.SubElement(store, "source", file=words[3])
            ET.SubElement(store, "backingStore")
        conn.defineXML(ET.tostring(root, encoding="unicode"))
    elif words[0] == "@snapshot":  # make_disk_snapshot: a guest write, then a disk-only snapshot
        name = Path(words[1]).stem
        pattern = 0x40 + int(hashlib.sha256(name.encode()).hexdigest()[:2], 16) % 0x30
        hmp = f'qemu-io -d virtio-disk0/virtio-backend "write -P {pattern} 4M 64k"'
        sh(lab, f"virsh qemu-monitor-command {{d}} --hmp {shlex.quote(hmp)}")
        spec = f"vda,snapshot=external,file={words[1]}"
        return sh(lab, f"virsh snapshot-create-as {{d}} {name} --disk-only --atomic "
                       f"--no-metadata --diskspec {spec}")  # fmt: skip
    else:
        raise AssertionError(f"unknown action {line}")
    return 0


def settle(conn: libvirt.virConnect, lab: Lab) -> None:
    """Wait until vda's block job has ended or is ready to pivot (or runs at a trickle)."""
    for _ in range(1200):
        dom = domain(conn, lab)
        if dom is None or not dom.isActive():
            return
        try:
            info = dom.blockJobInfo("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
        except libvirt.libvirtError:
            return
        if not info:
            return
        if 0 < info.get("bandwidth", 0) < 10 * 2**20:
            return
        mirror = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk/mirror")
        if mirror is not None and mirror.get("ready") == "yes":
            return
        time.sleep(0.05)


# --- one side ----------------------------------------------------------------------------------


LINE_LIMIT = 20  # seconds: a line that waits longer waits forever (a job at 50 bytes/s)


def bounded(argv: list[str], stdin: str | None, lab: Lab) -> tuple[int, str]:
    """Run a line in the lab's directory; one still waiting after LINE_LIMIT s is stopped
    by Ctrl-C (SIGINT) and reported as HUNG, which both sides must then be."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=lab.dir)  # fmt: skip
    try:
        out, _ = proc.communicate(stdin, timeout=LINE_LIMIT)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a user would: both abort the job
        try:
            out, _ = proc.communicate(timeout=LINE_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return HUNG, out


def play(
    conn: libvirt.virConnect, lab: Lab, scenario: Scenario, state: str, by: str
) -> list[tuple[str, int, str]]:
    """Run the scenario's lines in ``state`` on one lab; the tested ones by ``by`` (virsh or
    vshx)."""
    marks: dict[str, str] = {}
    said: list[tuple[str, int, str]] = []
    for line in lines_in(scenario, state):
        head = line.split()[0]
        if head in TESTED:
            argv = fill(lab, line, marks)
            if by == "virsh":
                argv = ["virsh", "-c", URI, *argv]
                stdin = None
            else:
                stdin = shlex.join(argv) + "\n"
                argv = [sys.executable, "-m", "vshx", "-c", URI, "-f", "-"]
            status, text = bounded(argv, stdin, lab)
            assert "Traceback" not in text, text
            said.append((line, status, text))
            settle(conn, lab)
        elif head.startswith("@"):
            said.append((line, action(conn, lab, line, marks), ""))
        else:
            said.append((line, sh(lab, line, marks), ""))
    return said


# --- what a lab ends as ------------------------------------------------------------------------


def normal_xml(text: str, lab: Lab) -> str:
    root = ET.fromstring(text.replace(str(lab.dir), "LAB").replace(lab.name, "DOM"))
    for node in root.iter():
        if node.tag in ("domain", "domainsnapshot"):
            node.attrib.pop("id", None)
        for child in list(node):
            if child.tag in ("uuid", "creationTime") or child.tag.startswith(f"{{{LEDGER_NS}}}"):
                node.remove(child)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def image_info(path: Path) -> tuple[str, str]:
    import json

    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        return ("unreadable", "")
    info = json.loads(proc.stdout)
    return (info.get("format", ""), info.get("backing-filename", ""))


def ending(conn: libvirt.virConnect, lab: Lab, tmp: Path) -> dict[str, Any]:
    """Everything the two labs are compared on."""
    dom = domain(conn, lab)
    live = dom is not None and dom.isActive()
    facts: dict[str, Any] = {"domain": "gone" if dom is None else ("active" if live else "off")}
    if dom is None:
        return facts
    facts["live xml"] = normal_xml(dom.XMLDesc(0), lab) if live else None
    facts["persistent xml"] = (
        normal_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), lab)
        if dom.isPersistent()
        else None
    )
    disk = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk/source")
    active = disk.get("file", "") if disk is not None else ""
    facts["chain"] = [e.replace(str(lab.dir), "LAB") for e in chain_of(active)]
    if live:
        info = dom.blockJobInfo("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
        facts["jobs"] = (info.get("type"), info.get("bandwidth")) if info else None
        if info:  # a mirror keeps the chain from any reader (QEMU's "consistent read" lock):
            abort(dom)  # end it as the user would, leaving the guest where it is
            active = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk/source").get("file", "")  # type: ignore[union-attr]
        flush_guest(lab.name)
    facts["guest"] = guest_hash(active, tmp) if active and os.path.exists(active) else None
    files = {}
    for path in sorted(lab.dir.rglob("*")):
        if path.is_file() and path.name != ".vshx-lab":
            fmt, backing = image_info(path)
            files[str(path.relative_to(lab.dir))] = (fmt, backing.replace(str(lab.dir), "LAB"))
    facts["files"] = files
    snaps = {}
    for snap in dom.listAllSnapshots(0):
        snaps[snap.getName()] = (snap.isCurrent(), normal_xml(snap.getXMLDesc(0), lab))
    facts["snapshots"] = snaps
    return facts


def abort(dom: libvirt.virDomain) -> None:
    """End vda's block job (no pivot) and wait until libvirt lists none."""
    try:
        dom.blockJobAbort("vda", 0)
    except libvirt.libvirtError:
        pass
    for _ in range(1200):
        if not dom.blockJobInfo("vda", 0):
            return
        time.sleep(0.05)


def chain_of(path: str) -> list[str]:
    import json

    if not path:
        return []
    proc = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", "-U", path],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        return ["unreadable: " + path]
    return [e["filename"] for e in json.loads(proc.stdout)]


def explain(aspects: list[str], after: list[dict[str, Any]], said: list[Any]) -> str:
    """A readable account of a mismatch: each aspect as a diff, virsh's lab first."""
    import difflib
    import pprint

    out = [f"virsh and vshx end differently in: {', '.join(aspects)}"]
    if any(rc == HUNG for _line, rc, _text in said[0]):
        out.append(
            f"note: virsh still waited after {LINE_LIMIT} s; virsh --wait ends only on libvirt's "
            "block-job event: if `virsh event --all --loop` shows nothing while a domain is "
            "suspended and resumed, this libvirtd delivers no events and needs a restart"
        )
    for aspect in aspects:
        a, b = (pprint.pformat(side.get(aspect), width=100).splitlines() for side in after)
        out += difflib.unified_diff(a, b, f"{aspect} (virsh)", f"{aspect} (vshx)", lineterm="", n=2)
    for side, lines in zip(("virsh", "vshx"), said, strict=True):
        out += [f"--- {side} said:"] + [
            f"{rc}: {line}\n{text.strip()}" for line, rc, text in lines if text
        ]
    return "\n".join(out)


def differences(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def allowed(variants: list[Variant], state: str) -> set[str]:
    out: set[str] = set()
    for variant in variants:
        for pattern, aspects, _row in KNOWN:
            if matches(f"{variant.cfg}.{variant.name}.{state}", pattern):
                out |= aspects
    return out


REAPER = ThreadPoolExecutor(2)  # removes finished labs while the next run builds its own
REAPING: list[Future[None]] = []
MADE: list[str] = []  # every lab this module built, by name


@pytest.fixture(scope="module", autouse=True)
def labs_removed() -> Iterator[None]:
    """Every lab of this module is gone before the module ends: no domain, and no definition
    file libvirt would define again on its next start (conftest.forget_saved_definition)."""
    yield
    while REAPING:
        REAPING.pop().result()
    assert not labs_left(MADE), "labs outlived their tests:\n" + "\n".join(labs_left(MADE))


@pytest.mark.parametrize(
    ("scenario", "state", "variants"),
    RUNS,
    ids=[run_id(s, st, vs) for s, st, vs in RUNS],
)
def test_tp_libvirt_variant(
    tmp_path: Path, scenario: Scenario, state: str, variants: list[Variant]
):
    for attempt in range(3):
        after, said = run_once(tmp_path / f"try{attempt}", scenario, state)
        found = differences(*after)
        unexpected = found - allowed(variants, state)
        if not unexpected or timed_out(said) == (False, False):
            break
    else:
        # three times virsh's --timeout expired and vshx's did not: virsh polls every 500 ms
        # and waits for its own event, so on a loaded host it aborts (or fails to abort) a job
        # vshx, waiting on libvirt's event, has seen end (docs: TIMEOUT)
        if timed_out(said) == (True, False):
            return
    assert not unexpected, explain(sorted(unexpected), after, said)


def timed_out(said: list[list[tuple[str, int, str]]]) -> tuple[bool, bool]:
    """On which side a `--timeout` expired (virsh: "Commit aborted", or "failed to abort job"
    when the job ended just then; vshx: "timed out after").  tp's `--timeout 1` lines race the
    clock on a loaded host, so a mismatch where one side's expired is run again on fresh labs
    (three times at most) before it counts."""
    hit = [
        any(("abort" in text or "timed out after" in text) and "--timeout" in line
            for line, _rc, text in lines)
        for lines in said
    ]  # fmt: skip
    return hit[0], hit[1]


def run_once(
    tmp: Path, scenario: Scenario, state: str
) -> tuple[list[dict[str, Any]], list[list[tuple[str, int, str]]]]:
    """Two fresh labs, the lines by virsh on one and pasted into vshx on the other: how each
    ended, and what each line said."""
    with ThreadPoolExecutor(2) as pool:
        labs = list(
            pool.map(lambda side: build(tmp / side, scenario.shape, state), ("virsh", "vshx"))
        )
    conn = libvirt.open(URI)
    try:
        with ThreadPoolExecutor(2) as pool:
            before = list(pool.map(lambda lab: ending(conn, lab, tmp), labs))
            assert not differences(*before), "the two labs differ before the line"
            sides = pool.map(
                lambda lab, by: play(conn, lab, scenario, state, by), labs, ("virsh", "vshx")
            )
            said = list(sides)
            after = list(pool.map(lambda lab: ending(conn, lab, tmp), labs))
        for side, lines in zip(after, said, strict=True):
            side["status"] = [(line, "hung" if rc == HUNG else rc == 0) for line, rc, _ in lines]
        return after, said
    finally:
        conn.close()
        for lab in labs:  # QEMU takes a second or two to go: the next run need not wait
            REAPING.append(REAPER.submit(destroy_lab, lab))


def test_every_known_difference_is_documented():
    text = DOC.read_text(encoding="utf-8")
    assert TIMEOUT in text
    for _pattern, _aspects, row in KNOWN:
        assert row in text, row


def test_the_default_tier_runs_every_variant_and_the_slices_every_state():
    """`make test` runs every variant in tp-libvirt's state, the representatives in all three,
    and a sixth of the rest; the six slices together are the whole matrix."""

    def ids(runs: list[tuple[Scenario, str, list[Variant]]]) -> set[str]:
        return {run_id(s, st, vs) for s, st, vs in runs}

    whole = scenarios(every=True)
    assert len(ids(whole)) == len(whole)  # one id per run
    home = ids([(s, st, vs) for s, st, vs in whole if st == s.state])
    slices = [ids(scenarios(every=False, chosen=k)) for k in range(SLICES)]
    assert set().union(*slices) == ids(whole)
    for runs in slices:
        assert home <= runs
    for scenario, state, variants in whole:
        lines = lines_in(scenario, state)
        if RESTART in scenario.lines:
            assert state != "transient", variants[0].name  # destroyed, a transient one is gone
        if state == "paused" and RESTART in lines:  # suspended again after the restart
            assert lines.index("virsh suspend {d}") > len(lines) - lines[::-1].index(RESTART) - 1
