"""The QMP commands, arguments and events --teach names for a live step are the ones libvirtd
really exchanges with QEMU for it: each live merge (inactive commit, pull with and without a
base, active commit with pivot and with --keep-overlay, block copy) runs with --teach while
libvirtd's monitor log is captured (``virt-admin daemon-log-filters "1:qemu.qemu_monitor"`` and
an output of our own); every command named must appear among the commands libvirtd sent to this
domain's QEMU during the run, every argument named among their arguments (and one said to be
absent must be absent), every event named among the events QEMU sent.  The daemon's previous
filters and outputs come back afterwards, whatever happens."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import URI, Lab, run_vshx, virsh

pytestmark = pytest.mark.libvirt

LIBVIRT_EVENTS = {"BLOCK_JOB_2"}  # libvirt's own event, not QEMU's


def admin(*args: str) -> str:
    return subprocess.run(["virt-admin", *args], capture_output=True, text=True, check=True).stdout


def current(kind: str) -> str:
    """The daemon's log filters or outputs now (virt-admin prints `Logging X: VALUE`)."""
    said = admin(f"daemon-log-{kind}")
    return said.split(":", 1)[1].strip() if ":" in said else ""


@contextmanager
def monitor_log(path: Path) -> Iterator[None]:
    """libvirtd logs its QEMU monitor traffic into ``path`` meanwhile; then as before."""
    filters, outputs = current("filters"), current("outputs")
    try:
        admin("daemon-log-filters", "1:qemu.qemu_monitor 1:libvirt.domain")
        admin("daemon-log-outputs", f"{outputs} 1:file:{path}".strip())
        yield
    finally:
        admin("daemon-log-outputs", outputs)
        admin("daemon-log-filters", filters)


def monitor_of(domain: str, log: str, marker: str) -> str:
    """The monitor (libvirt's ``mon=0x..``) that carried our marker command to ``domain``."""
    found = re.search(r"QEMU_MONITOR_SEND_MSG: mon=(0x[0-9a-f]+) msg=.*" + marker, log)
    assert found, f"the marker sent to {domain} is not in libvirtd's log"
    return found.group(1)


def exchanged(log: str, mon: str) -> tuple[list[dict], set[str]]:
    """The commands libvirtd sent on ``mon`` (parsed) and the events QEMU sent back."""
    sent = [
        json.loads(m)
        for m in re.findall(rf"QEMU_MONITOR_SEND_MSG: mon={mon} msg=(\{{.*\}})\s*$", log, re.M)
    ]
    events = set(
        re.findall(rf"QEMU_MONITOR_RECV_EVENT: mon={mon} event=.*?\"event\": \"(\w+)\"", log)
    )
    return sent, events


def claims(teaching: str) -> tuple[set[str], set[str], set[str], set[str]]:
    """From --teach's `QMP:` lines: commands, arguments said present, arguments said absent
    ("with no base-node"), events; the ``(libvirt: vir...(...))`` asides are libvirt's."""
    commands: set[str] = set()
    present: set[str] = set()
    absent: set[str] = set()
    events: set[str] = set()
    hyphenated = r"[a-z]+(?:-[a-z]+)+"
    for line in teaching.splitlines():
        if "QMP:" not in line:
            continue
        text = re.sub(r"\((?:libvirt: )?vir\w+\([^()]*\)\)", "", line.split("QMP:", 1)[1])
        absent |= set(re.findall(rf"\bno ({hyphenated})", text))
        text = re.sub(rf"\bno {hyphenated}", "", text)
        for inside in re.findall(r"\(([^()]*)\)", text):
            present |= set(re.findall(rf"\b{hyphenated}\b", inside))
            for key, value in re.findall(r"\b([a-z]+)=(\w+)", inside):
                present |= {key, f"{key}={value}"}
        commands |= set(re.findall(rf"\b{hyphenated}\b", re.sub(r"\([^()]*\)", "", text)))
        events |= set(re.findall(r"\b[A-Z]+(?:_[A-Z0-9]+)+\b", text)) - LIBVIRT_EVENTS
    return commands, present, absent, events


def test_claims_are_read_from_the_teaching_lines():
    from vshx.plans import underneath

    commands, present, absent, events = claims("\n".join(underneath.block_copy()))
    assert (commands, present, events) == (
        {"blockdev-mirror", "job-complete"}, {"sync", "sync=full"},
        {"BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"},
    )  # fmt: skip
    commands, present, absent, events = claims("\n".join(underneath.block_pull(False)))
    assert (commands, present, absent) == ({"block-stream"}, set(), {"base-node"})
    import libvirt

    assert api_claims("\n".join(underneath.block_commit(True, True, False))) == [
        ("virDomainBlockCommit", libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE),
        ("virDomainBlockJobAbort", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT),
    ]


def api_claims(teaching: str) -> list[tuple[str, int | None]]:
    """The libvirt calls --teach names, each with the flags it says (None: not said), e.g.
    ``virDomainBlockJobAbort(..., PIVOT)`` -> VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT."""
    import libvirt

    out: list[tuple[str, int | None]] = []
    for api, args in re.findall(r"\b(vir[A-Z]\w+)\(([^()]*)\)", teaching):
        last = args.split(",")[-1].strip()
        if last == "0":
            out.append((api, 0))
        elif re.fullmatch(r"[A-Z_|]+", last):
            flags = 0
            for name in last.split("|"):
                if not name.startswith("VIR_"):
                    name = "VIR_DOMAIN_BLOCK_JOB_ABORT_" + name  # the short form of the asides
                flags |= getattr(libvirt, name)
            out.append((api, flags))
        else:
            out.append((api, None))
    return out


def api_calls(log: str, domain: str) -> list[tuple[str, int]]:
    """The libvirt calls libvirtd served for ``domain``, with their flags."""
    pattern = (
        rf" : (vir\w+):\d+ : dom=\S+ \(VM: name={re.escape(domain)}, [^)]*\).*?flags=(0x[0-9a-f]+)"
    )
    return [(api, int(flags, 16)) for api, flags in re.findall(pattern, log)]


def sent_arguments(sent: list[dict], commands: set[str]) -> set[str]:
    """Every argument name (and name=value) of the named commands' messages."""
    out: set[str] = set()
    for message in sent:
        if message.get("execute") in commands:
            for key, value in message.get("arguments", {}).items():
                out |= {key, f"{key}={value}"}
    return out


# (what, the vshx line; {dir} is the lab directory); what None: a virsh line preparing the next
STEPS = [
    ("inactive commit", "blockcommit {d} vda --top {dir}/sn2.qcow2 --base {dir}/sn1.qcow2 --wait"),
    ("pull with a base", "blockpull {d} vda --base {dir}/sn1.qcow2 --wait"),
    (
        "active commit, --keep-overlay",
        "blockcommit {d} vda --active --base {dir}/sn1.qcow2 --keep-overlay --wait",
    ),
    (
        "active commit, --pivot",
        "blockcommit {d} vda --active --base {dir}/sn1.qcow2 --pivot --wait",
    ),
    (None, "snapshot-create-as {d} s5 --disk-only --diskspec vda,file={dir}/s5.qcow2"),
    ("full pull", "blockpull {d} vda --wait"),
    (None, "snapshot-create-as {d} s6 --disk-only --diskspec vda,file={dir}/s6.qcow2"),
    ("block copy", "flatten {d} vda --to {dir}/copy.qcow2 --route copy"),
]


@pytest.mark.root  # virt-admin changes the system daemon's logging
def test_qmp_named_by_teach_is_what_libvirtd_sends(lab: Lab, tmp_path: Path):
    log_path = tmp_path / "monitor.log"
    marker = f"vshx-marker-{uuid.uuid4().hex}"
    problems: list[str] = []
    with monitor_log(log_path):
        probe = {"execute": "qom-get", "arguments": {"path": f"/{marker}", "property": "type"}}
        subprocess.run(
            ["virsh", "-c", URI, "qemu-monitor-command", lab.name, json.dumps(probe)],
            capture_output=True,
        )
        offsets = []
        for what, line in STEPS:
            if what is None:  # a new overlay for the next step (virsh itself)
                virsh(*line.format(d=lab.name, dir=lab.dir).split())
                continue
            offsets.append(log_path.stat().st_size if log_path.exists() else 0)
            words = line.format(d=lab.name, dir=lab.dir).split()
            proc = run_vshx(*words, "--teach")
            assert proc.returncode == 0, (what, proc.stdout, proc.stderr)
            offsets.append(proc.stdout)  # type: ignore[arg-type]
        end = log_path.stat().st_size
    log = log_path.read_text(errors="replace")
    mon = monitor_of(lab.name, log, marker)
    for k, what in enumerate(what for what, _line in STEPS if what):
        start, teaching = offsets[2 * k], offsets[2 * k + 1]
        stop = offsets[2 * k + 2] if 2 * k + 2 < len(offsets) else end
        sent, events = exchanged(log[start:stop], mon)  # type: ignore[misc]
        commands, present, absent, named_events = claims(teaching)  # type: ignore[arg-type]
        assert commands, f"{what}: --teach names no QMP command:\n{teaching}"
        executed = {m["execute"] for m in sent}
        arguments = sent_arguments(sent, commands)
        for name in sorted(commands - executed):
            problems.append(f"{what}: teaches QMP {name}, libvirtd sent {sorted(executed)}")
        for name in sorted(present - arguments - commands):
            problems.append(f"{what}: teaches argument {name}, libvirtd sent {sorted(arguments)}")
        for name in sorted(absent & arguments):
            problems.append(f"{what}: teaches no {name}, libvirtd sent it")
        for name in sorted(named_events - events):
            problems.append(f"{what}: teaches event {name}, QEMU sent {sorted(events)}")
        called = api_calls(log[start:stop], lab.name)  # type: ignore[misc]
        assert api_claims(teaching), f"{what}: --teach names no libvirt call"  # type: ignore[arg-type]
        assert called, f"{what}: libvirtd's log shows no call for {lab.name}"
        for api, flags in api_claims(teaching):  # type: ignore[arg-type]
            seen = [f for a, f in called if a == api]
            if not seen:
                problems.append(
                    f"{what}: teaches {api}, libvirtd served {sorted({a for a, _ in called})}"
                )
            elif flags is not None and not any(
                f == flags or (flags and f & flags == flags) for f in seen
            ):
                problems.append(f"{what}: teaches {api} flags {flags:#x}, libvirtd saw {seen}")
    assert not problems, "\n".join(problems)
