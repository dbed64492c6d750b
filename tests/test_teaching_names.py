"""Every libvirt API name, flag and QMP command/event/argument that --teach and explain can
print exists: libvirt names in the installed libvirt-python, QMP names in the connected
QEMU's query-qmp-schema (asked through a running lab, as libvirtd asks it)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import libvirt
import pytest
from conftest import URI, Lab

from vshx.plans import underneath

pytestmark = pytest.mark.libvirt

LIBVIRT_EVENTS = {"BLOCK_JOB_2": "VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2"}  # libvirt's, not QMP's


def every_teaching_line() -> list[str]:
    """What underneath.py can attach to a step, for every combination of its arguments."""
    lines: list[str] = []
    for active, pivot, relative in itertools.product((False, True), repeat=3):
        lines += underneath.block_commit(active, pivot, relative)
    for base in (False, True):
        lines += underneath.block_pull(base)
    lines += underneath.block_copy() + underneath.convert() + underneath.qemu_img_commit()
    for unsafe, flatten, after in itertools.product((False, True), repeat=3):
        lines += underneath.rebase(unsafe, flatten, after)
    for keep in (False, True):
        lines += underneath.native(9_000_000, keep_overlay=keep, snapshots=["sn1"])
    for kind in ("disable", "add", "merge", "enable"):
        lines += underneath.bitmap(kind)
    return lines


def python_method(api: str) -> tuple[type, str] | None:
    """virDomainBlockCommit -> (virDomain, "blockCommit"), as libvirt-python names it."""
    for prefix, cls in (("virDomain", libvirt.virDomain), ("virConnect", libvirt.virConnect)):
        if api.startswith(prefix) and len(api) > len(prefix):
            rest = api[len(prefix) :]
            return cls, rest[0].lower() + rest[1:]
    return None


def test_libvirt_names_exist_in_libvirt_python():
    text = "\n".join(every_teaching_line())
    apis = set(re.findall(r"\bvir[A-Z]\w+", text))
    flags = set(re.findall(r"\bVIR_[A-Z0-9_]+", text))
    assert {"virDomainBlockCommit", "virDomainBlockPull", "virDomainBlockRebase"} <= apis
    for api in apis:
        found = python_method(api)
        assert found is not None and hasattr(found[0], found[1]), f"{api} is not libvirt's"
    for flag in flags:
        assert hasattr(libvirt, flag), f"{flag} is not in libvirt-python"
    for short in re.findall(r"virDomainBlockJobAbort\(\.\.\., (\w+)\)", text):
        if short != "0":
            assert hasattr(libvirt, f"VIR_DOMAIN_BLOCK_JOB_ABORT_{short}"), short
    for name in re.findall(r"\b(?:ACTIVE|RELATIVE)\b", text):
        assert hasattr(libvirt, f"VIR_DOMAIN_BLOCK_COMMIT_{name}")
    for event, constant in LIBVIRT_EVENTS.items():
        if event in text:
            assert hasattr(libvirt, constant)


def qmp_schema(domain: str) -> list[dict]:
    proc = subprocess.run(
        ["virsh", "-c", URI, "qemu-monitor-command", domain, '{"execute":"query-qmp-schema"}'],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)["return"]


def test_qmp_names_exist_in_the_connected_qemu(lab: Lab):
    schema = qmp_schema(lab.name)
    commands = {e["name"] for e in schema if e["meta-type"] == "command"}
    events = {e["name"] for e in schema if e["meta-type"] == "event"}
    members = {m["name"] for e in schema for m in e.get("members", []) if "name" in m}
    qmp_lines = [line.split("QMP", 1)[1] for line in every_teaching_line() if "QMP" in line]
    assert qmp_lines
    for line in qmp_lines:
        line = re.sub(r"\([^()]*\(\.\.\.[^()]*\)\)", "", line)  # (libvirt: virX(..., Y))
        for word in re.findall(r"\b[a-z]+(?:-[a-z]+)+\b", line):
            assert word in commands | members, f"QMP {word!r} is not in QEMU's schema"
        for word in re.findall(r"\b[A-Z]+(?:_[A-Z0-9]+)+\b", line):
            if word in LIBVIRT_EVENTS:
                continue
            assert word in events, f"QMP event {word!r} is not in QEMU's schema"
        values = {v for e in schema for v in e.get("values", [])}
        for word, value in re.findall(r"\b([a-z]+)=(\w+)", line):
            assert word in members, f"QMP argument {word!r} is not in QEMU's schema"
            assert value in values, f"QMP value {value!r} is not in QEMU's schema"
    for name in ("block-commit", "block-stream", "job-complete", "block-job-cancel"):
        assert name in commands


def test_the_native_note_is_given_only_where_libvirt_would_do_it(lab: Lab):
    """The prediction of libvirt's own snapshot-delete matches what libvirt then does."""
    from vshx.storage import virt
    from vshx.storage.native import native_snapshot_deletes

    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(lab.name)
        chain = virt.domain_chain(dom, "vda")
        middle = str(lab.layer("sn2"))
        predicted = native_snapshot_deletes(dom, chain, [middle])
        owners = [
            s.getName()
            for s in dom.listAllSnapshots(0)
            if middle in s.getXMLDesc(0).split("<domain ")[0]
        ]
    finally:
        conn.close()
    assert owners, "the lab has a libvirt snapshot whose overlay is sn2.qcow2"
    proc = subprocess.run(
        ["virsh", "-c", URI, "snapshot-delete", lab.name, owners[0]],
        capture_output=True,
        text=True,
    )
    assert (proc.returncode == 0) == (predicted is not None), (predicted, proc.stderr)
    if predicted is not None:
        assert predicted == owners[:1]
