"""What vshx says when libvirt refuses a step: whether earlier steps changed anything, and
which files a snapshot names (pure logic; the libvirt tier runs the real cases in
test_checkpoint_metadata.py and test_files_in_use.py)."""

from __future__ import annotations

import libvirt

from vshx.plans.checkpoint_guard import snapshot_create_domain
from vshx.plans.plan import Plan, Step, virsh
from vshx.plans.runner import libvirt_failure
from vshx.storage.snapshot_refs import snapshot_files


def three_steps() -> Plan:
    plan = Plan("delete snapshot s2 of d1 on every disk")
    plan.add(Step("commit s2.qcow2 into s1.qcow2", ["qemu-img", "commit", "s2.qcow2"]))
    plan.add(Step("update the definition", virsh("qemu:///system", "define", "/dev/stdin")))
    plan.add(Step("re-define snapshot s3", virsh("qemu:///system", "snapshot-create", "d1")))
    return plan


def refused() -> libvirt.libvirtError:
    return libvirt.libvirtError("cannot perform block operations while checkpoint exists")


def test_a_refusal_after_changing_steps_says_they_ran_and_how_to_finish() -> None:
    error = libvirt_failure(refused(), three_steps(), 3, changed=True, journaled=True)
    assert error is not None
    assert error.message.startswith("step 3/3 (re-define snapshot s3) failed: ")
    assert "changed nothing" not in (error.hint or "")
    assert "steps 1-2 ran and changed" in (error.hint or "")


def test_a_refusal_before_any_change_says_nothing_changed() -> None:
    error = libvirt_failure(refused(), three_steps(), 1, changed=False, journaled=False)
    assert error is not None and "vshx stopped there" in (error.hint or "")
    assert "ran and changed" not in (error.hint or "")


def test_only_libvirt_errors_are_worded_here() -> None:
    assert libvirt_failure(ValueError("x"), three_steps(), 2, True, True) is None


def test_the_guard_finds_the_domain_of_a_snapshot_create_step() -> None:
    steps = three_steps().steps
    assert [snapshot_create_domain(s) for s in steps] == [None, None, "d1"]
    named = Step("x", virsh("qemu:///system", "snapshot-create", "--x", "/dev/stdin"))
    assert snapshot_create_domain(named) == "--x"


def test_a_snapshot_names_its_memory_file_moments_and_overlays() -> None:
    xml = """<domainsnapshot><name>m1</name><state>running</state>
      <memory snapshot='external' file='/i/m1.save'/>
      <disks><disk name='vda' snapshot='external'><source file='/i/m1.qcow2'/></disk></disks>
      <domain><devices><disk type='file' device='disk'><source file='/i/s1.qcow2'/>
        <backingStore type='file'><source file='/i/base.qcow2'/></backingStore>
        <target dev='vda'/></disk></devices></domain></domainsnapshot>"""
    assert snapshot_files(xml) == [
        ("memory state", "/i/m1.save"),
        ("vda moment", "/i/s1.qcow2"),
        ("vda moment", "/i/base.qcow2"),
        ("vda overlay", "/i/m1.qcow2"),
    ]
