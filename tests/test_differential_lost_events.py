"""When libvirtd delivers no block-job events (seen on the shared host during the differential
runs: virsh --wait then waits forever), vshx ends a wait only on proof: the chain without the
merged layers, or libvirt's synchronous abort having returned (--keep-overlay); otherwise it
stops with an error and changes nothing more.  A job libvirt refuses to start is a clean failure
(the runner then drops its journal).  Pure logic: a fake domain that never sends an event."""

from __future__ import annotations

import io

import libvirt
import pytest

from vshx.errors import VshxError
from vshx.plans import blockjob

CHAIN = """<domain><devices><disk type='file' device='disk'><driver type='qcow2'/>
<source file='/lab/{top}'/>{mirror}<backingStore type='file'><format type='qcow2'/>
<source file='/lab/base.qcow2'/><backingStore/></backingStore>
<target dev='vda' bus='virtio'/></disk></devices></domain>"""


class SilentDomain:
    """A running job that reaches READY, then ends when aborted; no event ever arrives."""

    def __init__(self, ready: bool = True) -> None:
        self.job = True
        self.ready = ready
        self.aborted: list[int] = []

    def name(self) -> str:
        return "silent"

    def blockJobInfo(self, disk: str, flags: int) -> dict[str, int]:
        return {"type": 4, "cur": 10, "end": 10, "bandwidth": 0} if self.job else {}

    def XMLDesc(self, flags: int) -> str:
        mirror = "<mirror type='file' job='active-commit' ready='yes'/>" if self.job else ""
        return CHAIN.format(top="sn1.qcow2", mirror=mirror if self.ready else "")

    def blockJobAbort(self, disk: str, flags: int) -> None:
        self.aborted.append(flags)
        self.job = False  # libvirt's synchronous abort returns once the job has ended


class SilentConnection:
    def domainEventRegisterAny(self, *args: object) -> int:
        return 1

    def domainEventDeregisterAny(self, callback: int) -> None:
        pass


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockjob, "SAFETY_POLL", 0.01)


def run(dom: SilentDomain, start=lambda: None, **options: object) -> None:
    blockjob.run_block_job(
        SilentConnection(),  # type: ignore[arg-type]
        dom,  # type: ignore[arg-type]
        "vda",
        start,
        label="block commit",
        stream=io.StringIO(),
        **options,  # type: ignore[arg-type]
    )


def test_keep_overlay_ends_on_the_synchronous_abort_without_an_event():
    dom = SilentDomain()
    run(dom, active=True, pivot=False)
    assert dom.aborted == [0]  # block-job-cancel: the overlay stays the disk


def test_a_vanished_job_without_proof_is_an_error_not_a_success():
    dom = SilentDomain()
    dom.job = False  # gone at once, no event, and the chain still holds the layer to merge
    with pytest.raises(VshxError) as info:
        run(dom, leaves=frozenset({"/lab/sn1.qcow2"}))
    assert "neither an event nor the chain" in info.value.message


def test_a_vanished_job_the_chain_proves_done_is_a_success():
    dom = SilentDomain()
    dom.job = False
    run(dom, leaves=frozenset({"/lab/sn2.qcow2"}))  # sn2 is no longer in the chain


def test_a_job_libvirt_refuses_to_start_is_a_clean_failure():
    def start() -> None:
        raise libvirt.libvirtError("flag VIR_DOMAIN_BLOCK_REBASE_RELATIVE is valid only with base")

    with pytest.raises(VshxError) as info:
        run(SilentDomain(), start)
    assert info.value.clean and info.value.hint
    assert "RELATIVE" in info.value.message
