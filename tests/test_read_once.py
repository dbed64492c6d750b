"""Reads a plan makes once and shares, and reads started ahead (pure logic: no libvirt)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest

from vshx.plans.target import Target
from vshx.storage import qcow2
from vshx.storage.background import Background, settle
from vshx.storage.chain import Chain, Layer
from vshx.storage.moments import read_snapshots, read_snapshots_ahead
from vshx.storage.snapshots import memory_moments

SNAPSHOT = """<domainsnapshot><name>{name}</name><state>{state}</state>
<memory snapshot='{memory}'/><disks><disk name='vda' snapshot='external'>
<source file='/images/{name}.qcow2'/></disk></disks>
<domain><devices><disk><target dev='vda'/><source file='/images/{name}.qcow2'/></disk>
</devices></domain></domainsnapshot>"""


class FakeSnapshot:
    def __init__(self, name: str, xml: str, calls: list[str]) -> None:
        self.name, self.xml, self.calls = name, xml, calls

    def getName(self) -> str:
        return self.name

    def getXMLDesc(self, _flags: int) -> str:
        self.calls.append(f"getXMLDesc {self.name}")
        return self.xml


class FakeDomain:
    """Counts the snapshot reads a caller makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.snaps = [
            FakeSnapshot("s1", SNAPSHOT.format(name="s1", state="disk-snapshot", memory="no"), []),
            FakeSnapshot("s2", SNAPSHOT.format(name="s2", state="running", memory="external"), []),
        ]
        for snap in self.snaps:
            snap.calls = self.calls

    def hasCurrentSnapshot(self, _flags: int) -> int:
        return 0

    def listAllSnapshots(self, _flags: int) -> list[FakeSnapshot]:
        self.calls.append("listAllSnapshots")
        return self.snaps


def target_on(dom: FakeDomain) -> Target:
    return Target(Chain([Layer("/images/s2.qcow2", "qcow2", 1)], "d", "vda", live=True), dom)


def test_a_plan_reads_the_snapshots_once_and_every_check_answers_from_that_read() -> None:
    dom = FakeDomain()
    target = target_on(dom)
    read = target.snapshots()
    moments = memory_moments(dom, target.snapshots())  # type: ignore[arg-type]
    assert dom.calls == ["listAllSnapshots", "getXMLDesc s1", "getXMLDesc s2"]
    infos = [(s.name, [m.overlay for m in s.moments.values()], s.has_memory) for s in read]
    assert infos == [
        ("s1", ["/images/s1.qcow2"], False),
        ("s2", ["/images/s2.qcow2"], True),
    ]
    assert moments == [("s2", "vda", "/images/s2.qcow2")]


def test_without_a_shared_read_each_reads_for_itself() -> None:
    dom = FakeDomain()
    read_snapshots(dom)  # type: ignore[arg-type]
    memory_moments(dom)  # type: ignore[arg-type]
    assert dom.calls.count("listAllSnapshots") == 2


def test_a_read_started_ahead_is_the_plans_one_read() -> None:
    dom = FakeDomain()
    target = target_on(dom)
    target.share_snapshots(read_snapshots_ahead(dom))  # type: ignore[arg-type]
    first = target.snapshots()
    assert target.snapshots() is first
    assert [snap.name for snap in first] == ["s1", "s2"]
    assert dom.calls.count("listAllSnapshots") == 1


def test_a_bare_image_has_no_snapshots_to_read() -> None:
    assert Target(Chain([Layer("/images/a.qcow2", "qcow2", 1)])).snapshots() == []


def test_a_read_ahead_answers_and_its_error_is_raised_in_the_caller() -> None:
    go = threading.Event()
    ahead = Background(lambda: go.wait(5) and 42)
    go.set()
    assert ahead.result() == 42

    def fails() -> int:
        raise LookupError("libvirt said no")

    with pytest.raises(LookupError, match="libvirt said no"):
        Background(fails).result()


def test_settle_waits_for_every_read_ahead() -> None:
    go, done = threading.Event(), []

    def slow() -> None:
        go.wait(5)
        done.append(True)

    Background(slow)
    threading.Timer(0.05, go.set).start()
    settle()
    assert done == [True]


def test_a_backing_name_past_the_first_4_kib_is_read_from_the_cluster(tmp_path: Path) -> None:
    image = tmp_path / "far.qcow2"
    name = b"/somewhere/base.qcow2"
    header = bytearray(65536)
    header[0:4] = qcow2.MAGIC
    header[4:20] = struct.pack(">IQI", 3, 5000, len(name))
    header[100:104] = struct.pack(">I", 104)  # header length: extensions from here, none
    header[5000 : 5000 + len(name)] = name
    image.write_bytes(bytes(header))
    assert qcow2.header_names(str(image)) == ("/somewhere/base.qcow2", None)
    image.write_bytes(bytes(header[:600]))  # cut short: the name is not there
    assert qcow2.header_names(str(image)) == (None, None)
